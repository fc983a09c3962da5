"""What one pytest run leaves behind under pytest-xdist: JUnit, the results file, the report and the
terminal summary, each metric exactly once (issue 6)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from suite_runner import ROOT, run_suite

from harness.records.schema import SCHEMA_KEY, SCHEMA_VERSION, record_from_json
from harness.specs import load_models

SEED_310P = ROOT / "fixtures" / "baselines" / "Ascend310P3.csv"


@pytest.fixture(scope="module")
def xdist_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    pytest.importorskip("xdist", reason="pip install pytest-xdist")
    tmp = tmp_path_factory.mktemp("xdist-run")
    proc, _ = run_suite(tmp, "acceptance", "-m", "perf", "--chip", "310P3", "--measurements", str(SEED_310P),
                        "-n", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc, tmp


def _junit_cases(path: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(f"{case.get('classname')}::{case.get('name')}",
             [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")])
            for case in ET.parse(path).getroot().iter("testcase")]


def test_junit_and_results_hold_every_metric_exactly_once_under_xdist(xdist_run: tuple[Any, Path]) -> None:
    proc, tmp = xdist_run
    assert "2 workers" in proc.stdout or "gw1" in proc.stdout
    assert "record_property is incompatible" not in proc.stdout  # per-case properties: xunit1 (pyproject.toml)
    cases = _junit_cases(tmp / "junit.xml")
    assert len(cases) == 3 * len(load_models())  # -m perf on 310P3: 3 test cases per model of the registry
    names = [name for name, _ in cases]
    assert len(set(names)) == len(names), "a test case appears twice in JUnit"
    records = [json.loads(line) for line in (tmp / "results.jsonl").read_text().splitlines()]
    tests = [r for r in records if r["kind"] != "run"]
    assert [r["kind"] for r in records].count("run") == 1
    assert len(tests) == len(cases)
    by_test = Counter(r["test"].split("::")[-1] for r in tests)
    assert set(by_test.values()) == {1}, "a result was recorded twice"
    records_by_name = {r["test"].split("::")[-1]: r for r in tests}
    metric_count = 0
    for name, props in cases:
        keys = [k for k, _ in props]
        assert len(set(keys)) == len(keys), f"{name}: a property repeats: {keys}"
        record = records_by_name[name.split("::")[-1]]
        for key, value in props:
            assert str(record[key]) == value, f"{name}: {key} is {value} in JUnit, {record[key]} in the results"
            metric_count += 1
    assert metric_count > 100
    for record in records:  # typed records of the current schema, each line exactly what its record writes
        assert record[SCHEMA_KEY] == SCHEMA_VERSION and record_from_json(record).to_json() == record
    skipped = records_by_name["test_throughput_ratio[resnest50-Ascend310P3-vs-T4]"]  # skipped: no T4 baseline
    assert (skipped["outcome"], skipped["baseline_chip"], skipped["threshold"], skipped["source"]) == (
        "skipped", "T4", 1.6, "measurements")  # what the test knew before it stopped is recorded
    gate = records_by_name["test_throughput_ratio[resnext50_32x4d-Ascend310P3-vs-T4]"]
    assert (gate["verdict"], gate["gate_ratio_vs_T4"], gate["ratio_vs_T4"]) == ("pass", "pass", 2.765)
    assert gate["ratio_bs32"] == pytest.approx(4012.15 / 1354.95)  # the per-batch ratios the report shows


def test_the_end_of_the_run_writes_the_report_and_prints_the_summary_table(xdist_run: tuple[Any, Path]) -> None:
    proc, tmp = xdist_run
    report = tmp / "report"
    html = (report / "report.html").read_text()
    markdown = (report / "report.md").read_text()
    for text in ("1.9377", "1.7977", "1.8991"):  # the seeds' ratios at the best batch
        assert text in markdown and text in html
    assert f"report written: {report / 'report.html'}" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("model "))
    assert header.split() == ["model", "configuration", "kind", "key", "figure", "verdict"]
    rows = {" ".join(line.split()) for line in proc.stdout.splitlines()}
    assert "resnext50_32x4d Ascend310P3 perf_ratio vs Ascend310 1.9377 (need >= 1.2) passed" in rows
    assert "resnest50 Ascend310P3 perf_ratio vs T4: not run skipped" in rows


def test_no_report_keeps_the_summary_and_writes_no_report(tmp_path: Path) -> None:
    proc, _ = run_suite(tmp_path, "acceptance", "-m", "perf", "--chip", "310P3", "--models", "resnext50_32x4d",
                        "--measurements", str(SEED_310P), "--no-report")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not (tmp_path / "report").exists()
    assert "certification summary" in proc.stdout and "report written" not in proc.stdout


def test_a_slower_night_is_flagged_at_the_end_of_the_run(tmp_path: Path) -> None:
    """Two runs appending to one results file: the second, 25% slower, ends with the regression."""
    slower = tmp_path / "slower310P3.csv"
    slower.write_text("model,batch_size,images_per_s,unit,clock,source,note\n"
                      "resnext50_32x4d,32,3000,per_card,device_compute,lab night 2,\n")
    args = ["acceptance", "-m", "perf", "--chip", "310P3", "--models", "resnext50_32x4d", "--measurements"]
    first, _ = run_suite(tmp_path, *args, str(SEED_310P))
    second, _ = run_suite(tmp_path, *args, str(slower))
    assert first.returncode == second.returncode == 0, second.stdout[-3000:]
    assert "REGRESSION" not in first.stdout
    flagged = [line.strip() for line in second.stdout.splitlines() if "REGRESSION" in line]
    assert len(flagged) == 1 and flagged[0].startswith(
        "REGRESSION resnext50_32x4d images/s Ascend310P3 (--measurements): "
        "4012.15 -> 3000.00 images/s per card (-25.2%)"
    ), flagged
