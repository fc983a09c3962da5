"""The report engine: results files of real runs (the seeds' 310P figures run through the suite)
merged, rendered to Markdown / HTML / PNG, with the seeds' tables and ratios reproduced, history
regressions flagged, bad input reported and the CLI's exit statuses."""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from suite_runner import ROOT

from harness.records.history import Regression, find_regressions, model_history
from harness.records.parts import MEASURED, MEASUREMENTS, Configuration
from harness.records.results import Results, ResultsError, load_results, results_of
from harness.records.schema import record_from_json
from harness.report.build import terminal_table, write_report
from harness.report.tables import DASH
from harness.report.throughput import throughput_table
from harness.specs import HistoryPolicy, load_policy

TIME = "%Y-%m-%dT%H:%M:%S%z"
TRUNCATED = 1e-4 + 1e-9  # seed 000 truncates to 4 decimals; the report rounds (and floats are floats)

# Seed 000 section 7 (ResNeXt-50; its ratios are truncated, not rounded) and seed 003's 吞吐量
# table (SE-ResNeXt-50; rounded): bs -> (310P, 310, T4, 310P/310, 310P/T4).
SEED_000 = {
    1: (1413.46, 642.98, 759.14, 2.1982, 1.8619), 4: (2886.57, 1248.2, 1028.36, 2.3125, 2.8069),
    8: (3503.03, 1530.728, 1183.76, 2.2884, 2.9592), 16: (3861.76, 2070.524, 1259.39, 1.8651, 3.0663),
    32: (4012.15, 1612.724, 1354.95, 2.4878, 2.9611), 64: (1985.7, 1492.348, 1451.07, 1.3305, 1.3684),
}
SEED_003 = {
    1: (1006.47, 786.26, 549.747, 1.2801, 1.8308), 4: (1804.86, 941.04, 750.772, 1.9179, 2.4040),
    8: (1507.69, 1030.82, 894.025, 1.4626, 1.6864), 16: (1396.36, 1113.52, 957.024, 1.2540, 1.4591),
    32: (2001.78, 995.492, 1035.980, 2.0108, 1.9323), 64: (1198.41, 953.8, 1054.064, 1.2565, 1.1369),
}


# --------------------------------------------------------------------------------------------
# Results of a real run, shared by the module (one subprocess, a few seconds)


@pytest.fixture(scope="module")
def seed_report(seed_results: Path) -> Path:
    """The report that run wrote when it ended (suite_runner passes --report-dir <tmp>/report)."""
    out = seed_results.parent / "report"
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def later_run(records: list[dict[str, Any]], run_id: str, days: int = 1) -> list[dict[str, Any]]:
    """The same records as a run ``days`` later (new run_id, shifted times)."""
    out = []
    for r in copy.deepcopy(records):
        r["run_id"] = run_id
        for key in ("time", "started", "finished"):
            if key in r:
                r[key] = (datetime.strptime(r[key], TIME) + timedelta(days=days)).strftime(TIME)
        out.append(r)
    return out


def accuracy_record(
    run_id: str,
    chip: str,
    top1: float,
    top5: float,
    *,
    when: str,
    host: str = "gpu-box",
    model: str = "resnext50_32x4d",
    backend: str = "onnxruntime",
    precision: str = "fp16",
) -> dict[str, Any]:
    """An accuracy record with the fields acceptance/test_accuracy.py records (evaluation_properties)."""
    return {
        "run_id": run_id,
        "test": f"acceptance/test_accuracy.py::test_accuracy[{model}-{chip}-bs8]",
        "outcome": "passed",
        "phase": "call",
        "duration_s": 812.3,
        "time": when,
        "host": host,
        "kind": "accuracy",
        "model": model,
        "chip": chip,
        "batch_size": 8,
        "published_top1": 77.618,
        "published_top5": 93.698,
        "published_source": "torchvision ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
        "backend": backend,
        "backend_version": "1.32.0",
        "precision": precision,
        "input_dtype": "float32",
        "decode": "exact",
        "images": 50000,
        "weights": "pretrained",
        "weights_source": "https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth",
        "top1": top1,
        "top5": top5,
        "reference_top1": 77.618,
        "reference_top5": 93.698,
        "delta_top1_vs_reference": round(top1 - 77.618, 4),
        "delta_top5_vs_reference": round(top5 - 93.698, 4),
        "top1_agreement": 99.71,
        "max_abs_diff": 0.0123,
        "gate_top1": "pass",
        "gate_top5": "pass",
        "gate_top1_agreement": "pass",
    }


def run_record(run_id: str, started: str, host: str, chips: list[str]) -> dict[str, Any]:
    return {"kind": "run", "run_id": run_id, "started": started, "finished": started, "exit_status": 0,
            "args": ["-m", "accuracy or perf", "--chip", chips[0]], "chips": chips, "outcomes": {"passed": 2},
            "environment": {"host": host, "cpu": "Intel Xeon Gold 6248", "cores": 80, "usable_cores": 80,
                            "machine": "x86_64", "os": "Linux-5.15", "python": "3.10.12",
                            "packages": {"onnxruntime-gpu": "1.17.0", "torch": "2.2.0"}}}


