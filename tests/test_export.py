"""Export: opset in the file, names, dynamic batch, checker, parity with torch, the ONNX cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper as oh
import onnxruntime as ort
import pytest
import torch
from torch import nn

import harness.model.export as export_mod
from harness.cache import ArtifactCache, content_key
from harness.judge.metrics import parity
from harness.model.export import (
    ExportError,
    cached_onnx,
    export_onnx,
    onnx_cache_inputs,
    onnx_input_output,
    validate_onnx,
)
from harness.model.weights import WeightsInfo, load_pretrained
from harness.specs import ModelSpec, Policy, PreprocessSpec, load_models, load_policy

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
VAL_DIR = DATASETS / "imagenet-val-1300" / "val"


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_models()["efficientnet_lite0"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def lite0(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, WeightsInfo]:
    return load_pretrained(spec, tmp_path_factory.mktemp("no-weights"), allow_download=False)


@pytest.fixture(scope="module")
def exported(
    spec: ModelSpec, lite0: tuple[nn.Module, WeightsInfo], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("export") / "lite0.onnx"
    return path, export_onnx(lite0[0], spec, path, opset=11, simplify=True)


def _images(spec: ModelSpec, n: int) -> np.ndarray:
    """``n`` preprocessed real validation images, or seeded noise where the dataset is absent."""
    files = sorted(VAL_DIR.glob("ILSVRC2012_val_*.JPEG"))[:n] if VAL_DIR.is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).standard_normal((n, *spec.input_shape)).astype(np.float32)
    from PIL import Image
    from torchvision import transforms as T

    p = spec.preprocess
    pipeline = T.Compose(
        [
            T.Resize(p.resize, interpolation=T.InterpolationMode(p.interpolation)),
            T.CenterCrop(p.crop),
            T.ToTensor(),
            T.Normalize(p.mean, p.std),
        ]
    )
    out = []
    for f in files:
        with Image.open(f) as image:
            out.append(pipeline(image.convert("RGB")).numpy())
    return np.stack(out).astype(np.float32)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# The exported file


def test_the_file_declares_the_requested_opset(exported: tuple[Path, dict[str, Any]]) -> None:
    path, info = exported
    model = onnx.load(str(path))
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [11]
    assert info["opset"] == 11 and info["simplifier"] == "onnxslim" and info["simplifier_version"]
    assert info["node_count"] == len(model.graph.node) <= info["node_count_exported"]


def test_names_shape_and_single_file(spec: ModelSpec, exported: tuple[Path, dict[str, Any]]) -> None:
    path, info = exported
    assert onnx_input_output(path) == ("input", "output", ["batch", 3, 224, 224])
    assert (info["input_name"], info["output_name"]) == (spec.input_name, spec.output_name)
    # One self-contained file: no external data, no leftover temporary files.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_the_full_checker_passes(exported: tuple[Path, dict[str, Any]]) -> None:
    onnx.checker.check_model(str(exported[0]), full_check=True)


def test_batch_is_dynamic_and_rows_are_independent(spec: ModelSpec, exported: tuple[Path, dict[str, Any]]) -> None:
    session = _session(exported[0])
    x = np.random.default_rng(1).standard_normal((3, *spec.input_shape)).astype(np.float32)
    three = session.run(None, {spec.input_name: x})[0]
    one = session.run(None, {spec.input_name: x[:1]})[0]
    assert three.shape == (3, spec.num_classes) and one.shape == (1, spec.num_classes)
    np.testing.assert_allclose(one[0], three[0], rtol=0, atol=1e-4)


def test_onnxruntime_matches_torch(
    spec: ModelSpec, policy: Policy, lite0: tuple[nn.Module, WeightsInfo], exported: tuple[Path, dict[str, Any]]
) -> None:
    x = _images(spec, 8)
    with torch.no_grad():
        reference = lite0[0](torch.from_numpy(x)).numpy()
    result = parity(reference, _session(exported[0]).run(None, {spec.input_name: x})[0])
    assert result.max_rel_diff <= policy.conversion.rtol, result
    assert result.min_cosine >= policy.conversion.min_cosine, result
    assert result.top1_agreement == 100.0, result


# --------------------------------------------------------------------------------------------
# The cache


def test_cached_onnx_builds_once(
    spec: ModelSpec, lite0: tuple[nn.Module, WeightsInfo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real_export = export_mod.export_onnx

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(args[2])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_mod, "export_onnx", counting)
    cache = ArtifactCache(tmp_path / "cache")
    module, weights = lite0
    built: list[str] = []
    first = cached_onnx(cache, spec, lambda: built.append("first") or module, weights)  # a builder, called to export
    second = cached_onnx(cache, spec, module, weights)
    third = cached_onnx(cache, spec, lambda: built.append("third") or module, weights)  # cached: never built
    assert first == second == third and first.is_file() and len(calls) == 1 and built == ["first"]
    assert onnx_input_output(first)[:2] == (spec.input_name, spec.output_name)
    manifest = cache.lookup("onnx", onnx_cache_inputs(spec, weights))
    assert manifest is not None and manifest.manifest["export"]["opset"] == 11
    assert manifest.manifest["weights_record"]["sha256"] == weights.sha256


def test_the_cache_key_holds_the_weights_export_key_fields_and_the_tool_versions(spec: ModelSpec) -> None:
    weights = WeightsInfo("pretrained", "/a/w.pth", "ab" * 32, None)
    inputs = onnx_cache_inputs(spec, weights)
    assert inputs["weights"] == weights.export_key_fields() == {"kind": "pretrained", "sha256": "ab" * 32}
    assert set(inputs["versions"]) == {"torch", "torchvision", "timm", "onnx", "onnxslim"}


def test_a_missing_tool_is_recorded_as_not_installed() -> None:
    """The string cache keys have always held for an absent package."""
    assert export_mod._version("surely-no-such-distribution-mzc") == "not installed"
    assert export_mod._version("onnx") == onnx.__version__


def test_cache_key_changes_with_opset_weights_and_calibration(spec: ModelSpec) -> None:
    pretrained = WeightsInfo("pretrained", "/a/w.pth", "ab" * 32, None)
    moved = dataclasses.replace(pretrained, source="/elsewhere/w.pth")
    other_file = dataclasses.replace(pretrained, sha256="cd" * 32)
    seed0 = WeightsInfo("random", "random(seed=0)", None, 0)
    seed1 = WeightsInfo("random", "random(seed=1)", None, 1)
    calibrated = dataclasses.replace(seed0, calibration_sha256="ef" * 32)

    def key(weights: WeightsInfo, **kw: Any) -> str:
        return content_key(onnx_cache_inputs(spec, weights, **kw))

    assert key(pretrained) == key(moved), "the path of a checkpoint is not part of its export key"
    distinct = {
        key(pretrained),
        key(pretrained, opset=13),
        key(pretrained, simplify=False),
        key(other_file),
        key(seed0),
        key(seed1),
        key(calibrated),
    }
    assert len(distinct) == 7


# --------------------------------------------------------------------------------------------
# Failures (a tiny model keeps these fast)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture()
def tiny_spec(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(spec, name="tiny", num_classes=10, preprocess=PreprocessSpec(resize=16, crop=16))


def test_a_model_that_fails_the_checker_is_an_export_error(tmp_path: Path) -> None:
    node = oh.make_node("Relu", ["undefined_tensor"], ["output"])
    graph = oh.make_graph(
        [node],
        "broken",
        [oh.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 3])],
        [oh.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 11)]), str(path))
    with pytest.raises(ExportError, match="fails the ONNX checker"):
        validate_onnx(path, 11, "input", "output")


def test_a_broken_simplified_graph_never_reaches_the_output_path(
    tiny_spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxslim

    def breaking(model: onnx.ModelProto) -> onnx.ModelProto:
        model.graph.node[0].input[0] = "undefined_tensor"
        return model

    monkeypatch.setattr(onnxslim, "slim", breaking)
    out = tmp_path / "out" / "tiny.onnx"
    with pytest.raises(ExportError, match="fails the ONNX checker"):
        export_onnx(_Tiny().eval(), tiny_spec, out)
    assert list(out.parent.iterdir()) == []


def test_a_failing_simplifier_is_an_error_not_a_skip(
    tiny_spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxslim

    def failing(model: onnx.ModelProto) -> onnx.ModelProto:
        raise ValueError("pattern fusion exploded")

    monkeypatch.setattr(onnxslim, "slim", failing)
    with pytest.raises(ExportError, match="onnxslim .* failed to simplify tiny: ValueError: pattern fusion exploded"):
        export_onnx(_Tiny().eval(), tiny_spec, tmp_path / "tiny.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_opset_or_name_is_caught(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    info = export_onnx(_Tiny().eval(), tiny_spec, path, opset=13, simplify=False)
    assert info["opset"] == 13 and info["simplifier"] is None
    with pytest.raises(ExportError, match="declares opset 13 but opset 11 was requested"):
        validate_onnx(path, 11, tiny_spec.input_name, tiny_spec.output_name)
    with pytest.raises(ExportError, match=r"expected input \['image'\]"):
        validate_onnx(path, 13, "image", tiny_spec.output_name)


def test_an_unexportable_module_is_an_export_error(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("data-dependent control flow")

    with pytest.raises(ExportError, match="torch.onnx.export of tiny .* failed: RuntimeError"):
        export_onnx(Unexportable(), tiny_spec, tmp_path / "u.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_graph_that_lost_its_input_is_an_export_error(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    class ThroughNumpy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The tracer records numpy round-trips as constants: the graph no longer reads x.
            return torch.from_numpy(x.numpy()).mean(dim=(2, 3))

    with pytest.warns(torch.jit.TracerWarning), pytest.raises(ExportError, match=r"found inputs \[\]"):
        export_onnx(ThroughNumpy(), tiny_spec, tmp_path / "c.onnx")
    assert list(tmp_path.iterdir()) == []
