"""INT8 (issue 26): calibration apart from the scored images, the quantizers' mechanics on seeded
random small models, the quantized artifact's cache key, the records, the options and the policy.

Real ONNX Runtime sessions on real ONNX files throughout; the models are timm's tiny
``test_efficientnet`` (tests/tiny_workbench.py) so that each test runs in seconds. The end-to-end run
on efficientnet_lite0's real weights and real images is tests/test_int8_real.py (slow).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.backends.quantization import PER_TENSOR, QuantizationError, QuantizationSettings
from harness.records.parts import Quantization
from harness.records.schema import AccuracyRecord, record_from_json
from harness.run import int8
from harness.run.calibration_split import CalibrationOverlap, apart, split
from tests.tiny_workbench import tiny_workbench

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "imagenet-val-1300"


def real_images(root: Path, names: list[str], labels: dict[str, str]) -> Path:
    """A ModelZoo-layout folder of real val JPEGs (``names``), labelled from the shared label file."""
    if not (VAL / "val").is_dir():
        pytest.skip(f"needs the real val images in {VAL} (../shared/datasets)")
    (root / "val").mkdir(parents=True)
    for name in names:
        shutil.copy(VAL / "val" / name, root / "val" / name)
    (root / "val_label.txt").write_text("".join(f"{n} {labels[n]}\n" for n in names))
    return root


@pytest.fixture(scope="module")
def val_labels() -> dict[str, str]:
    if not (VAL / "val_label.txt").is_file():
        pytest.skip(f"needs {VAL / 'val_label.txt'} (../shared/datasets)")
    return dict(line.split() for line in (VAL / "val_label.txt").read_text().splitlines() if line.strip())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny model's float ONNX and a workbench whose int8 runs split 4 of its 8 embedded images off."""
    root = tmp_path_factory.mktemp("int8")
    bench, spec, chip = tiny_workbench(root / "cache")
    bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(bench.policy.int8, calibration_images=4))
    loaded = bench.model(spec)
    return bench, spec, chip, bench.onnx(loaded)


def _quantize(tiny, settings: QuantizationSettings, tmp: Path) -> tuple[onnx.ModelProto, int8.Quantized]:
    bench, spec, chip, onnx_path = tiny
    q = int8.quantize(bench, bench.backend(chip), spec, onnx_path, "embedded", settings)
    return onnx.load(str(q.path)), q


def _weight_dequantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The DequantizeLinear nodes of quantized weights (stored as int8 initializers)."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and any(i.name == n.input[0] and len(i.dims) == 4 for i in model.graph.initializer)]


