"""Calling the lab hooks of harness.pytest.hookspec: each implementation on its own, so that what it
returns or raises is named after the plugin it came from, and its fields checked like outside data.

The environment fields a plugin returns come from outside the suite (docs/security.md): a field's
name must be a plain identifier, its value text; the value is recorded as
:func:`harness.safe_names.printable` makes it (one line, no control characters), and a name the
suite records itself, or another plugin returned, is an :class:`ExtensionError` naming the plugin
and the field, never an overwrite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from harness.errors import UsageError
from harness.safe_names import printable

# The top-level names harness.environment.fingerprint() records (``ascend`` on Ascend hosts only):
# a lab's field never takes one of them (tests/test_extending.py keeps this list in step).
SUITE_ENVIRONMENT_FIELDS = frozenset({"host", "cpu", "cpu_features", "cores", "usable_cores", "machine", "os",
                                      "python", "packages", "ascend"})
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_VALUE = 512


class ExtensionError(UsageError):
    """A lab plugin's hook returned something the run cannot record, or raised: the message names the
    plugin and the field or error; the run fails, with every record the suite wrote kept."""


def _plugin(name: str) -> str:
    return printable(name or "<unnamed plugin>")


def call_each(config: pytest.Config, hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """``(plugin name, result)`` of every implementation of ``hook`` called with ``config`` and
    ``kwargs``, in pluggy's call order (last registered first, ``tryfirst`` / ``trylast`` honoured);
    an exception one raises is an :class:`ExtensionError` naming it (after the others ran: a broken
    plugin does not silence the rest)."""
    kwargs = {"config": config, **kwargs}
    caller = getattr(config.hook, hook)
    failures: list[str] = []
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            failures.append(f"plugin {_plugin(impl.plugin_name)}: {hook} cannot be a hook wrapper")
            continue
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as exc:  # a lab plugin's bug, reported with its name
            failures.append(f"plugin {_plugin(impl.plugin_name)}: {hook} raised {type(exc).__name__}: "
                            f"{printable(str(exc))}")
            continue
        yield impl.plugin_name, result
    if failures:
        raise ExtensionError("; ".join(failures))


def environment_fields(config: pytest.Config, suite_fields: Mapping[str, Any]) -> dict[str, str]:
    """The fields every ``pytest_mzc_environment_fields`` returned, checked; ``suite_fields`` is the
    environment the suite records (its names are refused as well as the reserved ones)."""
    taken = {name: "the suite" for name in (*SUITE_ENVIRONMENT_FIELDS, *suite_fields)}
    fields: dict[str, str] = {}
    for plugin, returned in call_each(config, "pytest_mzc_environment_fields"):
        if returned is None:
            continue
        where = f"plugin {_plugin(plugin)}: pytest_mzc_environment_fields"
        if not isinstance(returned, Mapping):
            raise ExtensionError(f"{where} returned {type(returned).__name__}; expected a dict of name: text")
        for name, value in returned.items():
            if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
                raise ExtensionError(f"{where} returned the field name {printable(repr(name))}; expected lower-case "
                                     "letters, digits and _, starting with a letter, at most 64 (like lab_rack)")
            if name in taken and taken[name] == "the suite":
                raise ExtensionError(f"{where} returned the field {name!r}, the suite's own environment field; a "
                                     f"plugin adds fields and never replaces one: name it otherwise (like lab_{name})")
            if name in taken:
                raise ExtensionError(f"{where} returned the field {name!r}, already returned by plugin "
                                     f"{_plugin(taken[name])}; a field has one owner: rename it in one of the two")
            if not isinstance(value, str) or len(value) > MAX_VALUE:
                what = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
                raise ExtensionError(f"{where} returned {what} for the field {name!r}; expected text of at most "
                                     f"{MAX_VALUE} characters (str(value) if it is a number)")
            taken[name] = plugin
            fields[name] = printable(value)
    return fields
