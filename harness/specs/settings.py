"""Settings declared once: a spec table's field with its type, range, default, unit and meaning.

A table of a spec file is a frozen dataclass whose fields are declared with :func:`setting`
(``x: float = setting(1.0, ge=0, le=100, unit="points", doc="...")``; no default: the file must
state it). Its type is the field's annotation. From the declarations come the loader's checks
(:func:`read_tables`: every problem of a file at once, one SpecError), the documentation table
(``harness.specs.policy_doc``) and the help texts that name a default.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, overload

from harness.specs.reader import Problem, Reader, Said, SpecError

T = TypeVar("T")
Bound = int | float | None

MISSING_VALUE = "<missing>"  # how a missing field is shown (found '<missing>'), as everywhere in the loaders


@dataclass(frozen=True)
class Setting:
    """The declaration of one field: its range (``ge``/``gt`` below, ``le``/``lt`` above; the
    items' range for a list), its choices (text), unit and meaning."""

    ge: Bound = None
    gt: Bound = None
    le: Bound = None
    lt: Bound = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    doc: str = ""

    def admits(self, value: float) -> bool:
        """``value`` is within the range (NaN never is)."""
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
                and value == value)

    def range_text(self, kind: str) -> str:
        """``[0.0, 100.0]``, ``(0.5, 1.0)``, ``[1, 4096]`` (numbers as the field's kind writes them)."""
        def show(bound: Bound, infinite: float) -> str:
            value = infinite if bound is None else bound
            return repr(float(value)) if kind == "number" or math.isinf(value) else str(int(value))
        low = ("(" if self.gt is not None else "[") + show(self.gt if self.gt is not None else self.ge, -math.inf)
        high = show(self.lt if self.lt is not None else self.le, math.inf) + (")" if self.lt is not None else "]")
        return f"{low}, {high}"


@overload
def setting(default: T, *, ge: Bound = None, gt: Bound = None, le: Bound = None, lt: Bound = None,
            choices: tuple[str, ...] = (), unit: str = "", doc: str) -> T: ...
@overload
def setting(*, ge: Bound = None, gt: Bound = None, le: Bound = None, lt: Bound = None,
            choices: tuple[str, ...] = (), unit: str = "", doc: str) -> Any: ...
def setting(default: object = MISSING, *, ge: Bound = None, gt: Bound = None, le: Bound = None, lt: Bound = None,
            choices: tuple[str, ...] = (), unit: str = "", doc: str) -> Any:
    """A dataclass field declared once (no ``default``: required in the file)."""
    declared = Setting(ge=ge, gt=gt, le=le, lt=lt, choices=choices, unit=unit, doc=doc)
    return field(default=default, metadata={"setting": declared})


class Table:
    """A table of a spec file; ``conflicts`` are its checks across fields, as (key, expected, found)."""

    def conflicts(self) -> tuple[tuple[str, str, object], ...]:
        return ()