def test_per_channel_u8s8_is_an_opset13_qdq_model_with_float_logits(tiny, tmp_path: Path) -> None:
    model, q = _quantize(tiny, QuantizationSettings(), tmp_path)
    from harness.backends.onnxruntime.quantize import logits_node, opset_of

    assert opset_of(model) == 13  # per-channel scales need DequantizeLinear's axis
    weights = _weight_dequantizers(model)
    assert weights and all(any(a.name == "axis" for a in n.attribute) for n in weights)
    gemm = logits_node(model)
    assert q.info.excluded_nodes == (gemm,)
    gemm_node = next(n for n in model.graph.node if n.name == gemm)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers.get(gemm_node.input[1]) != "DequantizeLinear"  # its weights stay float
    assert q.info.activation_type == "uint8" and q.info.weight_type == "int8" and q.info.per_channel
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zero_points = {i.name: i.data_type for i in model.graph.initializer}
    assert any(zero_points.get(n.input[2]) == onnx.TensorProto.UINT8 for n in activations if len(n.input) > 2)
    # it loads and runs on ONNX Runtime (an opset-11 per-channel model would fail right here)
    import onnxruntime as ort

    out = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"]).run(
        None, {model.graph.input[0].name: np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert out.shape == (2, 1000) and np.isfinite(out).all()


def test_per_tensor_weights_carry_no_axis_and_quantized_logits_are_excluded_from_nothing(tiny, tmp_path: Path) -> None:
    model, q = _quantize(tiny, QuantizationSettings(scheme=PER_TENSOR, logits="quantized"), tmp_path)
    assert not q.info.per_channel and q.info.excluded_nodes == ()
    weights = _weight_dequantizers(model)
    assert weights and not any(any(a.name == "axis" for a in n.attribute) for n in weights)


def test_keep_float_leaves_the_named_node_unquantized_and_refuses_an_unknown_name(tiny, tmp_path: Path) -> None:
    bench, spec, chip, onnx_path = tiny
    source = onnx.load(str(onnx_path))
    conv = next(n.name for n in source.graph.node if n.op_type == "Conv")
    model, q = _quantize(tiny, QuantizationSettings(keep_float=(conv,)), tmp_path)
    assert conv in q.info.excluded_nodes
    node = next(n for n in model.graph.node if n.name == conv)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(producers.get(i) != "DequantizeLinear" for i in node.input)
    with pytest.raises(QuantizationError, match="no node of"):
        _quantize(tiny, QuantizationSettings(keep_float=("/no/such/Conv",)), tmp_path)


def test_the_quantized_artifact_is_cached_and_keyed_by_every_input(tiny, tmp_path: Path) -> None:
    bench, spec, chip, onnx_path = tiny
    backend = bench.backend(chip)
    conv = next(n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv")
    base = int8.quantize(bench, backend, spec, onnx_path, "embedded", QuantizationSettings())
    again = int8.quantize(bench, backend, spec, onnx_path, "embedded", QuantizationSettings())
    assert again.path == base.path  # from the cache
    others = [QuantizationSettings(scheme=PER_TENSOR), QuantizationSettings(activation_type="int8"),
              QuantizationSettings(weight_type="uint8"), QuantizationSettings(keep_float=(conv,)),
              QuantizationSettings(logits="quantized")]
    paths = {int8.quantize(bench, backend, spec, onnx_path, "embedded", s).path.parent for s in others}
    assert len(paths) == len(others) and base.path.parent not in paths
    # another calibration set (6 images instead of 4) and another source model change it too
    memo = dict(bench.int8_memo)
    bench.int8_memo.clear()
    bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(bench.policy.int8, calibration_images=3))
    try:
        other_calibration = int8.quantize(bench, backend, spec, onnx_path, "embedded", QuantizationSettings())
        assert other_calibration.split.digest != base.split.digest
        assert other_calibration.path.parent != base.path.parent
    finally:
        bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(bench.policy.int8,
                                                                                  calibration_images=4))
        bench.int8_memo.clear()
        bench.int8_memo.update(memo)
    changed = tmp_path / "other.onnx"
    model = onnx.load(str(onnx_path))
    model.doc_string = "another model"
    onnx.save(model, str(changed))
    assert int8.quantize(bench, backend, spec, changed, "embedded", QuantizationSettings()).path.parent != \
        base.path.parent


def test_an_int8_evaluation_scores_only_images_it_did_not_calibrate_on(tiny) -> None:
    bench, spec, chip, _ = tiny
    ev = bench.evaluate(spec, dataclasses.replace(chip, precision="int8"), 4, "embedded")
    found = int8.calibration_split(bench, "embedded")
    assert ev.accuracy.count == 4 == len(found.scored) and len(found.calibration) == 4
    assert not set(found.scored.names) & set(found.calibration.names)
    q = ev.quantization
    assert q is not None and q["calibration_overlap"] == 0 and q["calibration_images"] == 4
    assert q["quantization"]["tool"] == "onnxruntime.quantization" and isinstance(q["logit_ties"], int)
    assert ev.environment["quantization"]["quantization"]["scheme"] == "qdq-per-channel"  # perf records say it too