def table_rows(markdown: str, model: str) -> dict[str, list[str]]:
    """The throughput table of ``model`` in report.md: row label -> cells."""
    section = markdown.split(f"({model})\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("### Throughput", 1)[1]
    rows = {}
    for line in table.splitlines():
        if re.match(r"\| (bs\d+|best) \|", line):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def all_regressions(results: Results, policy: HistoryPolicy) -> list[Regression]:
    """Every model's regressions, model by model (what write_report flags)."""
    return [reg for model in results.models() for reg in find_regressions(model_history(results, model), policy)]


def number(cell: str) -> float:
    return float(re.match(r"[\d.]+", cell).group(0))  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# The seeds' tables


def test_seed_000_resnext50_table_and_best_row(seed_report: Path) -> None:
    rows = table_rows((seed_report / "report.md").read_text(), "resnext50_32x4d")
    assert list(rows) == ["bs1", "bs4", "bs8", "bs16", "bs32", "bs64", "best"]
    for bs, (p310p, p310, t4, r310, rt4) in SEED_000.items():
        cells = rows[f"bs{bs}"]  # columns: Ascend310P3, Ascend310, T4, 310P3/310, 310P3/T4
        assert [number(c) for c in cells[:3]] == [p310p, p310, t4]
        assert number(cells[3]) == pytest.approx(r310, abs=TRUNCATED)
        assert number(cells[4]) == pytest.approx(rt4, abs=TRUNCATED)
    best = rows["best"]
    assert best[:3] == ["4012.15 (bs32)", "2070.524 (bs16)", "1451.07 (bs64)"]
    assert number(best[3]) == pytest.approx(1.9377, abs=TRUNCATED) and best[3].startswith("1.9377 (PASS")
    assert number(best[4]) == pytest.approx(2.7649, abs=TRUNCATED)  # seed 000 truncates the exact 2.76496


def test_seed_003_se_resnext50_every_ratio(seed_report: Path, seed_results: Path) -> None:
    rows = table_rows((seed_report / "report.md").read_text(), "se_resnext50_32x4d")
    for bs, (p710, p310, t4, r310, rt4) in SEED_003.items():
        cells = rows[f"bs{bs}"]
        assert [number(c) for c in cells[:3]] == [p710, p310, t4]
        assert (cells[3], cells[4]) == (f"{r310:.4f}", f"{rt4:.4f}")  # seed 003 rounds: exact match
    assert rows["bs4"][3:] == ["1.9179", "2.4040"]
    assert number(rows["best"][3]) == 1.7977 and number(rows["best"][4]) == 1.8991
    table = throughput_table(load_results(seed_results), "se_resnext50_32x4d")
    assert table is not None
    assert [c.chip for c in table.columns] == ["Ascend310P3", "Ascend310", "T4"]
    assert [c.origin for c in table.columns] == ["measured", "baseline", "baseline"]
    assert round(table.ratio("Ascend310P3", "T4").best, 4) == 1.8991  # type: ignore[arg-type]
    assert "agrees with the table" in table.notes[0].text and "agrees with the table" in table.notes[1].text


def test_headers_name_clock_unit_and_source(seed_report: Path) -> None:
    md = (seed_report / "report.md").read_text()
    header = next(line for line in md.split("(resnext50_32x4d)\n", 1)[1].splitlines() if line.startswith("| bs |"))
    assert (
        "Ascend310P3<br>device compute, single-stream, per card<br>measured: Ascend310P3.csv (--measurements)" in header
    )
    assert (
        "Ascend310<br>device compute, single-stream, per card<br>baseline: Ascend310.csv (000_4d34db7f961b74c7.txt)"
        in header
    )
    assert "Ascend310P3/Ascend310<br>(>= 1.2)" in header and "Ascend310P3/T4<br>(>= 1.6)" in header


def test_missing_data_are_dashes_with_the_reason(seed_report: Path) -> None:
    md = (seed_report / "report.md").read_text()
    rows = table_rows(md, "resnext101_32x8d")  # 310P3: none in the seeds; 310: per-chip x 4; T4: none
    for bs, per_chip in {1: 144.766, 4: 167.46, 8: 167.521, 16: 165.952, 32: 108.28}.items():
        (cell,) = rows[f"bs{bs}"]  # the columns without a figure in any row are not shown
        assert number(cell) == pytest.approx(per_chip * 4)
    assert rows["best"] == ["670.084 (bs8)"]
    assert "Ascend310: per-chip figures x 4 chips per card" in md
    section = md.split("(resnext101_32x8d)\n", 1)[1].split("\n## ", 1)[0]
    assert ("columns without figures for this model, not shown: Ascend310P3, T4, Ascend310P3/Ascend310, "
            "Ascend310P3/T4") in section
    rows = table_rows(md, "resnest50")  # 310P3 measured; no 310 and no T4 baseline
    assert rows["bs4"] == ["1704"] and rows["best"][0].startswith("1704 (bs4)")
    assert re.search(r"T4: no T4 figures for resnest50 in \S*fixtures/baselines/T4.csv", md)
    assert re.search(r"Ascend310P3/Ascend310: gate skipped: [^\n]*no Ascend310 baseline for resnest50", md)


def test_terminal_table_is_compact_and_complete(seed_results: Path) -> None:
    text = terminal_table(load_results(seed_results))
    lines = text.splitlines()
    assert lines[0].split() == ["model", "configuration", "kind", "key", "figure", "verdict"]
    assert len(lines) == 2 + len(load_results(seed_results).latest_tests())  # header, rule, one line per test
    assert re.search(r"resnext50_32x4d\s+Ascend310P3\s+perf_ratio\s+vs T4 2\.7650 \(need >= 1\.6\)\s+passed", text)
    assert re.search(r"resnest50\s+Ascend310P3\s+perf_ratio\s+vs T4: not run\s+skipped", text)
    assert max(len(line) for line in lines) < 120


# --------------------------------------------------------------------------------------------
# Merging machines, history and regressions


def test_two_machines_merge_into_one_report(seed_results: Path, tmp_path: Path) -> None:
    """Nightly artifacts: one directory per machine; a measured T4 replaces the T4 baseline column."""
    (tmp_path / "artifacts" / "reports-ascend-310p3").mkdir(parents=True)
    shutil.copy(seed_results, tmp_path / "artifacts" / "reports-ascend-310p3" / "results-310P3.jsonl")
    started = datetime.strptime(read_records(seed_results)[0]["time"], TIME).strftime(TIME)
    t4_perf = {
        "run_id": "night1-gpu-box", "test": "acceptance/test_perf.py::test_throughput[resnext50_32x4d-T4]",
        "outcome": "passed", "phase": "call", "time": started, "host": "gpu-box", "kind": "perf",
        "model": "resnext50_32x4d", "chip": "T4", "figures_from": "measured here", "images_per_s_bs1": 800.0,
        "images_per_s_bs64": 1500.0, "best_batch": 64, "best_images_per_s": 1500.0,
        "best_images_per_s_per_card": 1500.0, "unit": "per_card", "clock": "device_compute", "devices_per_card": 1,
    }
    t4_tests = [accuracy_record("night1-gpu-box", "T4", 77.55, 93.66, when=started), t4_perf]
    t4_file = write_records(tmp_path / "artifacts" / "reports-nvidia-t4" / "results-T4.jsonl",
                            [*t4_tests, run_record("night1-gpu-box", started, "gpu-box", ["T4"])])
    results = load_results(tmp_path / "artifacts")
    assert len(results.files) == 2 and len(results.runs) == 2 and not results.warnings
    table = throughput_table(results, "resnext50_32x4d")
    assert table is not None and table.column("T4").origin == "measured"
    assert table.column("T4").figures == {1: 800.0, 64: 1500.0}
    assert table.ratio("Ascend310P3", "T4").best == pytest.approx(2.76496)  # the gate's, as recorded (vs the T4 CSV)
    paths = write_report(results, tmp_path / "report")
    md = paths.markdown.read_text()
    rows = table_rows(md, "resnext50_32x4d")
    assert rows["bs1"][:3] == ["1413.46", "642.98", "800"] and rows["bs4"][2] == DASH
    assert "T4<br>device compute, single-stream, per card<br>measured: measured on gpu-box, run night1-gpu-box" in md
    # The 310P3 machine's gate compared with the T4 CSV; the table shows tonight's T4: both are said.
    assert ("gate PASSED in run {}: recorded ratio 2.7650 (bs32 vs T4 bs64, need >= 1.6); the table's T4 column "
            "shows T4 as measured in these results, the gate compared with its baseline figure 1451.07 "
            "(000_4d34db7f961b74c7.txt)").format(read_records(seed_results)[0]["run_id"]) in md
    assert rows["best"][4] == "2.7650 (PASS, need >= 1.6)"  # the recorded ratio and verdict, never recomputed
    assert "DISAGREES" not in md
    assert ("| T4 | onnxruntime | fp16 | 8 | measured here | pass | 77.55 / 93.66 | -0.07 / -0.04 | +0.07 | 99.71 | "
            "float32 | 50000 | 77.618 / 93.698 | 77.62 / 93.70 |") in md
    assert "Intel Xeon Gold 6248, 80 (80 usable) cores" in md and "night1-gpu-box" in md
    run_ids = {r.run_id for r in results.runs}
    assert all(run_id in md for run_id in run_ids)
    night = terminal_table(
        results_of([record_from_json(r) for r in t4_tests], t4_file)
    ).splitlines()  # one session's summary, as the plugin prints it
    assert len(night) == 2 + 2 and "top-1 77.55 top-5 93.66 (bs8)" in night[2] + night[3]


def _two_nights(seed_results: Path, tmp_path: Path, top1_drop: float, perf_factor: float) -> Path:
    night1 = read_records(seed_results)
    run1 = night1[0]["run_id"]
    night1.insert(0, accuracy_record(run1, "Ascend310P3", 77.60, 93.70, when=night1[0]["time"], backend="ascend"))
    night2 = later_run(night1, "night2-vm")
    night2[0]["top1"] = round(77.60 - top1_drop, 4)
    for r in night2:
        if r.get("kind") == "perf" and r.get("model") == "resnext50_32x4d":
            for key in [k for k in r if k.startswith("images_per_s_bs") or k.startswith("best_images_per_s")]:
                r[key] = round(r[key] * perf_factor, 4)
        if r.get("kind") == "perf" and r.get("model") == "se_resnext50_32x4d":
            r["images_per_s_bs32"] = round(r["images_per_s_bs32"] * 0.97, 4)  # -3%: within the 5% threshold
    write_records(tmp_path / "results" / "night1.jsonl", night1)
    write_records(tmp_path / "results" / "night2.jsonl", night2)
    return tmp_path / "results"


def test_history_flags_top1_and_throughput_regressions(seed_results: Path, tmp_path: Path) -> None:
    results = load_results(_two_nights(seed_results, tmp_path, top1_drop=2.0, perf_factor=0.8))
    assert [r.run_id for r in results.runs][1] == "night2-vm"
    history = model_history(results, "resnext50_32x4d")
    seeds = Configuration(model="resnext50_32x4d", chip="Ascend310P3", source=MEASUREMENTS, scenario="single-stream")
    assert [p.throughput[seeds] for p in history.points] == [(32, 4012.15), (32, 3209.72)]
    found = all_regressions(results, load_policy().history)
    assert [(r.model, r.what) for r in found] == [
        ("resnext50_32x4d", "top-1 Ascend310P3 ascend fp16 bs8"),
        ("resnext50_32x4d", "images/s Ascend310P3 (--measurements)"),
    ]
    assert (
        found[0]
        .describe()
        .startswith("REGRESSION resnext50_32x4d top-1 Ascend310P3 ascend fp16 bs8: 77.60 -> 75.60 (-2.00 points)")
    )
    assert "4012.15 -> 3209.72 images/s per card (-20.0%)" in found[1].describe()
    paths = write_report(results, tmp_path / "report")
    md, page = paths.markdown.read_text(), paths.html.read_text()
    summary = md.split("## Regressions", 1)[1].split("\n## ", 1)[0]  # one line per figure that regressed
    assert [line[:40] for line in summary.splitlines() if line.startswith("- ")] == [
        "- REGRESSION top-1 (threshold 0.5 points", "- REGRESSION images/s (threshold 5%): 1 "]
    assert "resnext50_32x4d top-1 Ascend310P3 ascend fp16 bs8: 77.60 -> 75.60 (-2.00 points)" in summary
    history_table = md.split("(resnext50_32x4d)\n", 1)[1].split("### History", 1)[1].split("\n## ", 1)[0]
    assert "75.60 / 93.70 on 50,000<br>pass, REGRESSION" in history_table  # the verdict, then the history's flag
    assert "3209.72 (bs32)<br>recorded (no gate), REGRESSION" in history_table  # figures read with --measurements
    assert "REGRESSION" not in md.split("(se_resnext50_32x4d)\n", 1)[1].split("\n## ", 1)[0]  # -3% is noise
    assert page.count("REGRESSION") == md.count("REGRESSION")
    assert '<td class="r bad">75.60 / 93.70 on 50,000<br>pass, REGRESSION</td>' in page
    assert len(paths.regressions) == 2


def test_small_drops_and_looser_policy_are_not_regressions(seed_results: Path, tmp_path: Path) -> None:
    results = load_results(_two_nights(seed_results, tmp_path, top1_drop=0.4, perf_factor=0.96))
    assert all_regressions(results, load_policy().history) == []
    results = load_results(tmp_path / "results")
    assert all_regressions(results, HistoryPolicy(regression_top1_points=0.1, regression_throughput_percent=1.0))
    md = write_report(results, tmp_path / "report").markdown.read_text()
    assert "No regressions" in md and "REGRESSION" not in md


# --------------------------------------------------------------------------------------------
# Bad input


def test_malformed_lines_are_reported_with_file_and_line(seed_results: Path, tmp_path: Path) -> None:
    lines = seed_results.read_text().splitlines()
    bad = tmp_path / "night.jsonl"
    bad.write_text("\n".join([lines[0], "", "{not json", "[1, 2]", '{"kind": "bogus", "run_id": "x"}',
                              "   ", *lines[1:], lines[2][: len(lines[2]) // 2]]) + "\n")
    results = load_results(bad)
    assert results.malformed_lines == 4 and results.blank_lines == 2
    assert any(w.startswith(f"{bad}:3: not JSON") for w in results.warnings)
    assert f"{bad}:4: expected a JSON object (one record), found list" in results.warnings
    assert any(w.startswith(f"{bad}:5: unknown record kind 'bogus'") for w in results.warnings)
    assert any(w.startswith(f"{bad}:{len(lines) + 6}: not JSON") and "killed run" in w for w in results.warnings)
    assert f"{bad}: 2 blank line(s) ignored (line 2, 6)" in results.warnings
    assert len(results.runs) == 1 and len(results.runs[0].records) == len(lines) - 1
    md = write_report(results, tmp_path / "report").markdown.read_text()
    assert "4 malformed line(s), 2 blank line(s)" in md and f"{bad}:3: not JSON" in md


def test_unreadable_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"nope: no such file or directory; expected a results file"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=r"empty: no \*\.jsonl files under this directory"):
        load_results(tmp_path / "empty")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("hello\n\n")
    with pytest.raises(
        ResultsError, match=r"garbage.jsonl: holds no results records; expected JSON lines with a 'kind'"
    ):
        load_results(garbage)
    assert issubclass(ResultsError, ValueError)


def test_records_without_a_run_record_are_still_a_run(seed_results: Path, tmp_path: Path) -> None:
    """A run killed before its `kind: run` line is reported, ordered by its first record's time."""
    records = [r for r in read_records(seed_results) if r["kind"] != "run"]
    results = load_results(write_records(tmp_path / "killed.jsonl", records))
    (run,) = results.runs
    assert not run.complete and run.started == records[0]["time"] and run.host == records[0]["host"]
    md = write_report(results, tmp_path / "report").markdown.read_text()
    assert "no run record: the session was killed before it finished" in md


# --------------------------------------------------------------------------------------------
# Plots


def test_plot_is_a_real_png(seed_report: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    path = seed_report / "plots" / "resnext50_32x4d.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.load()
        assert img.size[0] >= 600 and img.size[1] >= 300
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # lines, text, antialiasing: not a blank canvas
    assert sorted(p.name for p in (seed_report / "plots").iterdir()) == [
        "ghostnet_100.png", "resnest50.png", "resnext101_32x8d.png", "resnext50_32x4d.png", "se_resnext50_32x4d.png"]


def test_without_matplotlib_the_tables_are_still_written(seed_results: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    paths = write_report(load_results(seed_results), tmp_path)
    assert paths.plots == {} and not (tmp_path / "plots").exists()
    md = paths.markdown.read_text()
    assert "plots omitted: matplotlib is not installed (pip install -e '.[report]')" in md
    assert "1.9377" in md and "<img" not in paths.html.read_text()


def test_html_is_self_contained(seed_report: Path) -> None:
    page = (seed_report / "report.html").read_text()
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "1.9377 (PASS, need &gt;= 1.2)" in page and "2.7650 (PASS, need &gt;= 1.6)" in page


# --------------------------------------------------------------------------------------------
# The command line


def harness_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_the_report_and_exits_by_regressions(seed_results: Path, tmp_path: Path) -> None:
    results_dir = _two_nights(seed_results, tmp_path, top1_drop=2.0, perf_factor=0.8)
    proc = harness_cli("report", str(results_dir))
    assert proc.returncode == 0, proc.stderr
    assert (results_dir / "report.md").is_file() and (results_dir / "report.html").is_file()  # default --out
    assert f"report written: {results_dir / 'report.md'}" in proc.stdout
    assert "2 regression(s):" in proc.stdout and "REGRESSION resnext50_32x4d images/s Ascend310P3" in proc.stdout
    proc = harness_cli("report", str(results_dir), "--out", str(tmp_path / "out"), "--fail-on-regression")
    assert proc.returncode == 1 and (tmp_path / "out" / "report.html").is_file()
    proc = harness_cli("report", str(seed_results), "--out", str(tmp_path / "clean"), "--fail-on-regression")
    assert proc.returncode == 0 and "no regressions" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["missing-dir"], "missing-dir: no such file or directory; expected a results file"),
    (["fixtures"], "fixtures: no *.jsonl files under this directory"),
    (["README.md"], "README.md: holds no results records"),
    (["fixtures/models.toml", "--baselines-dir", "nowhere"], "--baselines-dir nowhere: expected a directory"),
])
def test_cli_bad_input_is_one_line_and_status_2(args: list[str], message: str) -> None:
    proc = harness_cli("report", *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m harness report: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# In a real browser


def _browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)


def test_report_renders_in_a_headless_browser(seed_report: Path, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(
            "no chromium, chromium-browser or google-chrome on PATH; install chromium: apt-get install -y chromium"
        )
    url = (seed_report / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for ratio in ("1.9377 (PASS", "2.7650 (PASS", "1.7977 (PASS", "1.8991 (PASS", "1.9179", "2.4040"):
        assert ratio in text
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 5
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as img:
        assert img.format == "PNG" and img.size[0] >= 600
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser, *flags, "--hide-scrollbars", "--window-size=1400,2400", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1400, 2400)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 100  # text and a plot, not blank


def test_a_changed_baseline_file_is_a_disagreement_with_the_gate(seed_results: Path, tmp_path: Path) -> None:
    baselines = tmp_path / "baselines"
    shutil.copytree(ROOT / "fixtures" / "baselines", baselines)
    t4 = baselines / "T4.csv"
    t4.write_text(t4.read_text().replace("resnext50_32x4d,64,1451.07,", "resnext50_32x4d,64,1500,"))
    md = write_report(load_results(seed_results), tmp_path / "report", baselines_dir=baselines).markdown.read_text()
    assert table_rows(md, "resnext50_32x4d")["best"][2] == "1500 (bs64)"
    assert (
        "recorded ratio 2.7650 (bs32 vs T4 bs64, need >= 1.6); DISAGREES with the table's T4 column: the gate "
        "compared with 1451.07 images/s per card at bs64 (000_4d34db7f961b74c7.txt), the column shows 1500 at bs64: "
        "the figures changed since that run"
    ) in md
    assert table_rows(md, "resnext50_32x4d")["best"][4] == "2.7650 (PASS, need >= 1.6)"  # as recorded


def test_accuracy_rows_newest_per_configuration(tmp_path: Path) -> None:
    """A "no ImageNet" skip does not linger once a newer run measured the same model, chip and batch."""
    day1, day2 = "2026-01-01T02:00:00+0000", "2026-01-02T02:00:00+0000"
    skip = {
        "run_id": "day1",
        "test": "acceptance/test_accuracy.py::test_accuracy[resnext50_32x4d-cpu-bs8]",
        "outcome": "skipped",
        "time": day1,
        "host": "vm",
        "kind": "accuracy",
        "model": "resnext50_32x4d",
        "chip": "cpu",
        "batch_size": 8,
        "published_top1": 77.618,
        "published_top5": 93.698,
        "published_source": "torchvision",
        "reason": "accuracy not certified: no ImageNet given; pass --imagenet DIR",
    }
    path = write_records(tmp_path / "r.jsonl", [skip])
    (row,) = load_results(path).latest("accuracy").values()
    assert row.outcome == "skipped"
    md = write_report(load_results(path), tmp_path / "a").markdown.read_text()
    assert "| cpu | 8 | measured here | skipped | 77.618 / 93.698 |" in md  # the columns without data are not shown
    assert "columns without data in any row, not shown: backend, precision, coverage, measured top-1 / top-5" in md
    assert (
        "- cpu bs8: skipped: accuracy not certified: no ImageNet given; pass --imagenet DIR" in md
    )  # the why, under the table
    measured = accuracy_record("day2", "cpu", 77.61, 93.69, when=day2, backend="onnxruntime", precision="fp32")
    write_records(path, [skip, measured, accuracy_record("day2", "cpu", 77.5, 93.6, when=day2, backend="openvino",
                                                         precision="bf16")])
    latest = load_results(path).latest("accuracy")
    ort, ov = (Configuration("resnext50_32x4d", "cpu", backend, precision, "float32", 8, MEASURED)
               for backend, precision in (("onnxruntime", "fp32"), ("openvino", "bf16")))
    assert list(latest) == [ort, ov]
    history = model_history(load_results(path), "resnext50_32x4d")
    assert history.accuracy_series == (ort, ov)


def test_runs_table_names_cann_driver_and_npu_smi_chips(tmp_path: Path) -> None:
    started = "2026-11-20T01:00:00+0000"
    ascend_run = run_record("night1-atlas", started, "atlas-300i", ["Ascend310P3"])
    ascend_run["environment"]["ascend"] = {
        "cann_toolkit": "7.0.RC1", "driver": "23.0.rc3",
        "npu_smi": {"chips": ["310P3"], "devices": [{"device_id": 0, "name": "310P3", "health": "OK"},
                                                    {"device_id": 1, "name": "310P3", "health": "OK"}]},
    }
    broken_run = run_record("night2-atlas", started.replace("20T", "21T"), "atlas-300i", ["Ascend310P3"])
    broken_run["environment"]["ascend"] = {"npu_smi": {"error": "npu-smi info exited with status 8: dcmi init failed"}}
    results = load_results(write_records(tmp_path / "r.jsonl", [
        accuracy_record("night1-atlas", "Ascend310P3", 77.5, 93.6, when=started), ascend_run,
        accuracy_record("night2-atlas", "Ascend310P3", 77.5, 93.6, when=started.replace("20T", "21T")), broken_run,
    ]))
    md = write_report(results, tmp_path / "report").markdown.read_text()
    assert "cann_toolkit 7.0.RC1, driver 23.0.rc3, npu-smi: 310P3 (2 device(s))" in md
    assert "npu-smi: unreadable (npu-smi info exited with status 8: dcmi init failed)" in md


# --------------------------------------------------------------------------------------------
# A results file written before typed records (schema 0), rendered: the bugs issue 17 found in
# such a page (ONNX Runtime, OpenVINO and --predictions runs of one model) stay fixed

V0 = ROOT / "tests" / "data" / "results-v0.jsonl"
MEASURE_ROWS = """<script>
(() => {
  const tables = [...document.querySelectorAll("table")].map(t => ({
    css: t.className,
    headers: [...t.tHead.rows[0].cells].map(c => c.innerText),
    rows: [...t.tBodies[0].rows].map(r => ({height: r.getBoundingClientRect().height,
                                            cells: [...r.cells].map(c => c.innerText),
                                            classes: [...r.cells].map(c => c.className),
                                            colors: [...r.cells].map(c => getComputedStyle(c).backgroundColor)})),
  }));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({tables, text: document.body.innerText});
  document.body.appendChild(out);
})();
</script>"""


@pytest.fixture(scope="module")
def v0_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(load_results(V0), tmp_path_factory.mktemp("v0-report")).html


def rendered(browser: str, page: Path, tmp_path: Path) -> dict[str, Any]:
    """The page as Chromium lays it out: every table's headers, cells and row heights, and its text."""
    probe = tmp_path / "measured.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE_ROWS + "</body>"))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--window-size=1400,3000", "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


def section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_schema_0_results_load_and_report(v0_report: Path) -> None:
    md = v0_report.with_name("report.md").read_text()
    assert "No regressions" in md and "REGRESSION" not in md  # ONNX Runtime then OpenVINO: two series
    accuracy = section(md, "(efficientnet_lite0)\n", "### Throughput")
    for row in ("| cpu | onnxruntime | fp32 | 8 | measured here | pass | 90.62 / 96.88 |",
                "| cpu | openvino | fp32 | 8 | measured here | pass | 90.62 / 96.88 |",
                "| cpu | — | — | — | --predictions | pass | 81.25 / 95.31 | +6.40 / +3.13 | — | — | — | 64 | "
                "74.846 / 92.18 |"):
        assert row in accuracy
    assert "cpu (--predictions): predictions read from /tmp/v0/preds/efficientnet_lite0 (ais_bench txt:64" in accuracy
    throughput = section(md, "(efficientnet_lite0)\n", "### History")
    assert (
        "cpu onnxruntime fp32<br>wall, single-stream, per card" in throughput
        and "cpu openvino fp32<br>wall, single-stream, per card" in throughput
    )
    assert table_rows(md, "efficientnet_lite0")["best"] == ["69.7239 (bs1)", "34.893 (bs4)"]
    history = section(md, "(efficientnet_lite0)\n", "\n## ")
    for header in ("top-1 / top-5<br>cpu onnxruntime fp32 bs8", "top-1 / top-5<br>cpu openvino fp32 bs8",
                   "top-1 / top-5<br>cpu (--predictions)", "best images/s per card<br>cpu onnxruntime fp32",
                   "best images/s per card<br>cpu openvino fp32"):
        assert header in history
    assert "bsNone" not in md and " ? " not in md
    assert "| efficientnet_lite0 | cpu (--predictions) | accuracy | top-1 81.25 top-5 95.31 | passed |" in md
    # the verdicts schema 0 recorded: the failed T4 rule is shown as recorded, per-batch ratios absent
    assert table_rows(md, "se_resnext50_32x4d")["best"][3:] == [
        "1.2573 (PASS, need >= 1.2)",
        "1.3282 (FAIL, need >= 1.6)",
    ]
    assert "no per-batch ratios recorded (results written before schema 1)" in md


def test_the_rendered_page_shows_every_configuration_in_rows_of_one_height(v0_report: Path, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(
            "no chromium, chromium-browser or google-chrome on PATH; install chromium: apt-get install -y chromium"
        )
    page = rendered(browser, v0_report, tmp_path)
    text = page["text"]
    assert "REGRESSION" not in text and "No regressions" in text  # a backend change is a new series
    assert "bsNone" not in text
    by_css: dict[str, list[dict[str, Any]]] = {}
    for table in page["tables"]:
        by_css.setdefault(table["css"], []).append(table)
    summary = by_css["summary"][0]
    configurations = {row["cells"][1] for row in summary["rows"]}
    assert {"cpu onnxruntime", "cpu openvino", "cpu (--predictions)"} <= configurations
    history = by_css["history"][0]
    assert not [h for h in history["headers"] if "?" in h], history["headers"]  # no `cpu ? ?` series
    assert any("cpu (--predictions)" in h for h in history["headers"])
    accuracy = by_css["accuracy"][0]
    assert {row["cells"][1] for row in accuracy["rows"]} >= {"onnxruntime", "openvino"}
    assert any(row["cells"][4] == "--predictions" for row in accuracy["rows"])
    cpu_perf = by_css["perf"][0]  # efficientnet_lite0 comes first: its cpu table shows each backend
    assert [h.split("\n")[0] for h in cpu_perf["headers"][1:]] == ["cpu onnxruntime fp32", "cpu openvino fp32"]
    for table in page["tables"]:
        if table["css"] == "runs":
            continue  # the environment's package lists and command lines wrap by design
        heights = [row["height"] for row in table["rows"]]
        assert max(heights) <= 1.6 * min(heights), (table["css"], heights)


# --------------------------------------------------------------------------------------------
# A results file of schema 1 with issue 14's verdicts (tests/data/README.md says how it was made):
# pass, inconclusive (allowed, and failed by the policy), fail, and not applicable, in one page

V1 = ROOT / "tests" / "data" / "results-v1-verdicts.jsonl"
V1_ROWS = {  # configuration -> coverage, published gate, top-1 drop [95% interval], verdict
    ("Ascend310", "—"): ("subset 1300", "not applicable", "—", "not applicable"),
    ("Ascend310P3", "—"): ("subset 1300", "not applicable", "2.77 [2.01, 3.81]", "fail: paired_top1"),
    ("cpu", "onnxruntime"): ("subset 1300", "not applicable", "0.00 [-0.29, 0.29]", "pass"),
    ("cpu", "openvino bf16"): ("subset 1300", "not applicable", "-0.08 [-0.58, 0.40]",
                               "inconclusive: ~16,289 images needed"),
    ("cpu", "openvino fp32"): ("subset 100", "not applicable", "0.00 [-3.70, 3.70]",
                               "inconclusive (allowed): ~381 images needed"),
}
V1_STATUS = {"fail: paired_top1": "bad", "pass": "ok", "not applicable": "skip",
             "inconclusive: ~16,289 images needed": "inconclusive",
             "inconclusive (allowed): ~381 images needed": "allowed"}


@pytest.fixture(scope="module")
def v1_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = load_results(V1)
    assert not results.warnings and len(results.runs) == 6
    return write_report(results, tmp_path_factory.mktemp("v1-report")).html


def _v1_key(cells: list[str]) -> tuple[str, str]:
    backend = cells[1] if cells[1] != "openvino" else f"openvino {cells[2]}"
    return cells[0], backend


def test_schema_1_verdicts_in_the_accuracy_table(v1_report: Path) -> None:
    md = v1_report.with_name("report.md").read_text()
    accuracy = section(md, "### Accuracy", "### History")
    header = next(line for line in accuracy.splitlines() if line.startswith("| chip |"))
    headers = [h.strip() for h in header.strip("|").split(" | ")]
    at = [headers.index(h) for h in ("coverage", "published gate", "top-1 drop vs torch<br>(points, 95% interval)",
                                      "verdict")]
    rows = {}
    for line in accuracy.splitlines():
        if line.startswith("| ") and not line.startswith("| chip"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[_v1_key(cells)] = tuple(cells[i] for i in at)
    assert rows == V1_ROWS
    # why, under the table: the gates that did not decide, the images an inconclusive one needs
    assert "- cpu openvino fp32 bs8: gate paired_top1 inconclusive (~381 images would decide)" in accuracy
    assert "- cpu openvino bf16 bs8: gate top1_agreement inconclusive (~16,289 images would decide)" in accuracy
    assert ("- Ascend310: gate paired_top1 not checked: no --imagenet images to compute the torch reference on"
            in accuracy)
    assert (
        "- cpu openvino fp32 bs8: top-5 drop vs torch 0.00 points, 95% interval [-3.70, 3.70]: inconclusive" in accuracy
    )
    assert "- cpu onnxruntime fp32 bs8: coverage subset: 1,300 of 50,000 ILSVRC2012 val images" in accuracy
    assert "gate published_top1" not in accuracy  # its "not applicable" is the column's, its reason the coverage's
    history = section(md, "### History", "\n## ")  # a --limit 100 night then a full one: not compared
    assert "89.00 / 97.00 on 100" in history and "83.31 / 95.62 on 1,300" in history and "REGRESSION" not in md
    page = v1_report.read_text()
    assert '<td class="allowed">inconclusive (allowed): ~381 images needed</td>' in page  # the test passed
    assert '<td class="inconclusive">inconclusive: ~16,289 images needed</td>' in page  # the test failed on it
    assert '<td class="r bad">2.77 [2.01, 3.81]</td>' in page and '<td class="skip">not applicable</td>' in page


def test_the_rendered_verdicts_keep_rows_of_one_height_and_colour_inconclusive_apart(
    v1_report: Path, tmp_path: Path
) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip(
            "no chromium, chromium-browser or google-chrome on PATH; install chromium: apt-get install -y chromium"
        )
    page = rendered(browser, v1_report, tmp_path)
    (accuracy,) = [t for t in page["tables"] if t["css"] == "accuracy"]
    verdict = accuracy["headers"].index("verdict")
    colours = {}
    for row in accuracy["rows"]:
        cells = row["cells"]
        expected = V1_ROWS[_v1_key(cells)][3]
        assert cells[verdict] == expected
        status = V1_STATUS[expected]
        assert status in row["classes"][verdict].split()
        colours[status] = row["colors"][verdict]
    # inconclusive and allowed-inconclusive have fills of their own: neither fail's red, nor each other's,
    # nor the unfilled (striped) pass / skip cells
    assert len({colours["inconclusive"], colours["allowed"], colours["bad"], colours["ok"]}) == 4
    assert {colours["inconclusive"], colours["allowed"]}.isdisjoint({colours["skip"], "rgba(0, 0, 0, 0)"})
    for table in page["tables"]:
        if table["css"] == "runs":
            continue
        heights = [row["height"] for row in table["rows"]]
        assert max(heights) <= 1.6 * min(heights), (table["css"], heights)


def test_offline_columns_vendor_figures_and_whole_cards_are_shown_as_recorded(tmp_path: Path) -> None:
    """Two scenarios of one configuration are two columns; the vendor tool's figure and the whole
    card measured together are notes under the table, with the recorded numbers."""
    def perf(scenario: str, ips: float, **extra: Any) -> dict[str, Any]:
        return {"run_id": "r1", "test": f"acceptance/test_perf.py::test_throughput[m-cpu-{scenario}]",
                "outcome": "passed", "phase": "call", "time": "2026-11-30T12:00:00+0000", "host": "vm", "kind": "perf",
                "model": "efficientnet_lite0", "chip": "cpu", "backend": "openvino", "precision": "fp32",
                "input_dtype": "float32", "source": MEASURED, "scenario": scenario, "images_per_s_bs1": ips,
                "scenario_bs1": scenario, "clock_bs1": "wall", "best_batch": 1, "best_images_per_s": ips,
                "best_images_per_s_per_card": ips, "unit": "per_chip", "clock": "wall", "devices_per_card": 1, **extra}

    records = [perf("single-stream", 101.5, vendor_tool="benchmark_app", vendor_batch_size=1,
                    vendor_images_per_s=100.0, vendor_clock="wall", suite_images_per_s=101.5, suite_vs_vendor=1.015),
               perf("offline", 160.25, per_card_measured=301.0,
                    per_card_devices="0,1", per_card_window_s=2.5, vendor_note="not run: no tool here"),
               run_record("r1", "2026-11-30T12:00:00+0000", "vm", ["cpu"])]
    results = load_results(write_records(tmp_path / "results.jsonl", records))
    table = throughput_table(results, "efficientnet_lite0")
    assert table is not None
    assert [c.name for c in table.columns] == ["cpu openvino fp32", "cpu openvino fp32 offline"]
    assert [c.figures for c in table.columns] == [{1: 101.5}, {1: 160.25}]
    md = write_report(results, tmp_path / "report").markdown.read_text()
    assert "cpu openvino fp32 offline<br>wall, offline, per card" in md
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "| cpu offline | perf |" in summary and "| cpu | perf |" in summary  # the scenario tells them apart
    assert ("benchmark_app on the same artifact, bs1, same scenario: 100 images/s (wall); the suite's 101.5 is "
            "1.0150 x the tool's") in md
    assert "vendor tool not run: no tool here" in md
    assert (
        "devices 0,1 measured together at bs1: 301 images/s per card over 2.5 s; one chip x devices_per_card 1: 160.2"
        in md
    )
