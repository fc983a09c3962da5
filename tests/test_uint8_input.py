"""uint8-input models: normalization folded into the graph, bit-identical to the float path.

The structure and the error paths are checked on a tiny graph; parity with the float path is
shown on real validation images for EfficientNet-Lite0 (real weights, fast) and for the seed
architectures (slow): every seed family once, the certification suite's own export (seeded random
weights with BatchNorm calibrated on the embedded images: `pytest -m conversion`'s ONNX, from the
session's cache where it already made it); resnext101_32x8d is resnext50_32x4d's graph, deeper and
wider: the same operators behind the same folded prefix, at three times the cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_backends import CLASSES, SHAPE, tiny_onnx

from harness import data
from harness.backends.base import InferenceError
from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.cache import ArtifactCache
from harness.judge.metrics import parity
from harness.model.export import export_onnx, onnx_input_output
from harness.model.uint8_input import (
    METADATA_KEY,
    Uint8InputError,
    cached_uint8_onnx,
    make_uint8_input,
    uint8_input_model,
)
from harness.model.weights import load_model
from harness.specs import CompileTarget, ModelSpec, load_models, load_policy
from tests.conftest import VAL1300 as VAL_1300

RecordProperty = Callable[[str, object], None]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEED_MODELS = ("resnext50_32x4d", "resnest50", "se_resnext50_32x4d", "ghostnet_100")
REAL_IMAGES = 32
BATCH = 8


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    weight = np.random.default_rng(0).normal(size=(CLASSES, 3)).astype(np.float32)
    return tiny_onnx(tmp_path / "m.onnx", weight)


def _target(shape: tuple[int, int, int] = SHAPE, batch_size: int = 4) -> CompileTarget:
    return CompileTarget(chip="cpu", batch_size=batch_size, input_shape=shape, input_name="input")


# --------------------------------------------------------------------------------------------
# Structure


def test_input_becomes_uint8_with_name_and_dynamic_batch_kept(tiny: Path, tmp_path: Path) -> None:
    out = make_uint8_input(tiny, tmp_path / "u8" / "m.onnx", MEAN, STD)
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    (image,) = model.graph.input
    assert image.name == "input" and image.type.tensor_type.elem_type == TensorProto.UINT8
    assert onnx_input_output(out) == ("input", "output", ["batch", *SHAPE])
    assert [n.op_type for n in model.graph.node[:4]] == ["Cast", "Div", "Sub", "Div"]
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [11]
    assert "(x / 255 - mean) / std" in {p.key: p.value for p in model.metadata_props}[METADATA_KEY]
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]


def test_same_float32_arithmetic_as_harness_data_normalize(tiny: Path, tmp_path: Path) -> None:
    out = make_uint8_input(tiny, tmp_path / "u8.onnx", MEAN, STD)
    raw = np.random.default_rng(3).integers(0, 256, size=(4, *SHAPE), dtype=np.uint8)
    raw[0] = 0
    raw[1] = 255
    backend = OnnxRuntimeBackend(threads=1)
    with (
        backend.open(tiny, _target(), num_classes=CLASSES) as floats,
        backend.open(out, _target(), num_classes=CLASSES) as u8,
    ):
        assert u8.input_dtype == np.uint8
        np.testing.assert_array_equal(u8.infer(raw), floats.infer(data.normalize(raw, MEAN, STD)))
        with pytest.raises(InferenceError, match="expected uint8 input, got float32"):
            u8.infer(data.normalize(raw, MEAN, STD))


def test_cached_conversion_is_made_once(tiny: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    first = cached_uint8_onnx(cache, tiny, MEAN, STD)
    mtime = first.stat().st_mtime_ns
    assert cached_uint8_onnx(cache, tiny, MEAN, STD) == first and first.stat().st_mtime_ns == mtime
    assert cached_uint8_onnx(cache, tiny, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) != first


@pytest.mark.parametrize(
    "mean, std, message",
    [
        ((0.5, 0.5), STD, r"mean: expected 3 finite numbers.*found \[0.5, 0.5\]"),
        (MEAN, (0.2, 0.0, 0.2), r"std: expected 3 positive numbers"),
        ((0.5, float("nan"), 0.5), STD, "mean: expected 3 finite numbers"),
    ],
)
def test_bad_normalization_is_refused(
    tiny: Path, mean: tuple[float, ...], std: tuple[float, ...], message: str
) -> None:
    with pytest.raises(Uint8InputError, match=message):
        uint8_input_model(onnx.load(str(tiny)), mean, std)


def test_models_that_are_not_float_image_classifiers_are_refused(tiny: Path) -> None:
    converted = uint8_input_model(onnx.load(str(tiny)), MEAN, STD)
    with pytest.raises(Uint8InputError, match=r"input 'input': expected a FLOAT \(N, 3, H, W\) tensor, found UINT8"):
        uint8_input_model(converted, MEAN, STD)
    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3, 8, 8])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3, 8, 8])
    two = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["z"])], "two", [x, y], [z]))
    with pytest.raises(Uint8InputError, match=r"expected one image input, found 2: \['a', 'b'\]"):
        uint8_input_model(two, MEAN, STD)
    g = helper.make_tensor_value_info("g", TensorProto.FLOAT, ["batch", 1, 8, 8])
    o = helper.make_tensor_value_info("o", TensorProto.FLOAT, ["batch", 1, 8, 8])
    gray = helper.make_model(helper.make_graph([helper.make_node("Relu", ["g"], ["o"])], "gray", [g], [o]))
    with pytest.raises(Uint8InputError, match="expected 3 channels, found 1"):
        uint8_input_model(gray, MEAN, STD)


# --------------------------------------------------------------------------------------------
# Parity on real images


def _prepared(spec: ModelSpec, root: Path) -> data.PreparedDataset:
    if not (VAL_1300 / "val_label.txt").is_file():
        pytest.skip(f"real validation images not found at {VAL_1300}")
    listing = data.list_dataset(VAL_1300, limit=REAL_IMAGES)
    return data.prepare_dataset(listing, spec.preprocess, ArtifactCache(root / "cache"), workers=1)


def _batches(prepared: data.PreparedDataset) -> Iterator[np.ndarray]:
    for start in range(0, len(prepared), BATCH):
        yield np.asarray(prepared.images[start : start + BATCH])


def _float_vs_uint8(spec: ModelSpec, float_onnx: Path, prepared: data.PreparedDataset, root: Path,
                    record_property: RecordProperty) -> None:
    pre = prepared.spec
    u8 = make_uint8_input(float_onnx, root / "u8.onnx", pre.mean, pre.std)
    assert onnx_input_output(u8) == (spec.input_name, spec.output_name, ["batch", *spec.input_shape])
    target = _target(spec.input_shape, BATCH)
    backend = OnnxRuntimeBackend()
    with backend.open(float_onnx, target, num_classes=spec.num_classes) as floats, \
            backend.open(u8, target, num_classes=spec.num_classes) as raw:
        a = np.concatenate([floats.infer(data.normalize(b, pre.mean, pre.std)) for b in _batches(prepared)])
        b = np.concatenate([raw.infer(b) for b in _batches(prepared)])
    result = parity(a, b)
    max_abs = float(np.abs(a - b).max())
    record_property("uint8_top1_agreement", result.top1_agreement)
    record_property("uint8_max_abs_logit_diff", max_abs)
    assert a.shape == b.shape == (len(prepared), spec.num_classes)
    assert result.top1_agreement == 100.0, result
    # Same float32 operations in the same order: the inputs are bit-identical, so only a runtime
    # fusing the new nodes differently could move a logit; allow what export parity allows.
    assert result.max_rel_diff <= load_policy().conversion.rtol, (result, max_abs)


def test_efficientnet_lite0_pretrained_float_and_uint8_agree(tmp_path: Path,
                                                            record_property: RecordProperty) -> None:
    spec = load_models()["efficientnet_lite0"]
    prepared = _prepared(spec, tmp_path)
    module, _ = load_model(spec, "pretrained", tmp_path / "no-weights", seed=0, calibration=None,
                           allow_download=False)
    float_onnx = tmp_path / "float.onnx"
    export_onnx(module, spec, float_onnx)
    _float_vs_uint8(spec, float_onnx, prepared, tmp_path, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_architecture_float_and_uint8_agree(name: str, tmp_path: Path,
                                                 record_property: RecordProperty) -> None:
    from harness.run.workbench import RunConfig, Workbench

    spec = load_models()[name]
    prepared = _prepared(spec, tmp_path)
    cache = Path(os.environ.get("MZC_CACHE_DIR") or tmp_path / "cache")
    bench = Workbench(RunConfig(cache_dir=cache, weights="random"), load_policy())
    float_onnx = bench.onnx(bench.model(spec))
    _float_vs_uint8(spec, float_onnx, prepared, tmp_path, record_property)


def test_openvino_takes_the_uint8_model_unchanged(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'openvino>=2024.0'")
    from harness.backends.openvino import OpenVinoBackend

    u8 = make_uint8_input(tiny, tmp_path / "u8.onnx", MEAN, STD)
    raw = np.random.default_rng(5).integers(0, 256, size=(4, *SHAPE), dtype=np.uint8)
    backend = OpenVinoBackend(threads=1)
    results = {}
    for name, model in (("float", tiny), ("uint8", u8)):
        out_dir = tmp_path / name
        out_dir.mkdir()
        artifact = backend.compile(model, _target(), out_dir)
        with backend.open(artifact, _target(), num_classes=CLASSES) as session:
            assert session.input_dtype == (np.uint8 if name == "uint8" else np.float32)
            results[name] = session.infer(raw if name == "uint8" else data.normalize(raw, MEAN, STD))
    # OpenVINO may fold the normalization into its first layer: equal up to float32 rounding.
    np.testing.assert_allclose(results["uint8"], results["float"], rtol=1e-5, atol=1e-5)