def test_a_split_is_deterministic_disjoint_by_content_and_holds_out_duplicates(tmp_path: Path, val_labels) -> None:
    from harness import data as data_mod

    names = sorted(val_labels)[:10]
    root = real_images(tmp_path / "data", names, val_labels)
    # a scored image that is a calibration image under another name is left out, never scored
    first = split(data_mod.list_dataset(root), 4)
    dup = first.calibration.names[0]
    copy = "ILSVRC2012_val_99999999.JPEG"
    shutil.copy(root / "val" / dup, root / "val" / copy)
    with open(root / "val_label.txt", "a") as f:
        f.write(f"{copy} {val_labels[dup]}\n")
    listing = data_mod.list_dataset(root)
    a, b = split(listing, 4), split(listing, 4)
    assert a == b and len(a.calibration) == 4 and a.overlap == 0
    assert copy not in a.scored.names and dup not in a.scored.names
    assert not set(a.calibration.names) & set(a.scored.names)
    assert len(a.scored) == 11 - 4 - 1 and "left out" in a.source


def test_given_calibration_images_that_are_also_scored_are_refused(tmp_path: Path, val_labels) -> None:
    from harness import data as data_mod

    names = sorted(val_labels)[:8]
    scored = real_images(tmp_path / "scored", names[:5], val_labels)
    calib = real_images(tmp_path / "calib", names[5:], val_labels)
    assert apart(data_mod.list_dataset(calib), data_mod.list_dataset(scored)).overlap == 0
    # the same photo under another name: identity is the file content, not the name
    renamed = "ILSVRC2012_val_99999998.JPEG"
    shutil.copy(scored / "val" / names[0], calib / "val" / renamed)
    with open(calib / "val_label.txt", "a") as f:
        f.write(f"{renamed} {val_labels[names[0]]}\n")
    with pytest.raises(CalibrationOverlap, match=r"calibration_overlap = 1: .*" + names[0]):
        apart(data_mod.list_dataset(calib), data_mod.list_dataset(scored))


def test_the_quantization_part_round_trips_and_old_records_read_without_it() -> None:
    figures = {"calibration_images": 300, "calibration_source": "split of X: 300 of 1300 images by content hash",
               "calibration_digest": "ab" * 32, "calibration_overlap": 0, "logit_ties": 2,
               "quantization": {"tool": "onnxruntime.quantization", "version": "1.32.0", "scheme": "qdq-per-channel",
                                "activation_type": "uint8", "weight_type": "int8", "per_channel": True,
                                "excluded_nodes": ["/a/Conv", "/classifier/Gemm"], "seconds": 41.9}}
    part = Quantization.of(figures)
    record = AccuracyRecord(quantization=part)
    data = record.to_json()
    assert data["excluded_nodes"] == "/a/Conv,/classifier/Gemm" and data["per_channel"] is True
    assert data["activation_type"] == "uint8" and data["logit_ties"] == 2 and data["calibration_overlap"] == 0
    back = record_from_json(data)
    assert isinstance(back, AccuracyRecord) and back.quantization == part
    old = record_from_json({"schema_version": 1, "kind": "accuracy", "model": "m", "top1": 70.0})
    assert isinstance(old, AccuracyRecord) and old.quantization == Quantization()
    assert Quantization.of(None) == Quantization()


def test_options_precision_int8_keep_float_and_calibration(tmp_path: Path) -> None:
    from harness.options import CALIBRATION, KEEP_FLOAT, PRECISION

    parser = argparse.ArgumentParser(exit_on_error=False)
    for option in (CALIBRATION, KEEP_FLOAT, PRECISION):
        option.add_to(parser)
    args = parser.parse_args(["--precision", "int8", "--keep-float", "/a/Conv, /b/Conv", "--calibration",
                              str(tmp_path)])
    assert args.precision == "int8" and args.keep_float == ("/a/Conv", "/b/Conv") and args.calibration == tmp_path
    with pytest.raises(argparse.ArgumentError, match="calibration images"):
        parser.parse_args(["--calibration", str(tmp_path / "absent")])


def test_policy_judges_int8_agreement_by_its_own_minimum_and_ties_are_counted() -> None:
    from harness.specs import load_policy

    policy = load_policy()
    assert policy.for_precision("fp32") is policy
    assert policy.for_precision("int8").accuracy.agreement_min_top1 == policy.int8.agreement_min_top1 < 99
    logits = np.array([[1.0, 2.0, 2.0], [3.0, 1.0, 2.0], [0.5, 0.5, 0.1]], np.float32)
    assert int8.logit_ties(logits) == 2
