"""The results schema (harness.records.schema): every record kind round-trips through its JSON line,
schema-0 files written before typed records still load (tests/data/results-v0.jsonl: real runs of
the suite as it was, see tests/data/README.md), newer versions and malformed fields are refused with
the reason, and the test's record writer keeps JUnit and the record in step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from harness.pytest.fixtures import RecordWriter
from harness.records.parts import (
    FAIL,
    MEASURED,
    MEASUREMENTS,
    PASS,
    PREDICTIONS,
    Configuration,
    Judgement,
    ParityFigures,
    Part,
    PredictionsInput,
    Published,
    PytestFacts,
    Reference,
    SchemaError,
    Scores,
    Setup,
    batch_key,
)
from harness.records.perf_parts import (
    POINT_FIELDS,
    Best,
    Origin,
    PerfPoint,
    RatioResult,
    RatioRule,
    VendorComparison,
    merge_points,
)
from harness.records.results import load_results
from harness.records.schema import (
    SCHEMA_KEY,
    SCHEMA_VERSION,
    TEST_KINDS,
    AccuracyRecord,
    AgreementRecord,
    ConversionRecord,
    PerfRatioRecord,
    PerfRecord,
    ResultRecord,
    RunRecord,
    record_from_json,
)

V0 = Path(__file__).parent / "data" / "results-v0.jsonl"
META = PytestFacts(run_id="r1", test="acceptance/test_x.py::test_x[m-cpu]", outcome="passed", phase="call",
                duration_s=1.5, time="2026-11-30T09:44:44+0000", host="vm")
CONFIG = Configuration(model="efficientnet_lite0", chip="cpu", backend="onnxruntime", precision="fp32",
                       input_dtype="float32", batch_size=8, source=MEASURED)
SETUP = Setup(
    backend_version="1.32.0",
    environment={"threads": 2, "providers": ["CPUExecutionProvider"], "device_id": None},
    device_id=0,
    decode="exact",
    dataset="/data/val",
    dataset_key="5981",
    label_source="val_label.txt: /data/x",
    preprocess="resize_crop resize=256",
    ring_images=64,
    weights="pretrained",
    weights_source="package:x.pth",
    weights_sha256="5793",
)
POINTS = (PerfPoint(1, images_per_s=69.7239, wall_images_per_s=69.7239, latency_ms_mean=14.3, latency_ms_median=13.5,
                    latency_ms_p90=21.7, latency_ms_p99=24.1, latency_cv_percent=35.771, runs=70, seconds=1.004,
                    computed_top1_agreement=100.0, computed_max_rel_diff=0.0, ratio=2.1),
          PerfPoint(16, images_per_s=80.5, device_images_per_s=90.25, runs=12, scenario="offline", clock="wall",
                    streams=2, requests=4))


def every_kind() -> list[ResultRecord]:
    """One record of each kind with every part filled in."""
    judged = Judgement(gates={"top1": PASS, "top5": "not checked: no published top-5"}, verdict=PASS)
    accuracy = dict(meta=META, config=CONFIG, setup=SETUP, judgement=judged,
                    published=Published(74.846, 92.18, "timm"), scores=Scores(64, 0, 0, 90.625, 96.875),
                    reference=Reference(90.625, 96.875, 0.0, 0.0, 100.0, 9.06e-06),
                    predictions=PredictionsInput("predictions /p", "ais_bench txt:64", "/l.txt", 0, "device0_0", "n"),
                    extra={"a_future_field": [1, 2]})
    sweep = dataclasses.replace(CONFIG, batch_size=None, scenario="offline")
    return [
        AccuracyRecord(**accuracy),  # type: ignore[arg-type]
        AgreementRecord(**accuracy),  # type: ignore[arg-type]
        ConversionRecord(
            meta=META,
            config=Configuration(model="resnest50", source=MEASURED),
            setup=SETUP,
            opset=11,
            images=32,
            onnx_sha256_prefix="7e79",
            parity=ParityFigures(32, 1e-5, 1e-6, 1.3e-5, 0.99999, 100.0),
            judgement=Judgement(gates={"max_rel_diff": PASS}, verdict=PASS),
        ),
        PerfRecord(
            meta=META,
            config=sweep,
            setup=SETUP,
            origin=Origin("measured here"),
            points=POINTS,
            best=Best(16, 80.5, 80.5, "per_chip", "wall", 1, 300.5, "0,1,2,3", 2.5),
            vendor=VendorComparison(
                "benchmark_app", "2026.4", "benchmark_app -m m.xml", 16, 81.0, "wall", 2, 4, 80.5, 0.9938
            ),
            saved_baseline="/b/cpu.csv",
            judgement=Judgement(gates={"computed": PASS}, verdict=PASS),
        ),
        PerfRatioRecord(
            meta=dataclasses.replace(META, outcome="failed", reason="FAIL ratio_vs_T4"),
            config=dataclasses.replace(sweep, source=MEASUREMENTS),
            setup=SETUP,
            rule=RatioRule("ratio_vs_T4", "T4", 1.6, "seed guides"),
            origin=Origin("/m.csv", "not applicable"),
            points=POINTS,
            result=RatioResult(
                1.328193, 16, 1400.0, 64, 1054.064, "003.txt", "T4 column", "device_compute", "FAIL ratio_vs_T4: ..."
            ),
            named_ratio=1.3282,
            judgement=Judgement(gates={"ratio_vs_T4": FAIL}, verdict=FAIL),
        ),
    ]


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: r.kind)
def test_each_kind_round_trips_through_its_json_line(record: ResultRecord) -> None:
    line = record.to_json()
    assert line[SCHEMA_KEY] == SCHEMA_VERSION and line["kind"] == record.kind
    assert json.loads(json.dumps(line)) == line  # plain JSON
    again = record_from_json(json.loads(json.dumps(line)))
    assert type(again) is type(record) and again == record
    assert again.to_json() == line
    assert None not in [v for k, v in line.items() if not k.startswith("env_")]  # not recorded: absent, never null


def test_the_run_record_round_trips() -> None:
    run = RunRecord(run_id="r1", started="2026-11-30T09:44:37+0000", finished="2026-11-30T09:44:44+0000", exit_status=1,
                    args=("-m", "perf"), chips=("cpu",), outcomes={"passed": 2}, environment={"host": "vm", "cores": 2},
                    extra={"later": True})
    assert record_from_json(json.loads(json.dumps(run.to_json()))) == run


def test_keys_are_spelled_once_and_flat() -> None:
    """No two parts of a kind share a key; per-batch keys come from batch_key alone; prefixed families."""
    for record in every_kind():
        keys: list[str] = []
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if isinstance(value, Part):
                keys += [k for k in (g.name for g in dataclasses.fields(value)) if k not in ("environment", "gates")]
            elif f.name not in ("extra", "points"):
                keys.append(f.name)
        assert len(keys) == len(set(keys)), f"{record.kind}: a key is in two parts"
        assert not [k for k in keys if k.startswith(("env_", "gate_"))]
    perf = every_kind()[3].to_json()
    assert perf[batch_key("images_per_s", 16)] == 80.5 and "images_per_s_bs16" in perf
    assert perf["wall_images_per_s_bs1"] == 69.7239 and "device_images_per_s_bs1" not in perf
    assert perf["env_threads"] == 2 and perf["env_device_id"] is None and perf["gate_computed"] == PASS
    ratio = every_kind()[4].to_json()
    assert ratio["ratio_vs_T4"] == 1.3282 and ratio["ratio"] == 1.328193 and ratio["ratio_bs1"] == 2.1
    assert set(POINT_FIELDS) >= {"images_per_s", "latency_ms_p99", "computed_top1_agreement", "ratio"}


def test_merge_points_keeps_every_known_figure() -> None:
    merged = merge_points([PerfPoint(4, images_per_s=10.0)], [PerfPoint(1, ratio=2.0), PerfPoint(4, ratio=1.5)])
    assert merged == (PerfPoint(1, ratio=2.0), PerfPoint(4, images_per_s=10.0, ratio=1.5))


# --------------------------------------------------------------------------------------------
# Schema 0


def v0_lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in V0.read_text().splitlines() if line.strip()]


def test_schema_0_lines_load_with_every_key_they_had() -> None:
    """Every key and value of a schema-0 line is in its schema-1 line: the JUnit property names
    nightly consumers parse are the same names."""
    lines = v0_lines()
    assert all(SCHEMA_KEY not in line for line in lines) and {line["kind"] for line in lines} == {*TEST_KINDS, "run"}
    for line in lines:
        record = record_from_json(line)
        upgraded = record.to_json()
        missing = {k: v for k, v in line.items() if upgraded.get(k, object()) != v}
        assert not missing, f"{line['kind']} lost or changed {missing}"
        assert record_from_json(upgraded) == record


def test_schema_0_gets_what_it_left_implicit() -> None:
    records = [record_from_json(line) for line in v0_lines()]
    tests = [r for r in records if isinstance(r, ResultRecord)]
    by_test = {(r.meta.test, r.config.backend, r.config.source, r.meta.run_id): r for r in tests}
    sources = {(r.kind, r.config.source) for r in tests}
    assert {("accuracy", MEASURED), ("accuracy", PREDICTIONS), ("perf", MEASURED), ("perf", MEASUREMENTS),
            ("perf_ratio", MEASUREMENTS), ("conversion", MEASURED), ("agreement", MEASURED)} <= sources
    backends = {r.config.backend for r in tests if r.kind == "perf" and r.config.source == MEASURED}
    assert backends == {"onnxruntime", "openvino"}
    measured = [r for r in tests if r.config.source == MEASURED and r.config.backend]
    assert measured and all(r.config.input_dtype == "float32" for r in measured)
    predictions = next(r for r in tests if r.config.source == PREDICTIONS)
    assert isinstance(predictions, AccuracyRecord) and predictions.config.batch_size is None
    assert predictions.predictions.figures_from.startswith("predictions ")  # type: ignore[union-attr]
    assert predictions.judgement.gates["top1_agreement"].startswith("not checked")
    verdicts = {(r.kind, r.outcome, r.verdict) for r in tests}
    assert ("perf_ratio", "failed", FAIL) in verdicts and ("accuracy", "skipped", None) in verdicts
    assert all(r.verdict == PASS for r in tests if r.outcome == "passed")
    assert len(by_test) == len(tests)


def test_the_schema_0_file_loads_without_a_warning() -> None:
    results = load_results(V0)
    assert not results.warnings and results.malformed_lines == 0
    assert len(results.runs) == 8 and all(run.complete for run in results.runs)
    assert results.models() == ["efficientnet_lite0", "resnext50_32x4d", "se_resnext50_32x4d"]


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(("line", "message"), [
    ({"kind": "accuracy", SCHEMA_KEY: 2}, "written with results schema version 2; this harness reads versions 0 to 1"),
    ({"kind": "accuracy", SCHEMA_KEY: "1"}, "schema_version must be a whole number"),
    ({"kind": "bogus"}, "unknown record kind 'bogus'; expected one of accuracy, agreement"),
    ({"kind": "accuracy", "top1": "high"}, r"Scores.top1: expected float, found str 'high'"),
    ({"kind": "perf", "images_per_s_bs8": "fast"}, r"PerfRecord.images_per_s_bs8: expected float"),
    ({"kind": "perf", "best_batch": 1.5}, r"Best.best_batch: expected int, found float"),
    ({"kind": "run", "args": "-m perf"}, r"RunRecord.args: expected a list"),
])
def test_unreadable_lines_say_why(line: dict[str, Any], message: str) -> None:
    with pytest.raises(
        SchemaError, match=message.replace("(", r"\(").replace(")", r"\)") if "\\" not in message else message
    ):
        record_from_json(line)


def test_a_line_of_a_newer_schema_is_a_warning_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    v0 = V0.read_text().splitlines()
    path.write_text("\n".join([v0[0], json.dumps({**json.loads(v0[1]), SCHEMA_KEY: 7}), *v0[2:]]) + "\n")
    results = load_results(path)
    assert results.malformed_lines == 1
    assert results.warnings[0].startswith(f"{path}:2: written with results schema version 7")


# --------------------------------------------------------------------------------------------
# The test's record writer


class Node:
    def __init__(self) -> None:
        self.user_properties: list[tuple[str, object]] = []


def test_the_writer_keeps_junit_in_step_with_the_record() -> None:
    """Each property once; what a test knew before it stopped is recorded; unknown fields are refused."""
    node = Node()
    writer = RecordWriter(node)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="record.start"):
        writer.update(verdict=PASS)
    config = dataclasses.replace(CONFIG, precision=None)
    writer.start(AccuracyRecord(config=config, published=Published(74.846, 92.18, "timm")))
    assert dict(node.user_properties) == {"kind": "accuracy", "model": "efficientnet_lite0", "chip": "cpu",
                                          "backend": "onnxruntime", "input_dtype": "float32", "batch_size": 8,
                                          "source": MEASURED, "published_top1": 74.846, "published_top5": 92.18,
                                          "published_source": "timm"}
    writer.update(config=CONFIG, scores=Scores(images=64, top1=90.625))
    names = [k for k, _ in node.user_properties]
    assert len(names) == len(set(names)) and dict(node.user_properties)["precision"] == "fp32"
    line = {SCHEMA_KEY: SCHEMA_VERSION, **META.properties(), **dict(node.user_properties)}  # as the recorder writes it
    assert record_from_json(line) == dataclasses.replace(
        writer.current, meta=META)
    with pytest.raises(TypeError):
        writer.update(top_one=90.0)


@pytest.mark.parametrize("kind", ["perf", "perf_ratio"])
def test_a_perf_line_from_before_scenarios_reads_as_single_stream(kind: str) -> None:
    """Every perf figure before --scenario existed was measured one request at a time."""
    line = {SCHEMA_KEY: SCHEMA_VERSION, "kind": kind, "model": "m", "chip": "cpu", "images_per_s_bs1": 10.0}
    record = record_from_json(line)
    assert record.config.scenario == "single-stream"
    offline = record_from_json({**line, "scenario": "offline"})
    assert offline.config.scenario == "offline"
    accuracy = record_from_json({**line, "kind": "accuracy"})
    assert accuracy.config.scenario is None  # only perf records have a scenario
