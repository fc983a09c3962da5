"""ONNX Runtime execution providers: configuration, precision rules, availability, IOBinding.

This host has no GPU and the CPU build of ONNX Runtime: the real GPU run skips with the reason
the backend gives, and everything that decides a GPU session (provider list with options,
precision, cache fields, the reason itself) is tested directly. The IOBinding session is run for
real on the CPU device, which takes the same code path as CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_backends import CLASSES, SHAPE, expected, tiny_onnx

import harness.backends.onnxruntime as ort_mod
import harness.backends.onnxruntime.host as ort_host
from harness.backends.base import BackendUnavailable, InferenceError, get_backend
from harness.backends.onnxruntime import (
    CPU,
    CUDA,
    TENSORRT,
    OnnxRuntimeBackend,
    OnnxRuntimeBoundSession,
    OnnxRuntimeSession,
    check_precision,
    parse_provider_options,
    parse_providers,
    provider_list,
)
from harness.backends.options import BackendOptionError
from harness.clocks import DEVICE_COMPUTE
from harness.run.timing import measure
from harness.specs import CompileTarget, TimingPolicy, load_chips

T4_PROVIDERS = "TensorrtExecutionProvider,CUDAExecutionProvider"


def target(precision: str = "fp32", batch_size: int = 4, name: str = "input") -> CompileTarget:
    return CompileTarget(chip="T4", batch_size=batch_size, input_shape=SHAPE, input_name=name, precision=precision)


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(CLASSES, 3)).astype(np.float32)


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two GPUs as the NVIDIA driver lists them, and an ORT build that has the GPU providers."""
    gpus = tmp_path / "nvidia-gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (gpus / bus).mkdir(parents=True)
    monkeypatch.setattr(ort_host, "NVIDIA_GPUS_DIR", gpus)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    return gpus


# --------------------------------------------------------------------------------------------
# Parsing the chip's options


def test_providers_parse_as_chips_toml_gives_them() -> None:
    assert parse_providers(T4_PROVIDERS) == (TENSORRT, CUDA)
    assert parse_providers(" CUDAExecutionProvider , CPUExecutionProvider ") == (CUDA, CPU)
    assert parse_providers([CUDA]) == (CUDA,)
    assert parse_providers(None) == parse_providers("") == (CPU,)
    with pytest.raises(
        BackendOptionError, match=r"unknown provider\(s\) CudaProvider; expected .*CUDAExecutionProvider"
    ):
        parse_providers("CudaProvider")
    with pytest.raises(BackendOptionError, match="names a provider twice"):
        parse_providers("CUDAExecutionProvider,CUDAExecutionProvider")


def test_provider_options_parse_from_one_string() -> None:
    text = (f"{TENSORRT}:trt_max_workspace_size=2147483648, trt_builder_optimization_level=3;"
            f"{CUDA}:cudnn_conv_algo_search=HEURISTIC")
    assert parse_provider_options(text) == {
        TENSORRT: {"trt_max_workspace_size": "2147483648", "trt_builder_optimization_level": "3"},
        CUDA: {"cudnn_conv_algo_search": "HEURISTIC"},
    }
    assert parse_provider_options({CUDA: {"arena_extend_strategy": 1}}) == {CUDA: {"arena_extend_strategy": "1"}}
    assert parse_provider_options(None) == parse_provider_options("") == {}
    with pytest.raises(BackendOptionError, match="expected 'Provider:key=value,...'"):
        parse_provider_options("trt_fp16_enable=1")
    with pytest.raises(BackendOptionError, match="expected key=value"):
        parse_provider_options(f"{TENSORRT}:trt_fp16_enable")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"device_id": "-1"}, "device_id: expected an integer >= 0, found '-1'"),
        ({"threads": "0"}, "threads: expected an integer >= 1"),
        ({"io_binding": "sometimes"}, "io_binding: expected true or false"),
        ({"providers": CUDA, "provider_options": f"{TENSORRT}:trt_fp16_enable=1"}, "not in providers"),
    ],
)
def test_bad_backend_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(BackendOptionError, match=message):
        OnnxRuntimeBackend(**options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The provider list a session is created with


def test_t4_fp16_gets_tensorrt_fp16_profiles_and_engine_cache(tmp_path: Path) -> None:
    engines = tmp_path / "trt_engines"
    plan = provider_list((TENSORRT, CUDA), target("fp16", batch_size=16), device_id=1, engine_dir=engines)
    assert [name for name, _ in plan] == [TENSORRT, CUDA, CPU]
    trt, cuda, cpu = (opts for _, opts in plan)
    assert trt == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_profile_min_shapes": "input:1x3x8x8",
        "trt_profile_opt_shapes": "input:16x3x8x8",
        "trt_profile_max_shapes": "input:16x3x8x8",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(engines),
    }
    assert cuda == {"device_id": "1"} and cpu == {}


