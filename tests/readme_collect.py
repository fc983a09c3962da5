"""Collect many pytest command lines in one process: ``python -m tests.readme_collect IN.json OUT.json``.

tests/test_readme_commands.py collects every documented command twice, as typed and with each
long option's value joined by ``=``. A new interpreter per collection paid the suite's imports
(~7 s) each time; this pays them once, then each collection takes a fraction of a second. Each
``pytest.main`` builds its own Config (parser, rootdir, ini-file, plugins from their entry points):
what is under test, how pytest parses the command and where it roots it, is done afresh every
time; only imported modules are shared.

IN.json: ``[{"args": [...], "extra": [...]}, ...]``, a command as typed (what follows ``pytest``)
and the arguments added to both of its forms (``--collect-only -q``...). OUT.json:
``{"value_options": [...], "results": [{"joined": [...], "typed_result": R, "joined_result": R}]}``
with R = ``{"code": exit status, "stdout": ..., "stderr": ...}`` of ``pytest.main``.
"""

from __future__ import annotations

import gc
import io
import json
import re
import sys
import warnings
from collections.abc import Collection
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest


def run(args: list[str]) -> dict[str, Any]:
    """``pytest.main(args)``'s exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        # every pytest.main after the first finds the plugin modules imported already: nothing to rewrite
        warnings.simplefilter("ignore", pytest.PytestAssertRewriteWarning)
        code = pytest.main(args)
    # Each session ends with a full gc.collect() (pytest's unraisable-exception check), which walks every
    # object this process holds: frozen, the ones the earlier sessions left are not walked again (a
    # collection took 0.43 s, 0.17 s so). What pytest.main does is unchanged.
    gc.freeze()
    return {"code": int(code), "stdout": out.getvalue(), "stderr": err.getvalue()}


def value_options() -> frozenset[str]:
    """Long options that take a value, as ``pytest --help`` shows them (``--imagenet=DIR``)."""
    return frozenset(re.findall(r"(--[\w-]+)=\S", run(["--help"])["stdout"]))


def equals_form(args: list[str], takes_value: Collection[str]) -> list[str]:
    """The same command with every long option's value joined by ``=``."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in takes_value and i + 1 < len(args):
            joined.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            joined.append(args[i])
            i += 1
    return joined


def main(argv: list[str]) -> int:
    source, target = (Path(a) for a in argv)
    takes_value = value_options()
    done: dict[tuple[str, ...], dict[str, Any]] = {}

    def collected(args: list[str]) -> dict[str, Any]:
        if tuple(args) not in done:
            done[tuple(args)] = run(args)
        return done[tuple(args)]

    results = []
    for job in json.loads(source.read_text()):
        typed, extra = job["args"], job["extra"]
        joined = equals_form(typed, takes_value)
        results.append({"joined": joined, "typed_result": collected(typed + extra),
                        "joined_result": collected(joined + extra)})
    target.write_text(json.dumps({"value_options": sorted(takes_value), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
