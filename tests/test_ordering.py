"""The suite's test files run longest first (tests/ordering.py): the order only, never the content."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests import ordering


@dataclass(frozen=True)
class Item:
    nodeid: str


def _items(*nodeids: str) -> list[Item]:
    return [Item(n) for n in nodeids]


def test_files_run_longest_first_with_their_tests_together_and_in_order() -> None:
    items = _items("tests/a.py::t1", "tests/b.py::t1", "tests/a.py::t2[x::y]", "tests/c.py::t1", "tests/b.py::t2")
    got = ordering.longest_first(items, {"tests/a.py": 1.0, "tests/b.py": 30.0, "tests/c.py": 5.0})
    assert [i.nodeid for i in got] == ["tests/b.py::t1", "tests/b.py::t2", "tests/c.py::t1",
                                       "tests/a.py::t1", "tests/a.py::t2[x::y]"]


def test_an_unknown_file_weighs_the_median_and_no_data_keeps_the_collection_order() -> None:
    items = _items("tests/new.py::t", "tests/small.py::t", "tests/big.py::t", "tests/mid.py::t")
    seconds = {"tests/small.py": 1.0, "tests/mid.py": 10.0, "tests/big.py": 100.0}
    assert [i.nodeid for i in ordering.longest_first(items, seconds)] == [
        "tests/big.py::t", "tests/new.py::t", "tests/mid.py::t", "tests/small.py::t"]  # new: median 10, first seen
    assert ordering.longest_first(items, {}) == items


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 3)), max_size=30),
       st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1e4, allow_nan=False), max_size=6))
def test_the_order_is_a_permutation_keeping_each_files_tests_in_order(
        tests: list[tuple[str, int]], costs: dict[str, float]) -> None:
    items = [Item(f"tests/{f}.py::t{i}[{n}]") for n, (f, i) in enumerate(tests)]
    got = ordering.longest_first(items, {f"tests/{f}.py": s for f, s in costs.items()})
    assert sorted(i.nodeid for i in got) == sorted(i.nodeid for i in items)
    files = [ordering.file_of(i.nodeid) for i in got]
    runs = [f for k, f in enumerate(files) if k == 0 or files[k - 1] != f]
    assert len(runs) == len(set(runs)), runs  # each file's tests contiguous
    for f in set(files):
        kept = [i for i in got if ordering.file_of(i.nodeid) == f]
        assert kept == [i for i in items if ordering.file_of(i.nodeid) == f]


def test_a_missing_or_broken_durations_file_changes_nothing(tmp_path: Path) -> None:
    assert ordering.load(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert ordering.load(tmp_path / "bad.json") == {}


def test_the_durations_are_read_from_a_junit_report_per_file(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest (parallel)">'
        '<testcase classname="tests.judge.test_gates_headline" name="a" time="1.5"/>'
        '<testcase classname="tests.judge.test_gates_headline" name="b" time="2.0"/>'
        '<testcase classname="tests.test_ordering" name="c" time="0.25"/>'
        '<testcase classname="tests.no_such_file" name="d" time="9"/>'
        '</testsuite><testsuite name="pytest (serial)">'
        '<testcase classname="acceptance.test_perf" name="e" time="4"/></testsuite></testsuites>')
    assert ordering.from_junit(junit) == {"tests/judge/test_gates_headline.py": 3.5, "tests/test_ordering.py": 0.25,
                                          "acceptance/test_perf.py": 4.0}


def test_the_checked_in_durations_name_only_files_that_exist() -> None:
    """A renamed or deleted test file is dropped from tests/durations.json (refresh it: tests/ordering.py)."""
    data = json.loads(ordering.DURATIONS.read_text(encoding="utf-8"))
    stale = [name for name in data["files"] if not (ordering.ROOT / name).is_file()]
    assert not stale, f"{ordering.DURATIONS.name} names files that are gone: {stale}; refresh it (tests/ordering.py)"
    assert len(data["files"]) >= 50
