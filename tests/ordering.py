"""The order the suite's test files run in under ``pytest -n N --dist loadfile``: longest first.

pytest-xdist's ``loadfile`` hands whole files to the workers in the order it holds them. By default it
reorders them by their number of tests, so a file of four 30-second tests (tests/test_end_to_end.py)
comes after every file of forty quick ones and starts last, alone, while the other worker idles.
scripts/test.sh turns that reordering off (``--no-loadscope-reorder``) and the collection hook in
tests/conftest.py puts the files in the order of their measured cost instead, longest first (the LPT
rule: with files dealt longest first to whichever worker is free, the run ends at most a third
later than the best split could; a heavy file last can double the tail).

The costs are data: tests/durations.json, seconds per file summed from a JUnit report of the whole
suite (setup, call and teardown; pytest's default ``junit_duration_report``). A file that is not in
it (a new one) weighs the median. The order changes only when files run, never what they do or
whether they pass; a stale file costs balance, not correctness. Refresh it after adding slow tests:

    .venv/bin/python -m tests.ordering reports/junit.xml
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

DURATIONS = Path(__file__).with_name("durations.json")
ROOT = DURATIONS.parents[1]
TOPS = ("tests", "acceptance")  # pyproject's testpaths


class _Item(Protocol):
    nodeid: str


ItemT = TypeVar("ItemT", bound=_Item)


def file_of(nodeid: str) -> str:
    """``tests/judge/test_x.py::test_y[a::b]`` -> ``tests/judge/test_x.py``."""
    return nodeid.split("::", 1)[0]


def load(path: Path = DURATIONS) -> dict[str, float]:
    """Seconds per test file; empty when the file is missing or unreadable (then collection order stays)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files", {}) if isinstance(data, dict) else {}
    return {str(k): float(v) for k, v in files.items() if isinstance(v, int | float)}


def longest_first(items: Sequence[ItemT], seconds: Mapping[str, float]) -> list[ItemT]:
    """``items`` with each file's tests kept together and in their order, files by cost, longest first;
    ties (and files of equal unknown cost) keep their collection order."""
    files: dict[str, list[ItemT]] = {}
    for item in items:
        files.setdefault(file_of(item.nodeid), []).append(item)
    unknown = statistics.median(seconds.values()) if seconds else 0.0
    order = sorted(enumerate(files), key=lambda pair: (-seconds.get(pair[1], unknown), pair[0]))
    return [item for _, name in order for item in files[name]]


def from_junit(path: Path) -> dict[str, float]:
    """Seconds per test file from a JUnit report (pytest's ``classname`` is the dotted module path,
    then the class: ``tests.judge.test_x`` or ``tests.test_x.TestY``), matched to the files in
    tests/ and acceptance/."""
    from junitparser import JUnitXml, TestSuite

    doc = JUnitXml.fromfile(str(path))
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p.relative_to(ROOT).as_posix()
               for top in TOPS for p in (ROOT / top).rglob("test_*.py")}
    totals: dict[str, float] = {}
    for suite in [doc] if isinstance(doc, TestSuite) else list(doc):
        for case in suite:
            classname = case.classname or ""
            parts = classname.split(".")
            name = next((modules[".".join(parts[:n])] for n in range(len(parts), 0, -1)
                         if ".".join(parts[:n]) in modules), None)
            if name is not None:
                totals[name] = totals.get(name, 0.0) + float(case.time or 0.0)
    return totals


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m tests.ordering JUNIT_XML  (a JUnit report of the whole suite, e.g. "
              "reports/junit.xml from scripts/test.sh)", file=sys.stderr)
        return 2
    totals = from_junit(Path(argv[0]))
    if not totals:
        print(f"{argv[0]}: no test case of a file under tests/ or acceptance/; {DURATIONS.name} left as it is",
              file=sys.stderr)
        return 1
    body = {"source": "python -m tests.ordering <JUnit of the whole suite> (tests/ordering.py)",
            "files": {name: round(s, 1) for name, s in sorted(totals.items())}}
    tmp = DURATIONS.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    tmp.replace(DURATIONS)
    print(f"{DURATIONS.relative_to(ROOT)}: {len(totals)} files, {sum(totals.values()):.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
