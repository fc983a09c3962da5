"""Reading and validating ``fixtures/*.toml``: SpecError, the TOML reader and the field checks.

Every check here fails with a SpecError whose message names the file, the entry, the field,
what was expected and what was found. The spec classes and the loaders build on these checks;
nothing here knows what a model or a chip is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class SpecError(UsageError, ValueError):
    """A fixtures file is malformed: the message names file, entry, field and the fix.

    ``problems``: every problem found, when the loader collects them all (fixtures/policy.toml);
    empty when the message is the one problem.
    """

    problems: tuple[Problem, ...] = ()

    @classmethod
    def listing(cls, source: str, problems: Sequence[Problem]) -> SpecError:
        """One error for all of ``problems`` of the file ``source``, one line each."""
        if len(problems) == 1:
            error = cls(f"{source}: {problems[0].line()}")
        else:
            lines = "".join(f"\n  {p.line()}" for p in problems)
            error = cls(f"{source}: {len(problems)} problems:{lines}")
        error.problems = tuple(problems)
        return error


class Said(str):
    """A found value that is a description (``an unknown field``), shown without quotes."""

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a spec file: where (``table``, ``key``: ``path`` is ``table.key``), what
    was expected and what was found. ``key`` is empty for a problem of the table itself."""

    table: str
    key: str
    expected: str
    found: object

    @property
    def path(self) -> str:
        return ".".join(part for part in (self.table, self.key) if part)

    def line(self) -> str:
        """``[perf] field 'min_runs': expected an integer in [1, 1000000], found 0``."""
        where = (f"[{self.table}]" if self.table else "") + (f" field {self.key!r}" if self.key else "")
        return f"{where}: expected {self.expected}, found {self.found!r}" if where else \
            f"expected {self.expected}, found {self.found!r}"


def load_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML of ``path``; every way of failing is a SpecError naming the file."""
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except FileNotFoundError:
        raise SpecError(f"registry file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid TOML for this suite: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise SpecError(f"cannot read registry file {path}: {exc.strerror or exc}") from None


class Reader:
    """Typed access to one TOML table that remembers which fields were read.

    ``finish()`` then refuses any field nobody asked for, so a misspelt key is an error, not a
    silently ignored setting.
    """

    def __init__(self, source: str, entry: str, table: Mapping[str, Any]):
        if not isinstance(table, dict):
            # e.g. `accuracy = 5` where [accuracy] belongs, or a variant that is not a table.
            raise SpecError(f"{source}: [{entry}]: expected a table, found {table!r}")
        self.source, self.entry, self.table = source, entry, table
        self.used: set[str] = set()

    def fail(self, key: str, expected: str, found: Any) -> SpecError:
        return SpecError.listing(self.source, [Problem(self.entry, key, expected, found)])

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.fail(key, expected, "<missing>")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, expected, value)
        if not isinstance(value, kind):
            raise self.fail(key, expected, value)
        return value

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> Any:
        expected = "one of " + ", ".join(choices) if choices else "a non-empty string"
        value = self.get(key, str, expected, default)
        if value is default and default is not ...:
            return value
        if not value.strip() or (choices and value not in choices):
            raise self.fail(key, expected, value)
        return value

    def number(self, key: str, lo: float, hi: float, default: Any = ...) -> Any:
        expected = f"a number in [{lo}, {hi}]"
        value = self.get(key, (int, float), expected, default)
        if value is default and default is not ...:
            return value
        # Compared before float(): TOML integers are unbounded and float(10**400) overflows.
        if not lo <= value <= hi:
            raise self.fail(key, expected, value)
        return float(value)

    def integer(self, key: str, lo: int, hi: int, default: Any = ...) -> Any:
        expected = f"an integer in [{lo}, {hi}]"
        value = self.get(key, int, expected, default)
        if value is default and default is not ...:
            return value
        if not lo <= value <= hi:
            raise self.fail(key, expected, value)
        return value

    def table_(self, key: str, default: Any = ...) -> Mapping[str, Any]:
        table: Mapping[str, Any] = self.get(key, dict, "a table", default)
        return table

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise SpecError(
                f"{self.source}: [{self.entry}]: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"known fields: {', '.join(sorted(self.used))}"
            )


def triple(reader: Reader, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
    """Three finite numbers of pixel scale (a mean or a std), or ``default`` when absent."""
    value = reader.get(key, list, "a list of 3 finite numbers", default)
    if value is default:
        return (default[0], default[1], default[2])
    # Finite and of pixel scale: NaN passes every range check, and an unbounded TOML integer
    # would overflow float().
    if len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 and math.isfinite(v) for v in value
    ):
        raise reader.fail(key, "a list of 3 finite numbers", value)
    return (float(value[0]), float(value[1]), float(value[2]))


def _plain(value: Any) -> bool:
    """JSON-like: what may go into a cache key (TOML dates and times may not)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool))


def plain_table(reader: Reader, key: str) -> dict[str, Any]:
    """An optional table of JSON-like values (it becomes part of cache keys); ``{}`` when absent."""
    value = reader.table_(key, {})
    if not _plain(value):
        raise reader.fail(key, "a table of strings, numbers, booleans, lists and tables (no dates)", value)
    return dict(value)


def hex_string(reader: Reader, key: str, lengths: tuple[int, ...]) -> str | None:
    """An optional checksum: hex digits of one of ``lengths``, lower-cased; None when absent."""
    found = reader.get(key, str, f"a hex string of length {'/'.join(map(str, lengths))}", None)
    if found is None:
        return None
    value = str(found).lower()
    if len(value) not in lengths or any(c not in "0123456789abcdef" for c in value):
        raise reader.fail(key, f"a hex string of length {'/'.join(map(str, lengths))}", value)
    return value


def batch_sizes(reader: Reader, key: str) -> tuple[int, ...]:
    """A required, non-empty list of distinct batch sizes in [1, 4096]."""
    expected = "a non-empty list of distinct integers in [1, 4096]"
    value = reader.get(key, list, expected)
    if (
        not value
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= 4096 for b in value)
        or len(set(value)) != len(value)
    ):
        raise reader.fail(key, expected, value)
    return tuple(value)


def check_name(source: str, kind: str, name: str) -> None:
    """A model or chip name: it becomes part of test ids and file names."""
    if not name or not all(c.isalnum() or c in "_." for c in name):
        raise SpecError(
            f"{source}: {kind} name {name!r} must be letters, digits, '_' or '.' "
            "(it becomes part of test ids and file names)"
        )
