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
    Backend,
    BackendUnavailable,
    InferenceError,
    Session,
    backend_class,
    check_logits,
    get_backend,
    known_backends,
)
from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.backends.options import BackendOptionError, OptionReader
from harness.backends.torch_ref import TorchSession
from harness.errors import UsageError
from harness.specs import CompileTarget, load_chips

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
    with pytest.raises(
        BackendUnavailable, match="unknown backend 'tensorflow'; known backends: ascend, onnxruntime, openvino"
    ):
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


def test_wrong_class_count_and_nan_logits_are_refused(
    tmp_path: Path, weight: np.ndarray, target: CompileTarget
) -> None:
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
    module = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, CLASSES, bias=False)
    )
    with torch.no_grad():
        module[2].weight.copy_(torch.from_numpy(weight))
    session = TorchSession(module, 4, SHAPE, CLASSES)
    batch = np.random.default_rng(2).random((3, *SHAPE), dtype=np.float32)
    with OnnxRuntimeBackend().open(tiny_onnx(tmp_path / "m.onnx", weight), target, num_classes=CLASSES) as ort:
        np.testing.assert_allclose(session.infer(batch), ort.infer(batch), rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceError, match="takes 1..4"):
        session.infer(np.zeros((5, *SHAPE), np.float32))


# --------------------------------------------------------------------------------------------
# Backend options: one parser, one error, the same message on every backend


@pytest.mark.parametrize(
    "backend, name",
    [("onnxruntime", "io_binding"), ("openvino", "allow_precision_fallback"), ("ascend", "check_device"),
     ("ascend", "small_channel")],
)
def test_a_non_boolean_for_a_boolean_reads_the_same_on_every_backend(backend: str, name: str) -> None:
    with pytest.raises(BackendOptionError) as err:
        get_backend(backend, **{name: "maybe"})
    assert str(err.value) == f"{backend} backend option {name}: expected true or false, found 'maybe'"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_thread_count_reads_the_same_on_every_backend(backend: str, value: str) -> None:
    with pytest.raises(BackendOptionError) as err:
        get_backend(backend, threads=value)
    assert str(err.value) == f"{backend} backend option threads: expected an integer >= 1, found {value!r}"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "ascend"])
def test_an_unknown_option_name_lists_the_accepted_ones(backend: str) -> None:
    accepted = backend_class(backend).option_names()
    with pytest.raises(BackendOptionError) as err:
        get_backend(backend, thread="2")
    assert str(err.value) == (f"{backend} backend option thread: unknown option name; expected one of "
                              f"{', '.join(accepted)} (backend_options in fixtures/chips.toml)")
    with pytest.raises(BackendOptionError, match=f"^{backend} backend options thread, devise: unknown option names"):
        get_backend(backend, thread="2", devise="x")


def test_option_names_are_the_constructor_keywords() -> None:
    assert OnnxRuntimeBackend.option_names() == ("device_id", "io_binding", "provider_options", "providers", "threads")
    assert backend_class("openvino").option_names() == ("allow_precision_fallback", "device", "performance_hint",
                                                        "threads")
    assert "soc_version" in backend_class("ascend").option_names()


def test_every_chip_in_chips_toml_gives_options_its_backend_takes() -> None:
    for chip in load_chips().values():
        backend = get_backend(chip.backend, threads=None, **chip.backend_options)
        assert backend.name == chip.backend


def test_a_bad_option_is_a_usage_error_and_a_value_error() -> None:
    """A failure without traceback inside a test, exit 4 at start-up; callers catching ValueError still do."""
    assert issubclass(BackendOptionError, UsageError) and issubclass(BackendOptionError, ValueError)


def test_option_reader_readers() -> None:
    read = OptionReader("x")
    assert read.flag("f", " Yes ") is True and read.flag("f", "OFF") is False and read.flag("f", False) is False
    assert read.integer("n", "3", 1) == 3 and read.integer("n", None, 1) is None and read.integer("n", "", 0) is None
    assert read.number("t", "2.5", 1.0) == 2.5
    for bad in ("0.5", "soon", "nan"):
        with pytest.raises(BackendOptionError, match=f"^x backend option t: expected a number >= 1, found '{bad}'$"):
            read.number("t", bad, 1.0)
    assert read.choice("c", "latency", ("LATENCY", "THROUGHPUT")) == "LATENCY"
    with pytest.raises(BackendOptionError, match="^x backend option c: expected one of A, B, found 'C'$"):
        read.choice("c", "C", ("A", "B"))
    assert (
        read.names("l", " a, b ,,") == ("a", "b") and read.names("l", None) == () and read.names("l", ["a"]) == ("a",)
    )
    with pytest.raises(BackendOptionError, match="^x backend option l: a,a names a thing twice$"):
        read.names("l", "a,a", item="thing")
    with pytest.raises(
        BackendOptionError,
        match=r"^x backend option l: unknown thing\(s\) c; expected comma-separated names from: a, b$",
    ):
        read.names("l", "a,c", item="thing", allowed=("a", "b"))
    assert read.sections("s", "A:k=1, j = 2;B:k=3") == {"A": {"k": "1", "j": "2"}, "B": {"k": "3"}}
    assert read.sections("s", {"A": {"k": 1}}) == {"A": {"k": "1"}} and read.sections("s", None) == {}
    with pytest.raises(BackendOptionError, match="^x backend option s: expected 'Part:key=value,...' parts"):
        read.sections("s", "k=1", section="Part")
    with pytest.raises(BackendOptionError, match="^x backend option s: expected key=value in 'A:k', found 'k'$"):
        read.sections("s", "A:k")


# --------------------------------------------------------------------------------------------
# Optional members are real members with defaults on the base classes


def test_sessions_take_float32_unless_they_say_otherwise(tmp_path: Path, weight: np.ndarray,
                                                         target: CompileTarget) -> None:
    assert Session.input_dtype == np.float32 and "compute_times_ms" not in vars(Session)
    torch = pytest.importorskip("torch")
    session = TorchSession(torch.nn.Flatten(), 4, SHAPE, CLASSES)
    assert isinstance(session, Session) and session.input_dtype == np.float32
    with OnnxRuntimeBackend().open(tiny_onnx(tmp_path / "m.onnx", weight), target, num_classes=CLASSES) as ort:
        assert isinstance(ort, Session) and ort.input_dtype == np.float32


def test_backends_without_host_threads_say_none() -> None:
    assert Backend.threads is None
    assert get_backend("ascend", threads="4").threads is None  # the NPU runs the model
    assert get_backend("onnxruntime", threads="2").threads == 2
