"""The OpenVINO backend: IR compile, explicit precision hints, what ran is recorded, errors.

Uses the tiny real ONNX graph of test_backends (global average pool + linear layer), compiled to
a real IR and run by the real CPU plugin. The real-model checks live in
tests/conformance/test_backend_conformance.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_backends import CLASSES, SHAPE, expected, tiny_onnx

from harness.backends.base import (
    BackendUnavailable,
    InferenceError,
    get_backend,
    known_backends,
)
from harness.backends.options import BackendOptionError
from harness.specs import CompileTarget

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'openvino>=2024.0'")

from harness.backends.openvino import OpenVinoBackend, precision_hint  # noqa: E402


def target(precision: str = "fp32", batch_size: int = 4) -> CompileTarget:
    return CompileTarget(chip="cpu-openvino", batch_size=batch_size, input_shape=SHAPE, input_name="input",
                         precision=precision)


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(CLASSES, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory, weight: np.ndarray) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("tiny") / "m.onnx", weight)


@pytest.fixture(scope="module")
def backend() -> OpenVinoBackend:
    return OpenVinoBackend(threads=1)


def compiled(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path, t: CompileTarget) -> Path:
    out = tmp_path / f"ir-{t.precision}-bs{t.batch_size}"
    out.mkdir(exist_ok=True)
    return backend.compile(onnx_path, t, out)


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)


def test_registry_builds_it_from_chips_toml_style_strings() -> None:
    assert "openvino" in known_backends()
    backend = get_backend("openvino", threads="2", performance_hint="latency", allow_precision_fallback="false")
    assert isinstance(backend, OpenVinoBackend)
    assert backend.threads == 2 and backend.performance_hint == "LATENCY" and not backend.allow_precision_fallback
    assert backend.unavailable_reason() is None
    assert backend.version() == ov.get_version()
    assert backend.compile_fields()["openvino"] == ov.get_version()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"threads": "0"}, "threads: expected an integer >= 1, found '0'"),
        ({"threads": "two"}, "threads: expected an integer >= 1, found 'two'"),
        ({"performance_hint": "FAST"}, "performance_hint: expected one of LATENCY, THROUGHPUT, found 'FAST'"),
        ({"allow_precision_fallback": "maybe"}, "allow_precision_fallback: expected true or false"),
    ],
)
def test_bad_options_say_what_was_expected(options: dict[str, str], message: str) -> None:
    with pytest.raises(BackendOptionError, match=message):
        OpenVinoBackend(**options)  # type: ignore[arg-type]


def test_precision_names_map_to_openvino_hints() -> None:
    # int8: the quantized IR's float remainder runs at f32 (harness/backends/openvino_quantize.py)
    assert [precision_hint(p) for p in ("fp32", "bf16", "fp16", "int8")] == ["f32", "bf16", "f16", "f32"]
    with pytest.raises(BackendUnavailable, match="asked for 'int4'"):
        precision_hint("int4")


def test_compile_writes_a_static_batch_ir_with_float32_weights(backend: OpenVinoBackend, onnx_path: Path,
                                                               tmp_path: Path) -> None:
    artifact = compiled(backend, onnx_path, tmp_path, target("fp32", batch_size=4))
    assert artifact.name == "model.xml" and artifact.with_suffix(".bin").is_file()
    model = ov.Core().read_model(str(artifact))
    assert [list(i.get_partial_shape().to_shape()) for i in model.inputs] == [[4, *SHAPE]]
    assert sorted(model.inputs[0].get_names()) == ["input"]
    # save_model compresses weights to f16 unless told not to: an "f32" IR must hold f32 weights.
    float_constants = {
        op.get_element_type().to_string()
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().is_real()
    }
    assert float_constants == {"f32"}


def test_f32_is_exact_and_short_batches_are_padded(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path,
                                                   weight: np.ndarray, batch: np.ndarray) -> None:
    t = target("fp32")
    with backend.open(compiled(backend, onnx_path, tmp_path, t), t, num_classes=CLASSES) as session:
        assert session.batch_size == 4 and session.input_dtype == np.float32
        full = session.infer(batch)
        short = session.infer(batch[:3])
        again = session.infer(batch)
    assert full.dtype == np.float32 and full.shape == (4, CLASSES) and short.shape == (3, CLASSES)
    np.testing.assert_allclose(full, expected(batch, weight), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(short, full[:3])
    np.testing.assert_array_equal(again, full)
    assert session.info["requested_precision"] == session.info["inference_precision"] == "f32"


def test_the_precision_hint_is_set_explicitly_and_what_ran_is_recorded(onnx_path: Path, tmp_path: Path,
                                                                       weight: np.ndarray, batch: np.ndarray) -> None:
    backend = OpenVinoBackend(threads=1)
    capabilities = backend.capabilities()
    if "BF16" not in capabilities:
        # The refusal there is tested by test_cpu_features.py, with BF16 hidden on any CPU.
        pytest.skip(f"this CPU has no native bf16: OpenVINO CPU OPTIMIZATION_CAPABILITIES are "
                    f"{', '.join(capabilities)}, no BF16 (x86 needs AVX512_BF16 or AMX)")
    assert backend.config("fp32")["INFERENCE_PRECISION_HINT"] == "f32"
    outputs = {}
    for precision in ("fp32", "bf16"):
        t = target(precision)
        with backend.open(compiled(backend, onnx_path, tmp_path, t), t, num_classes=CLASSES) as session:
            outputs[precision] = session.infer(batch)
    # bf16 keeps 8 mantissa bits: close to f32, and visibly not f32 (the hint took effect). The
    # bound comes from the format, not from one CPU: rounding to bf16 costs ~2**-8 of the logit
    # scale (logits here reach 1.9; measured max |diff| 0.004 on the AVX-512-BF16 EPYC,
    # 2026-11-30), and atol 0.02 alone is five times the measured difference.
    np.testing.assert_allclose(outputs["bf16"], expected(batch, weight), rtol=0.05, atol=0.02)
    assert not np.array_equal(outputs["bf16"], outputs["fp32"])
    described = backend.describe()
    assert described["sessions"]["f32"]["inference_precision"] == "f32"
    assert described["sessions"]["bf16"]["inference_precision"] == "bf16"
    assert described["sessions"]["f32"]["inference_num_threads"] == 1
    assert described["sessions"]["f32"]["performance_hint"] == "LATENCY"
    assert described["sessions"]["f32"]["num_streams"] == 1
    assert described["threads"] == 1 and "BF16" in described["capabilities"]


def test_a_precision_the_cpu_lacks_is_refused_or_recorded(onnx_path: Path, tmp_path: Path, batch: np.ndarray) -> None:
    strict = OpenVinoBackend(threads=1)
    if "FP16" in strict.capabilities():
        pytest.skip("this CPU runs f16 natively; the fallback cannot be shown here")
    with pytest.raises(BackendUnavailable, match=r"cannot run fp16 natively.*no FP16.*allow_precision_fallback"):
        compiled(strict, onnx_path, tmp_path, target("fp16"))
    lenient = OpenVinoBackend(threads=1, allow_precision_fallback="true")
    t = target("fp16")
    with lenient.open(compiled(lenient, onnx_path, tmp_path, t), t, num_classes=CLASSES) as session:
        assert session.infer(batch).shape == (4, CLASSES)
    record = lenient.describe()["sessions"]["f16"]
    assert record["requested_precision"] == "f16" and record["inference_precision"] != "f16"


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((5, *SHAPE), np.float32), "batch of 5 images; this session takes 1..4"),
        (np.zeros((0, *SHAPE), np.float32), "batch of 0 images"),
        (np.zeros((2, 3, 9, 9), np.float32), r"expected input of shape \(N, 3, 8, 8\)"),
        (np.zeros((2, *SHAPE), np.float64), "expected float32 input, got float64"),
    ],
)
def test_wrong_input_is_refused_before_running(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path,
                                               bad: np.ndarray, message: str) -> None:
    t = target()
    with backend.open(compiled(backend, onnx_path, tmp_path, t), t, num_classes=CLASSES) as session:
        with pytest.raises(InferenceError, match=message):
            session.infer(bad)


def test_wrong_class_count_is_refused(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path) -> None:
    t = target()
    with backend.open(compiled(backend, onnx_path, tmp_path, t), t, num_classes=1000) as session:
        with pytest.raises(InferenceError, match=r"expected logits of shape \(2, 1000\), got \(2, 10\)"):
            session.infer(np.zeros((2, *SHAPE), np.float32))


def test_compile_names_the_input_it_found(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path) -> None:
    wrong = CompileTarget(chip="cpu-openvino", batch_size=2, input_shape=SHAPE, input_name="image")
    with pytest.raises(InferenceError, match=r"has input \['input'\], expected 'image'"):
        backend.compile(onnx_path, wrong, tmp_path)


def test_devices_that_are_not_there_are_named(backend: OpenVinoBackend, onnx_path: Path, tmp_path: Path) -> None:
    reason = OpenVinoBackend(device="NPU7").unavailable_reason()
    assert reason is not None and "no device 'NPU7'; available: CPU" in reason
    t = target()
    with pytest.raises(BackendUnavailable, match="has one device"):
        with backend.open(compiled(backend, onnx_path, tmp_path, t), t, device_id=1, num_classes=CLASSES):
            pass


def test_a_missing_package_is_a_reason_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    reason = OpenVinoBackend().unavailable_reason()
    assert reason is not None and "pip install 'openvino>=2024.0'" in reason


def test_throughput_hint_is_accepted_and_recorded(onnx_path: Path, tmp_path: Path, batch: np.ndarray) -> None:
    backend = OpenVinoBackend(threads=1, performance_hint="THROUGHPUT")
    t = target()
    with backend.open(compiled(backend, onnx_path, tmp_path, t), t, num_classes=CLASSES) as session:
        session.infer(batch)
    assert backend.describe()["sessions"]["f32"]["performance_hint"] == "THROUGHPUT"


def test_offline_compiles_for_throughput_and_keeps_several_requests_in_flight(
    onnx_path: Path, tmp_path: Path, weight: np.ndarray, batch: np.ndarray
) -> None:
    """The scenario picks the hint (LATENCY / THROUGHPUT, as benchmark_app -hint does) unless the chip's
    options fix one; the offline session's asynchronous results equal the synchronous ones."""
    from harness.run.timing import measure
    from harness.specs import TimingPolicy

    backend = OpenVinoBackend()  # all cores: THROUGHPUT makes one stream per core here
    t = target()
    artifact = compiled(backend, onnx_path, tmp_path, t)
    with backend.open(artifact, t, num_classes=CLASSES, scenario="offline") as session:
        assert session.info["performance_hint"] == "THROUGHPUT"
        assert session.requests == session.info["optimal_requests"] >= 1
        assert session.streams == session.info["num_streams"] >= 1
        timed = measure(session, [batch, batch[::-1].copy()], TimingPolicy(warmup_runs=1, min_runs=8, min_seconds=0.0),
                        scenario="offline")
        np.testing.assert_allclose(timed.outputs[0], expected(batch, weight), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(timed.outputs[1], expected(batch[::-1], weight), rtol=1e-5, atol=1e-6)
    assert (timed.measurement.requests, timed.measurement.streams) == (session.requests, session.streams)
    with backend.open(artifact, t, num_classes=CLASSES) as session:
        assert session.info["performance_hint"] == "LATENCY" and session.requests >= 1
    described = backend.describe()["sessions"]
    assert (
        described["f32"]["performance_hint"] == "LATENCY"
        and described["f32 offline"]["performance_hint"] == "THROUGHPUT"
    )
    fixed = OpenVinoBackend(performance_hint="LATENCY")
    with fixed.open(artifact, t, num_classes=CLASSES, scenario="offline") as session:
        assert session.info["performance_hint"] == "LATENCY"  # the chip's option wins, and is recorded


def test_offline_inputs_are_wrapped_once_per_batch_and_read_only_batches_run(
    onnx_path: Path, tmp_path: Path, weight: np.ndarray, batch: np.ndarray
) -> None:
    backend = OpenVinoBackend(threads=1)
    t = target()
    artifact = compiled(backend, onnx_path, tmp_path, t)
    frozen = batch.copy()
    frozen.setflags(write=False)  # as a memory-mapped dataset hands it out
    got: list[np.ndarray] = []
    with backend.open(artifact, t, num_classes=CLASSES, scenario="offline") as session:
        for b in (batch, frozen, batch):
            session.submit(b, got.append)
        assert len(session._tensors) == 2  # one tensor per distinct batch array, reused
        session.wait_all()
        assert session._tensors == {}
    assert len(got) == 3
    for out in got:
        np.testing.assert_allclose(out, expected(batch, weight), rtol=1e-5, atol=1e-6)
