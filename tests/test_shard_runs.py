"""--shard K/N on the real suite in subprocesses: the shards' union is the unsharded run, they share no
test, each model stays in one shard, pytest reports the rest as deselected, and the shards' results
files merge (python -m harness merge) into one file the report reads.

The selection is ``acceptance -m accuracy`` without --imagenet: every curated model's accuracy tests,
each skipped in a fraction of a second with its record written (the shard machinery sees the same
collection, records and run records as a night on full val).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from suite_runner import ROOT, run_suite

pytestmark = pytest.mark.slow  # four suite runs in subprocesses: ~60 s

SELECTION = ("acceptance", "-m", "accuracy", "-p", "no:xdist")


def _run_record(results: Path) -> dict:
    runs = [json.loads(line) for line in results.read_text().splitlines() if '"kind": "run"' in line]
    assert len(runs) == 1, runs
    return runs[0]


def _merge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "merge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _deselected(proc: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"(\d+) deselected", proc.stdout)
    return int(found[1]) if found else 0


def _model(case_name: str) -> str:
    return case_name.split("[", 1)[1].split("-cpu")[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], dict, Path]]:
    """The unsharded run, then shards 1/2 and 2/2 balanced by the unsharded run's durations."""
    done = {}
    whole = tmp_path_factory.mktemp("whole")
    proc, cases = run_suite(whole, *SELECTION)
    done["whole"] = (proc, cases, whole)
    for k in (1, 2):
        out = tmp_path_factory.mktemp(f"shard{k}")
        proc, cases = run_suite(out, *SELECTION, "--shard", f"{k}/2", "--shard-durations", str(whole / "results.jsonl"))
        done[f"{k}/2"] = (proc, cases, out)
    return done


def test_two_shards_split_the_selection_exactly_and_keep_models_whole(runs: dict) -> None:
    for name, (proc, _, _) in runs.items():
        assert proc.returncode == 0, name + proc.stdout[-3000:] + proc.stderr[-2000:]
    whole, first, second = runs["whole"][1], runs["1/2"][1], runs["2/2"][1]
    assert len(whole) >= 4
    assert set(first) | set(second) == set(whole)
    assert not set(first) & set(second)
    assert first and second
    assert not {_model(c) for c in first} & {_model(c) for c in second}
    for k in (1, 2):
        proc = runs[f"{k}/2"][0]
        assert _deselected(proc) == _deselected(runs["whole"][0]) + len(whole) - len(runs[f"{k}/2"][1])
        assert f"shard {k}/2: {len(runs[f'{k}/2'][1])} of {len(whole)} selected tests" in proc.stdout


def test_each_shard_records_its_part_of_one_plan(runs: dict) -> None:
    records = {k: _run_record(runs[k][2] / "results.jsonl") for k in ("1/2", "2/2")}
    assert records["1/2"]["shard_plan"] == records["2/2"]["shard_plan"]
    assert len(records["1/2"]["shard_plan"]) == 64
    for k, record in records.items():
        assert record["shard"] == k
        assert record["shard_selected"] == len(runs["whole"][1])
        assert {t.split("::")[-1] for t in record["shard_tests"]} == set(runs[k][1])
    assert "shard" not in _run_record(runs["whole"][2] / "results.jsonl")


def test_the_shards_merge_into_one_results_file_the_report_reads(runs: dict, tmp_path: Path) -> None:
    merged = tmp_path / "merged.jsonl"
    proc = _merge(str(runs["1/2"][2] / "results.jsonl"), str(runs["2/2"][2]), "--out", str(merged))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"merged 2 shard run(s) of 2 on cpu: {len(runs['whole'][1])} test(s)" in proc.stdout
    lines = [json.loads(line) for line in merged.read_text().splitlines()]
    tests = [r["test"].split("::")[-1] for r in lines if r["kind"] != "run"]
    assert sorted(tests) == sorted(t for k in ("1/2", "2/2") for t in runs[k][1] if "predictions" not in t)
    assert [r["shard"] for r in lines if r["kind"] == "run"] == ["1/2", "2/2"]
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(merged), "--out", str(tmp_path / "r")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "2 run(s)" in (tmp_path / "r" / "report.md").read_text()


def test_one_shard_alone_does_not_merge_and_the_missing_shard_is_named(runs: dict, tmp_path: Path) -> None:
    proc = _merge(str(runs["1/2"][2] / "results.jsonl"), "--out", str(tmp_path / "merged.jsonl"))
    assert proc.returncode == 1
    assert "error: shard 2/2 did not report" in proc.stderr
    assert not (tmp_path / "merged.jsonl").exists()


def test_under_xdist_the_controller_records_the_workers_plan(runs: dict, tmp_path: Path) -> None:
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "-n", "2", "--shard", "1/2",
                            "--shard-durations", str(runs["whole"][2] / "results.jsonl"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    record = _run_record(tmp_path / "results.jsonl")
    assert set(cases) == set(runs["1/2"][1])
    assert record["shard"] == "1/2"
    assert record["shard_plan"] == _run_record(runs["1/2"][2] / "results.jsonl")["shard_plan"]


@pytest.mark.parametrize(("args", "message"), [
    (("--shard", "0/3"), "argument --shard: expected a shard K/N with 1 <= K <= N (like 2/4), got '0/3'"),
    (("--shard-durations", "reports"), "--shard-durations balances the shards of --shard K/N: give --shard too"),
])
def test_a_bad_shard_option_is_a_usage_error_before_any_test(args: tuple[str, ...], message: str,
                                                               tmp_path: Path) -> None:
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "-p", "no:xdist", *args)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr
    assert not cases
