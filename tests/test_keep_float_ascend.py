"""The way back to float on Ascend (issue 26): AMCT's accuracy-based auto calibration, contract-tested.

No AMCT, CANN or NPU exists here. harness/backends/ascend_tools/amct_auto.py drives AMCT's Python API in a
child process; the TEST DOUBLE tests/doubles/amct_onnx/ (a fake ``amct_onnx`` package) checks our side of
that contract (the evaluator's base class and methods, AMCT_SO sessions, at least batch_num calibration
batches, skip_layers) and rolls back layers in graph order with ONNX Runtime QDQ models, not AMCT's
search. The evaluator and the history parser run on real ONNX files and real ONNX Runtime sessions.
Nothing measured here is an Ascend or AMCT figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.__main__ import main as harness_main
from harness.backends.ascend_tools import amct, amct_auto
from harness.backends.base import BackendUnavailable
from harness.backends.quantization import QuantizationError
from harness.data import normalize
from harness.specs import load_policy
from tests.doubles import DOUBLES, ascend_env

SIZE, CLASSES = 8, 10
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONV1, CONV2, CONV3, FC = "/stem/Conv", "/block/conv_pw/Conv", "/block/conv_pwl/Conv", "/classifier/Gemm"
VAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenet-val-1300"


def _model(path: Path) -> Path:
    """conv1 writes one channel of ~2000 beside seven of a few units (one uint8 activation range for the
    tensor, a step of ~8, crushes the seven); conv2 ignores that channel (float is fine), conv3 and the
    classifier follow."""
    rng = np.random.default_rng(0)
    b1 = np.zeros(8, np.float32)
    b1[0] = 2000.0
    w2 = rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32)
    w2[:, 0] = 0.0
    arrays = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "b1": b1, "w2": w2,
              "b2": np.zeros(8, np.float32), "w3": rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32),
              "b3": np.zeros(8, np.float32), "fc": rng.normal(0, 1.0, (CLASSES, 8)).astype(np.float32),
              "fcb": np.zeros(CLASSES, np.float32)}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name=CONV1, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"], name="/stem/act/Relu"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name=CONV2),
        helper.make_node("Relu", ["c2"], ["a2"], name="/block/act/Relu"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], name=CONV3),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name=FC, transB=1),
    ]
    graph = helper.make_graph(nodes, "amct_auto_test",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The model, 16 calibration images written as amct.py writes them, 400 scored images whose labels are
    the float model's top-1 (any drop is the quantization's)."""
    root = tmp_path_factory.mktemp("amct_auto")
    source = _model(root / "model.onnx")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2016, 3, SIZE, SIZE), dtype=np.uint8)
    calibration = normalize(pixels[:16], MEAN, STD)
    amct.write_calibration([calibration], root / "calibration", (3, SIZE, SIZE))
    candidates = pixels[16:]
    evaluator = amct_auto.Evaluator("image", root / "calibration", candidates, np.zeros(len(candidates), np.int64),
                                    MEAN, STD, 1.0, threads=1)
    logits = np.sort(evaluator.logits(str(source)), axis=1)
    # 400 scored (one image: 0.25 point), those the float model tells apart most clearly: a quantization that
    # is sound (conv3's) moves none of them, a crushed one moves many
    chosen = np.sort(np.argsort(logits[:, -2] - logits[:, -1])[:400])
    scored = candidates[chosen]
    labels = amct_auto.Evaluator("image", root / "calibration", scored, np.zeros(400, np.int64), MEAN, STD, 1.0,
                                 threads=1).logits(str(source)).argmax(axis=1)
    return source, calibration, scored, labels, root


def _tolerance() -> float:
    return float(load_policy().for_precision("int8").accuracy.tolerance.points)


