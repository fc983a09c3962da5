"""The ONNX Runtime backend and the torch reference honour the Session contract.

A tiny real ONNX graph (global average pool + a linear layer) is built with onnx.helper, compiled
by ONNX Runtime's offline optimizer and run through real sessions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.backends.base import (
    BackendUnavailable,
    InferenceError,
    check_logits,
    get_backend,
    known_backends,
)
from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.backends.torch_ref import TorchSession
from harness.specs import CompileTarget

CLASSES = 10
SHAPE = (3, 8, 8)


def tiny_onnx(path: Path, weight: np.ndarray, opset: int = 11) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["output"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(CLASSES, 3)).astype(np.float32)


@pytest.fixture
def target() -> CompileTarget:
    return CompileTarget(chip="cpu", batch_size=4, input_shape=SHAPE, input_name="input")


def expected(batch: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return batch.mean(axis=(2, 3)) @ weight.T


def test_registry_knows_onnxruntime_and_refuses_unknown_names() -> None:
    assert "onnxruntime" in known_backends()
    backend = get_backend("onnxruntime")
    assert backend.unavailable_reason() is None
    assert backend.version().count(".") >= 1
    with pytest.raises(BackendUnavailable, match="unknown backend 'tensorflow'; known backends: ascend, onnxruntime, openvino"):
        get_backend("tensorflow")


def test_compile_and_run_with_short_last_batch(tmp_path: Path, weight: np.ndarray, target: CompileTarget) -> None:
    backend = OnnxRuntimeBackend(threads=1)
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    artifact = backend.compile(tiny_onnx(tmp_path / "m.onnx", weight), target, out_dir)
    assert artifact.is_file() and artifact.parent == out_dir
    onnx.checker.check_model(str(artifact))
    batch = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    with backend.open(artifact, target, num_classes=CLASSES) as session:
        assert session.batch_size == 4
        full = session.infer(batch)
        short = session.infer(batch[:3])
        again = session.infer(batch)
    assert full.dtype == np.float32 and full.shape == (4, CLASSES)
    np.testing.assert_allclose(full, expected(batch, weight), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(short, full[:3])
    np.testing.assert_array_equal(again, full)


def test_fp16_target_is_refused_with_the_fix(tmp_path: Path, weight: np.ndarray) -> None:
    target = CompileTarget(chip="cpu", batch_size=1, input_shape=SHAPE, input_name="input", precision="fp16")
    with pytest.raises(BackendUnavailable, match="fp32 only"):
        OnnxRuntimeBackend().compile(tiny_onnx(tmp_path / "m.onnx", weight), target, tmp_path)


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.zeros((5, *SHAPE), np.float32), "batch of 5 images; this session takes 1..4"),
        (np.zeros((0, *SHAPE), np.float32), "batch of 0 images"),
        (np.zeros((2, 3, 9, 9), np.float32), r"expected input of shape \(N, 3, 8, 8\)"),
        (np.zeros((2, *SHAPE), np.uint8), "expected float32 input, got uint8"),
    ],
)
def test_wrong_input_is_refused_before_running(tmp_path: Path, weight: np.ndarray, target: CompileTarget,
                                               batch: np.ndarray, message: str) -> None:
    backend = OnnxRuntimeBackend()
    with backend.open(tiny_onnx(tmp_path / "m.onnx", weight), target, num_classes=CLASSES) as session:
        with pytest.raises(InferenceError, match=message):
            session.infer(batch)


def test_wrong_class_count_and_nan_logits_are_refused(tmp_path: Path, weight: np.ndarray, target: CompileTarget) -> None:
    backend = OnnxRuntimeBackend()
    with backend.open(tiny_onnx(tmp_path / "m.onnx", weight), target, num_classes=1000) as session:
        with pytest.raises(InferenceError, match=r"expected logits of shape \(2, 1000\), got \(2, 10\)"):
            session.infer(np.zeros((2, *SHAPE), np.float32))
    nan_weight = weight.copy()
    nan_weight[0, 0] = np.nan
    with backend.open(tiny_onnx(tmp_path / "nan.onnx", nan_weight), target, num_classes=CLASSES) as session:
        with pytest.raises(InferenceError, match="2 of 2 rows of logits contain NaN or Inf"):
            session.infer(np.ones((2, *SHAPE), np.float32))
    with pytest.raises(InferenceError, match="NaN or Inf"):
        check_logits(np.array([[np.inf, 0.0]]), 1, 2, "x")


def test_torch_reference_matches_the_onnx_graph(tmp_path: Path, weight: np.ndarray, target: CompileTarget) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, CLASSES, bias=False))
    with torch.no_grad():
        module[2].weight.copy_(torch.from_numpy(weight))
    session = TorchSession(module, 4, SHAPE, CLASSES)
    batch = np.random.default_rng(2).random((3, *SHAPE), dtype=np.float32)
    with OnnxRuntimeBackend().open(tiny_onnx(tmp_path / "m.onnx", weight), target, num_classes=CLASSES) as ort:
        np.testing.assert_allclose(session.infer(batch), ort.infer(batch), rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceError, match="takes 1..4"):
        session.infer(np.zeros((5, *SHAPE), np.float32))