@dataclass(frozen=True)
class Declared:
    """One declared field of a table: its name, kind (``number``, ``integer``, ``text``,
    ``integers``), default (``MISSING``: required) and declaration."""

    name: str
    kind: str
    default: object
    setting: Setting

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def expected(self) -> str:
        """What the loader expects, as its messages say it."""
        s = self.setting
        if self.kind == "text":
            return "one of " + ", ".join(s.choices) if s.choices else "a non-empty string"
        if self.kind == "integers":
            return f"a non-empty list of distinct integers in {s.range_text('integer')}"
        return f"{'a number' if self.kind == 'number' else 'an integer'} in {s.range_text(self.kind)}"

    def check(self, value: object) -> tuple[bool, object]:
        """(True, the value as the field holds it) or (False, None)."""
        if self.kind == "text":
            ok = isinstance(value, str) and bool(value.strip()) and (not self.setting.choices
                                                                     or value in self.setting.choices)
            return ok, value
        if self.kind == "integers":
            if not isinstance(value, list) or not value or len(set(map(repr, value))) != len(value):
                return False, None
            ok = all(_integer(v) and self.setting.admits(v) for v in value)
            return ok, tuple(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (self.kind == "integer"
                                                                            and not isinstance(value, int)):
            return False, None
        # Compared before float(): TOML integers are unbounded and float(10**400) overflows.
        if not self.setting.admits(value):
            return False, None
        return True, float(value) if self.kind == "number" else value


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[object, str] = {float: "number", int: "integer", str: "text"}


def declared(cls: type) -> tuple[Declared, ...]:
    """The declared fields of the table class ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        s = f.metadata.get("setting")
        if not isinstance(s, Setting):
            continue
        hint = hints[f.name]
        kind = "integers" if typing.get_origin(hint) is tuple else _KINDS[hint]
        out.append(Declared(f.name, kind, f.default, s))
    return tuple(out)


def tables(cls: type) -> dict[str, type]:
    """The tables of a file class (``Policy``): field name -> table class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def read_table(cls: type[T], name: str, raw: object, problems: list[Problem]) -> T | None:
    """The table ``[name]`` read into ``cls``; its problems (not a table, unknown, missing, wrong
    type, out of range, conflicting fields) added to ``problems``; None when it has any."""
    if not isinstance(raw, dict):
        problems.append(Problem(name, "", "a table", raw))
        return None
    before = len(problems)
    spec = declared(cls)
    names = [d.name for d in spec]
    for key in raw:
        if key not in names:
            problems.append(Problem(name, str(key), f"one of the known fields {', '.join(names)}",
                                    Said("an unknown field")))
    values: dict[str, object] = {}
    for d in spec:
        if d.name not in raw:
            if d.required:
                problems.append(Problem(name, d.name, d.expected(), MISSING_VALUE))
            continue
        ok, value = d.check(raw[d.name])
        if ok:
            values[d.name] = value
        else:
            problems.append(Problem(name, d.name, d.expected(), raw[d.name]))
    if len(problems) > before:
        return None
    table = cls(**values)
    if isinstance(table, Table):
        conflicts = [Problem(name, key, expected, found) for key, expected, found in table.conflicts()]
        if conflicts:
            problems.extend(conflicts)
            return None
    return table


def read_tables(cls: type[T], source: str, data: Mapping[str, object]) -> T:
    """The whole file ``source`` (parsed ``data``) read into ``cls``, one field per table; a
    missing table is its defaults. Every problem of the file is one SpecError listing each."""
    problems: list[Problem] = []
    known = tables(cls)
    for name in data:
        if name not in known:
            problems.append(Problem(str(name), "", f"one of the known tables {', '.join(known)}",
                                    Said("an unknown table")))
    read = {name: read_table(table, name, data.get(name, {}), problems) for name, table in known.items()}
    if problems:
        raise SpecError.listing(source, problems)
    return cls(**read)


def read_declared(reader: Reader, key: str, cls: type, name: str) -> object:
    """The field ``key`` of ``reader``'s table checked as ``cls``'s declared field ``name`` (a
    table elsewhere that shares its declaration: a model's own ``accuracy_tolerance``)."""
    (d,) = [d for d in declared(cls) if d.name == name]
    value = reader.get(key, object, d.expected())
    ok, checked = d.check(value)
    if not ok:
        raise reader.fail(key, d.expected(), value)
    return checked


def find(cls: type, path: str) -> tuple[type, Declared]:
    """``accuracy.tolerance_points`` in the file class ``cls``: its table class and declaration."""
    table, _, key = path.partition(".")
    table_cls = tables(cls).get(table)
    matches = [d for d in declared(table_cls) if d.name == key] if table_cls and is_dataclass(table_cls) else []
    if not matches or table_cls is None:
        raise KeyError(f"no declared setting {path!r}")
    return table_cls, matches[0]