def test_the_evaluator_calibrates_scores_top1_and_accepts_a_drop_within_the_tolerance(tiny, monkeypatch) -> None:
    import onnxruntime as ort

    source, calibration, scored, labels, root = tiny
    tolerance = _tolerance()
    evaluator = amct_auto.Evaluator("image", root / "calibration", scored, labels, MEAN, STD, tolerance, threads=1)
    fed: list[np.ndarray] = []
    run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, out, feed, opts=None: (
        fed.append(feed["image"]), run(self, out, feed, opts))[1])
    evaluator.calibration(str(source))
    assert len(fed) == 16 and all(f.shape == (1, 3, SIZE, SIZE) for f in fed)  # one .bin image per batch
    np.testing.assert_array_equal(np.concatenate(fed), calibration)  # the normalized float32 images, in order
    monkeypatch.setattr(ort.InferenceSession, "run", run)
    assert evaluator.evaluate(str(source)) == 1.0  # the labels are the float model's top-1
    wrong = amct_auto.Evaluator("image", root / "calibration", scored, (labels + 1) % CLASSES, MEAN, STD, tolerance)
    assert wrong.evaluate(str(source)) == 0.0
    step = tolerance / 100.0
    assert evaluator.metric_eval(0.8, 0.8) == (True, 0.0)  # AMCT refuses an evaluator that rejects this
    accepted, loss = evaluator.metric_eval(0.8, 0.8 - step)
    assert accepted and loss == pytest.approx(step)
    assert evaluator.metric_eval(0.8, 0.8 - 1.5 * step)[0] is False


def test_the_history_is_json_objects_one_after_another_and_names_the_rolled_back_nodes(tmp_path: Path) -> None:
    records = [{"roll_back_config": {CONV2: True, CONV1: True}, "metric_eval": [False, 0.25]},
               {"roll_back_config": {CONV2: False, CONV1: True}, "metric_eval": [False, 0.2]},
               {"roll_back_config": {CONV2: False, CONV1: False}, "metric_eval": [True, 0.0]}]
    path = tmp_path / "accuracy_based_auto_calibration_record.json"
    path.write_text("".join(json.dumps(r, indent=4, separators=(",", ":")) for r in records))  # as AMCT writes it
    parsed = amct_auto.history(path)
    assert parsed == records
    assert amct_auto.rolled_back(parsed, [CONV1, CONV2, CONV3]) == (CONV1, CONV2)  # the last record, graph order
    assert amct_auto.rolled_back(parsed[:1]) == () and amct_auto.rolled_back([]) == ()
    path.write_text(json.dumps(records[0]) + "{ not json")
    with pytest.raises(QuantizationError, match="history format"):
        amct_auto.history(path)
    path.write_text(json.dumps({"metric_eval": [True, 0.0]}))
    with pytest.raises(QuantizationError, match="roll_back_config"):
        amct_auto.history(path)


def test_auto_calibration_through_the_double_rolls_back_the_broken_layers(tiny, monkeypatch, tmp_path: Path) -> None:
    source, calibration, scored, labels, _ = tiny
    log = tmp_path / "amct_calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", ascend_env()["PYTHONPATH"])
    monkeypatch.setenv("FAKE_AMCT_LOG", str(log))
    tolerance = _tolerance()
    work = tmp_path / "work"
    auto = amct_auto.run(source, [calibration[:10], calibration[10:]], scored, labels, MEAN, STD, [FC], tolerance,
                         work, threads=1)
    config_call, calibration_call = (json.loads(line) for line in log.read_text().splitlines())
    assert config_call["api"] == "create_quant_config" and config_call["skip_layers"] == [FC]
    assert config_call["batch_num"] == 16 and config_call["activation_offset"] is True  # one image per batch
    assert calibration_call["save_dir"] == amct_auto.SAVE_DIR and calibration_call["strategy"] == "BinarySearch"
    # quantized whole, conv1's one range crushes conv2's input: the double rolls back conv1, then conv2
    assert auto.rolled_back == (CONV1, CONV2) and auto.steps == 3
    assert auto.fake_quant == work / "result" / f"model{amct.FAKE_QUANT_SUFFIX}" and auto.fake_quant.is_file()
    assert auto.top1 is not None and auto.top1 >= 100.0 - tolerance
    assert auto.logits is not None and auto.logits.shape == (len(scored), CLASSES)
    tops = [e["top1"] for e in auto.evaluations]
    assert auto.evaluations[0]["model"] == amct.MODEL_FILE and tops[0] == 100.0  # AMCT scores the float model first
    assert tops[1] < 100.0 - tolerance  # then the fully quantized one, which fails
    history = amct_auto.history(work / amct_auto.HISTORY_FILE)
    assert [r["metric_eval"][0] for r in history] == [False, False, True]
    assert {amct_auto.RANKING_FILE, amct_auto.FINAL_CONFIG_FILE} <= {p.name for p in (work / "result").iterdir()}