def test_fp32_keeps_tensorrt_in_fp32_and_user_options_are_added() -> None:
    user = {TENSORRT: {"trt_max_workspace_size": "1073741824", "trt_fp16_enable": "false"}}
    plan = dict(provider_list((TENSORRT, CUDA), target("fp32"), user_options=user))
    assert plan[TENSORRT]["trt_fp16_enable"] == "false"
    assert plan[TENSORRT]["trt_max_workspace_size"] == "1073741824"
    assert "trt_engine_cache_path" not in plan[TENSORRT]


def test_user_options_may_not_contradict_the_chip_or_target() -> None:
    with pytest.raises(BackendOptionError, match=r"trt_fp16_enable=1 contradicts 'False'.*precision"):
        provider_list((TENSORRT, CUDA), target("fp32"), user_options={TENSORRT: {"trt_fp16_enable": "1"}})
    with pytest.raises(BackendOptionError, match="device_id=3 contradicts '0'"):
        provider_list((CUDA,), target("fp32"), user_options={CUDA: {"device_id": "3"}})
    with pytest.raises(BackendOptionError, match="not in providers"):
        provider_list((CUDA,), target("fp32"), user_options={TENSORRT: {"trt_fp16_enable": "0"}})


def test_backend_plan_follows_the_chip(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(providers=T4_PROVIDERS, device_id="1",
                                 provider_options=f"{TENSORRT}:trt_builder_optimization_level=5")
    plan = backend.plan(target("fp16"), tmp_path)
    assert plan.device_id == 1 and plan.io_binding
    assert dict(plan.providers)[TENSORRT]["trt_builder_optimization_level"] == "5"
    assert backend.plan(target("fp16"), tmp_path, device_id=0).device_id == 0
    assert not OnnxRuntimeBackend().io_binding


@pytest.mark.parametrize(
    "providers, precision, message",
    [
        ((CPU,), "fp16", "CPU backend compiles fp32 only, asked for fp16"),
        ((CPU,), "bf16", "fp32 only"),
        ((CUDA,), "fp16", "needs a float16-converted ONNX.*add TensorrtExecutionProvider"),
        ((TENSORRT, CUDA), "bf16", "asked for bf16"),
    ],
)
def test_precisions_the_providers_cannot_honour_are_refused(providers: tuple[str, ...], precision: str,
                                                            message: str) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        check_precision(providers, precision)


def test_precisions_the_providers_honour_pass() -> None:
    check_precision((CPU,), "fp32")
    check_precision((TENSORRT, CUDA), "fp16")
    check_precision((CUDA,), "fp32")


# --------------------------------------------------------------------------------------------
# Cache fields


def test_cpu_cache_fields_are_unchanged_and_gpu_fields_name_providers_and_options() -> None:
    cpu = OnnxRuntimeBackend()
    assert dict(cpu.compile_fields()) == {"onnxruntime": ort.__version__, "optimization": "extended",
                                          "provider": CPU}
    t4 = OnnxRuntimeBackend(providers=T4_PROVIDERS)
    fields = t4.compile_fields()
    assert fields["providers"] == T4_PROVIDERS and fields["provider_options"] == "{}"
    tuned = OnnxRuntimeBackend(providers=T4_PROVIDERS, provider_options=f"{TENSORRT}:trt_builder_optimization_level=5")
    assert tuned.compile_fields() != fields
    assert OnnxRuntimeBackend(providers=CUDA).compile_fields() != fields


def test_gpu_cache_fields_name_the_gpu_model_and_tensorrt(fake_gpus: Path) -> None:
    """A TensorRT engine built on a T4 is not valid on an A10: the GPU model is in the key.
    The driver's documented /proc/driver/nvidia/gpus/<bus>/information format, written here."""
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (fake_gpus / bus / "information").write_text(
            f"Model: \t\t Tesla T4\nIRQ:   \t\t 36\nGPU UUID: \t GPU-{bus}\nBus Location: \t {bus}\n")
    t4 = OnnxRuntimeBackend(providers=T4_PROVIDERS).compile_fields()
    assert t4["gpus"] == "Tesla T4" and "tensorrt" in t4
    assert "tensorrt" not in OnnxRuntimeBackend(providers=CUDA).compile_fields()
    (fake_gpus / "0000:02:00.0" / "information").write_text("Model: \t\t NVIDIA A10\n")
    mixed = OnnxRuntimeBackend(providers=T4_PROVIDERS).compile_fields()
    assert mixed["gpus"] == "NVIDIA A10,Tesla T4" and mixed != t4


# --------------------------------------------------------------------------------------------
# Availability


def test_t4_from_chips_toml_names_what_is_missing_here() -> None:
    chip = load_chips()["T4"]
    backend = get_backend(chip.backend, threads=None, **chip.backend_options)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.providers == (TENSORRT, CUDA)
    reason = backend.unavailable_reason()
    if reason is None:
        pytest.skip("this host has onnxruntime-gpu and a GPU: nothing is missing")
    missing_providers = not {TENSORRT, CUDA} <= set(ort.get_available_providers())
    if missing_providers:
        assert "TensorrtExecutionProvider, CUDAExecutionProvider are not in this ONNX Runtime" in reason
        assert "onnxruntime-gpu" in reason and "pip uninstall -y onnxruntime" in reason
    if ort_mod.nvidia_gpu_count() == 0:
        assert "no CUDA device" in reason


def test_reason_with_providers_and_gpus_present(fake_gpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert OnnxRuntimeBackend(providers=T4_PROVIDERS).unavailable_reason() is None
    reason = OnnxRuntimeBackend(providers=T4_PROVIDERS, device_id="2").unavailable_reason()
    assert reason is not None and "device_id 2 asked for, but only 2 CUDA device(s) are visible (0..1)" in reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    reason = OnnxRuntimeBackend(providers=CUDA).unavailable_reason()
    assert reason is not None and "no CUDA device" in reason and "CUDA_VISIBLE_DEVICES" in reason


def test_other_providers_name_their_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    reason = OnnxRuntimeBackend(providers="OpenVINOExecutionProvider").unavailable_reason()
    assert reason is not None and "needs onnxruntime-openvino" in reason and "CUDA" not in reason


def test_the_cpu_backend_is_available() -> None:
    assert OnnxRuntimeBackend().unavailable_reason() is None


def test_compile_and_open_refuse_an_unavailable_gpu_with_the_reason(tmp_path: Path, weight: np.ndarray) -> None:
    backend = OnnxRuntimeBackend(providers=T4_PROVIDERS)
    reason = backend.unavailable_reason()
    if reason is None:
        pytest.skip("the GPU providers are available here")
    model = tiny_onnx(tmp_path / "m.onnx", weight)
    with pytest.raises(BackendUnavailable) as err:
        backend.compile(model, target("fp16"), tmp_path)
    assert str(err.value) == reason
    with pytest.raises(BackendUnavailable):
        with backend.open(model, target("fp16"), num_classes=CLASSES):
            pass


@pytest.mark.parametrize("providers, precision", [(T4_PROVIDERS, "fp16"), (CUDA, "fp32")],
                         ids=["tensorrt-fp16", "cuda-fp32"])
def test_gpu_session_runs_on_the_device(tmp_path: Path, weight: np.ndarray, providers: str, precision: str) -> None:
    backend = OnnxRuntimeBackend(providers=providers)
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(reason)
    t = target(precision)
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    artifact = backend.compile(tiny_onnx(tmp_path / "m.onnx", weight), t, out_dir)
    batch = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    with backend.open(artifact, t, num_classes=CLASSES) as session:
        assert isinstance(session, OnnxRuntimeBoundSession) and session.device_type == "cuda"
        out = session.infer(batch)
        short = session.infer(batch[:3])
        assert len(session.compute_times_ms()) == 2
    tol = 2e-2 if precision == "fp16" else 1e-4
    np.testing.assert_allclose(out, expected(batch, weight), rtol=tol, atol=tol)
    np.testing.assert_allclose(short, out[:3], rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# IOBinding, exercised on the CPU device


def test_io_binding_session_matches_the_plain_one_and_reports_compute_time(tmp_path: Path, weight: np.ndarray) -> None:
    model = tiny_onnx(tmp_path / "m.onnx", weight)
    t = target()
    batch = np.random.default_rng(2).random((4, *SHAPE), dtype=np.float32)
    with OnnxRuntimeBackend(threads=1).open(model, t, num_classes=CLASSES) as plain:
        assert isinstance(plain, OnnxRuntimeSession) and not hasattr(plain, "compute_times_ms")
        reference = plain.infer(batch)
    bound_backend = OnnxRuntimeBackend(threads=1, io_binding="true")
    with bound_backend.open(model, t, num_classes=CLASSES) as bound:
        assert isinstance(bound, OnnxRuntimeBoundSession) and bound.device_type == "cpu"
        np.testing.assert_array_equal(bound.infer(batch), reference)
        np.testing.assert_array_equal(bound.infer(batch[:2]), reference[:2])
        times = bound.compute_times_ms()
        assert len(times) == 2 and all(ms > 0 for ms in times)
        with pytest.raises(InferenceError, match="this session takes 1..4"):
            bound.infer(np.zeros((5, *SHAPE), np.float32))
        assert len(bound.compute_times_ms()) == 2
        timed = measure(bound, [batch], TimingPolicy(warmup_runs=1, min_runs=3, min_seconds=0.0, max_seconds=1.0))
    assert timed.measurement.clock == DEVICE_COMPUTE and timed.measurement.device_images_per_s
    assert bound_backend.describe()["io_binding"] is True


# --------------------------------------------------------------------------------------------
# The GPU code path with a simulated GPU build: sessions are recorded and run on the CPU


class SimulatedGpuSession:
    """Stands in for an InferenceSession on GPU providers: records how it was created and runs
    the model on the real CPU provider underneath."""

    created: list[tuple[list[str], list[dict[str, str]]]] = []
    runs: list[tuple[int, ...]] = []
    loaded: list[str] | None = None  # what get_providers() reports; None: every requested one

    def __init__(self, path: str, sess_options: object = None, providers: list[str] | None = None,
                 provider_options: list[dict[str, str]] | None = None):
        self._real = REAL_SESSION(path, sess_options=sess_options, providers=[CPU])
        self._providers = list(providers or [])
        SimulatedGpuSession.created.append((self._providers, list(provider_options or [])))

    def get_providers(self) -> list[str]:
        return list(self.loaded) if self.loaded is not None else self._providers

    def get_inputs(self) -> object:
        return self._real.get_inputs()

    def get_outputs(self) -> object:
        return self._real.get_outputs()

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> object:
        SimulatedGpuSession.runs.append(tuple(next(iter(feeds.values())).shape))
        return self._real.run(outputs, feeds)


REAL_SESSION = ort.InferenceSession


@pytest.fixture
def simulated_gpu(fake_gpus: Path, monkeypatch: pytest.MonkeyPatch) -> type[SimulatedGpuSession]:
    def factory(path: str, sess_options: object = None, providers: list[str] | None = None,
                provider_options: list[dict[str, str]] | None = None) -> object:
        if providers == [CPU] and not provider_options:
            return REAL_SESSION(path, sess_options=sess_options, providers=providers)
        return SimulatedGpuSession(path, sess_options, providers, provider_options)

    monkeypatch.setattr(ort, "InferenceSession", factory)
    monkeypatch.setattr(SimulatedGpuSession, "created", [])
    monkeypatch.setattr(SimulatedGpuSession, "runs", [])
    monkeypatch.setattr(SimulatedGpuSession, "loaded", None)
    return SimulatedGpuSession


def test_t4_compile_builds_the_tensorrt_engine_into_the_artifact_dir(simulated_gpu: type[SimulatedGpuSession],
                                                                     tmp_path: Path, weight: np.ndarray) -> None:
    backend = OnnxRuntimeBackend(providers=T4_PROVIDERS, io_binding="false")
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    t = target("fp16", batch_size=4)
    artifact = backend.compile(tiny_onnx(tmp_path / "m.onnx", weight), t, out_dir)
    assert artifact == out_dir / "model.ort.onnx" and artifact.is_file() and (out_dir / "trt_engines").is_dir()
    ((providers, options),) = simulated_gpu.created
    assert providers == [TENSORRT, CUDA, CPU]
    assert options[0]["trt_fp16_enable"] == "True"
    assert options[0]["trt_engine_cache_path"] == str(out_dir / "trt_engines")
    assert simulated_gpu.runs == [(4, *SHAPE)]

    batch = np.random.default_rng(4).random((3, *SHAPE), dtype=np.float32)
    with backend.open(artifact, t, num_classes=CLASSES) as session:
        np.testing.assert_allclose(session.infer(batch), expected(batch, weight), rtol=1e-5, atol=1e-6)
    providers, options = simulated_gpu.created[-1]
    assert options[0]["trt_engine_cache_path"] == str(out_dir / "trt_engines")
    assert options[0]["device_id"] == options[1]["device_id"] == "0"


def test_open_uses_the_requested_device(simulated_gpu: type[SimulatedGpuSession], tmp_path: Path,
                                        weight: np.ndarray) -> None:
    backend = OnnxRuntimeBackend(providers=CUDA, device_id="1", io_binding="false")
    model = tiny_onnx(tmp_path / "m.onnx", weight)
    with backend.open(model, target(), num_classes=CLASSES):
        pass
    with backend.open(model, target(), device_id=0, num_classes=CLASSES):
        pass
    assert [opts[0]["device_id"] for _, opts in simulated_gpu.created] == ["1", "0"]


def test_a_silent_fallback_to_the_cpu_is_refused(simulated_gpu: type[SimulatedGpuSession], tmp_path: Path,
                                                 weight: np.ndarray) -> None:
    simulated_gpu.loaded = [CPU]
    backend = OnnxRuntimeBackend(providers=T4_PROVIDERS)
    with pytest.raises(
        BackendUnavailable,
        match=r"without TensorrtExecutionProvider, CUDAExecutionProvider \(it runs on CPUExecutionProvider\)",
    ):
        with backend.open(tiny_onnx(tmp_path / "m.onnx", weight), target("fp16"), num_classes=CLASSES):
            pass


def test_without_onnxruntime_the_backend_still_builds_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    backend = OnnxRuntimeBackend(providers=T4_PROVIDERS)
    reason = backend.unavailable_reason()
    assert (
        reason is not None and "ONNX Runtime is not installed" in reason and "pip install 'onnxruntime>=1.16'" in reason
    )
