"""python -m harness merge: the shards' results files are checked to make one whole run, then joined.

The shard files here are written as the recorder writes them (typed records' to_json, one per
line); tests/test_shard_runs.py merges the files of real sharded suite runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.records.merge import ShardsIncomplete, check_shards
from harness.records.parts import Configuration, PytestFacts
from harness.records.results import load_results
from harness.records.schema import AccuracyRecord, RunRecord

ROOT = Path(__file__).resolve().parents[1]
PLAN = "a" * 64
ACCURACY = "acceptance/test_accuracy.py::test_accuracy"
TESTS = {1: (f"{ACCURACY}[m1-cpu-bs8]",), 2: (f"{ACCURACY}[m2-cpu-bs8]", f"{ACCURACY}[m3-cpu-bs8]")}


def _shard_file(path: Path, index: int, count: int = 2, *, tests: tuple[str, ...] | None = None,
                recorded: tuple[str, ...] | None = None, chips: tuple[str, ...] = ("cpu",), plan: str = PLAN,
                selected: int = 3, finished: bool = True, shard: str | None = "") -> Path:
    run_id = f"run-{path.stem}"
    tests = TESTS.get(index, ()) if tests is None else tests
    lines = [AccuracyRecord(meta=PytestFacts(run_id=run_id, test=t, outcome="passed", duration_s=10.0 * (i + 1)),
                            config=Configuration(model=t.split("[")[1].split("-")[0], chip=chips[0])).to_json()
             for i, t in enumerate(tests if recorded is None else recorded)]
    if finished:
        lines.append(RunRecord(run_id=run_id, started=f"2026-12-0{index}T00:00:00+0000", exit_status=0, chips=chips,
                               shard=f"{index}/{count}" if shard == "" else shard, shard_plan=plan,
                               shard_selected=selected, shard_tests=tests).to_json())
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _problems(*paths: Path) -> list[str]:
    with pytest.raises(ShardsIncomplete) as refused:
        check_shards(load_results(list(paths)))
    return refused.value.problems


def test_whole_shards_merge_into_one_file_shard_by_shard(tmp_path: Path) -> None:
    files = [_shard_file(tmp_path / "s2.jsonl", 2), _shard_file(tmp_path / "s1.jsonl", 1)]
    out = tmp_path / "out" / "merged.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "merge", *map(str, files), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shard 1/2: 1 test(s) given, 1 recorded, 10.0 s of tests" in proc.stdout
    assert "shard 2/2: 2 test(s) given, 2 recorded, 30.0 s of tests" in proc.stdout
    assert "merged 2 shard run(s) of 2 on cpu: 3 test(s), 5 record(s)" in proc.stdout
    assert "longest shard 30.0 s, 1.50x the mean" in proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r.get("shard")) for r in lines] == [
        ("accuracy", None), ("run", "1/2"), ("accuracy", None), ("accuracy", None), ("run", "2/2")]
    assert load_results(out).runs[0].info.shard == "1/2"  # the merged file reads back, typed


def test_a_missing_shard_fails_naming_it_and_nothing_is_written(tmp_path: Path) -> None:
    first = _shard_file(tmp_path / "s1.jsonl", 1, 3)
    out = tmp_path / "merged.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "merge", str(first), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: shard 2/3 did not report" in proc.stderr and "error: shard 3/3 did not report" in proc.stderr
    assert "the shards that did hold 1 of the 3 selected tests" in proc.stderr
    assert not out.exists()


def test_a_shard_the_plan_left_empty_need_not_report(tmp_path: Path) -> None:
    merged = check_shards(load_results([_shard_file(tmp_path / "s1.jsonl", 1, 3, tests=TESTS[1] + TESTS[2]),
                                        _shard_file(tmp_path / "s2.jsonl", 2, 3, tests=())]))
    assert merged.empty == [3]
    assert [s.index for s in merged.shards] == [1, 2]


def test_a_shard_reported_twice_is_refused(tmp_path: Path) -> None:
    problems = _problems(_shard_file(tmp_path / "a.jsonl", 1), _shard_file(tmp_path / "b.jsonl", 1),
                         _shard_file(tmp_path / "c.jsonl", 2))
    assert any(p.startswith("shard 1/2 reported twice: run run-a") and "run run-b" in p for p in problems), problems


def test_a_test_given_to_two_shards_is_a_duplicate(tmp_path: Path) -> None:
    problems = _problems(_shard_file(tmp_path / "a.jsonl", 1),
                         _shard_file(tmp_path / "b.jsonl", 2, tests=TESTS[1] + TESTS[2][:1]))
    assert f"{TESTS[1][0]} was given to shard 1/2 and to shard 2/2" in problems


def test_a_test_recorded_by_a_shard_it_was_not_given_to_is_refused(tmp_path: Path) -> None:
    problems = _problems(_shard_file(tmp_path / "a.jsonl", 1),
                         _shard_file(tmp_path / "b.jsonl", 2, recorded=TESTS[2] + TESTS[1]))
    assert f"{TESTS[1][0]} recorded by shard 1/2 and shard 2/2" in problems


@pytest.mark.parametrize(("second", "expected"), [
    ({"chips": ("310P3",)}, "the shards ran different chips (310P3; cpu)"),
    ({"plan": "b" * 64}, "the shards split different selections"),
    ({"selected": 4}, "the shards split different selections"),
    ({"shard": "2/3"}, "the runs are shards of different splits (N=2, N=3)"),
    ({"shard": "3/2"}, "shard: expected a shard K/N with 1 <= K <= N (like 2/4), got '3/2'"),
    ({"shard": None}, "is not a shard run (no --shard K/N)"),
    ({"finished": False}, "has test records but no run record: killed before it finished?"),
])
def test_shards_that_are_not_one_run_are_refused(second: dict, expected: str, tmp_path: Path) -> None:
    problems = _problems(_shard_file(tmp_path / "a.jsonl", 1), _shard_file(tmp_path / "b.jsonl", 2, **second))
    assert any(expected in p for p in problems), problems


def test_a_path_without_records_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "harness", "merge", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "m.jsonl")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m harness merge: error:") and "no *.jsonl files" in proc.stderr