def test_a_missing_amct_python_package_is_unavailable_with_the_install_hint(tiny, monkeypatch, tmp_path) -> None:
    source, calibration, scored, labels, _ = tiny
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with pytest.raises(BackendUnavailable) as caught:
        amct_auto.run(source, [calibration], scored, labels, MEAN, STD, [FC], 1.0, tmp_path / "work", threads=1)
    assert "amct_onnx" in str(caught.value) and amct.INSTALL_HINT in str(caught.value)


def _imagenet(root: Path, count: int) -> Path:
    """``count`` real val images with their labels."""
    (root / "val").mkdir(parents=True)
    lines = (VAL / "val_label.txt").read_text().splitlines()[:count]
    for line in lines:
        shutil.copyfile(VAL / "val" / line.split()[0], root / "val" / line.split()[0])
    (root / "val_label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``python -m harness keep-float --model tiny``: timm's tiny test_efficientnet (random weights, 32 x 32)
    as a model of the registry, 4 of 12 real images calibrating, a private cache."""
    if not (VAL / "val_label.txt").is_file():
        pytest.skip(f"no real ImageNet images at {VAL}")
    import harness.run.workbench as workbench_mod
    import harness.specs as specs_mod
    from tests.tiny_workbench import tiny_workbench

    _, spec, _ = tiny_workbench(tmp_path / "unused")
    models, policy, config = specs_mod.load_models(), specs_mod.load_policy(), workbench_mod.RunConfig
    policy = dataclasses.replace(policy, int8=dataclasses.replace(policy.int8, calibration_images=4,
                                                                  amct_fake_quant_min_top1=0.0))
    monkeypatch.setattr(specs_mod, "load_models", lambda *a, **k: {**models, "tiny": spec})
    monkeypatch.setattr(specs_mod, "load_policy", lambda *a, **k: policy)
    monkeypatch.setattr(workbench_mod, "RunConfig", lambda **kw: config(**kw, weights="random", embedded_images=8))
    return ["keep-float", "--model", "tiny", "--imagenet", str(_imagenet(tmp_path / "imagenet", 12)),
            "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--workers", "1"]


def test_the_command_runs_amct_auto_calibration_and_judges_the_fake_quant_models(tiny_command, monkeypatch,
                                                                                  capsys) -> None:
    for key, value in ascend_env().items():
        monkeypatch.setenv(key, value)
    code = harness_main([*tiny_command, "--backend", "ascend"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "tiny on ascend" in out and "  start: " in out and "  amct: " in out
    assert "AMCT rolled back: " in out and "amct_onnx calibration (fake-quant on ONNX Runtime)" in out
    assert "fake-quant ONNX of each model on ONNX Runtime CPU" in out and "speed not measured" in out
    assert "images/s" not in out
    assert (out.strip().splitlines()[-1].startswith("--keep-float") if code == 0 else "no setting found" in out)


def test_the_command_without_amct_exits_3_with_the_install_hint(tiny_command, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if Path(p).resolve() != (DOUBLES / "bin").resolve()))
    assert harness_main([*tiny_command, "--backend", "ascend"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert "unavailable:" in err[-1] and "`amct_onnx` is not on PATH" in err[-1] and "pip3 install amct_onnx" in err[-1]
