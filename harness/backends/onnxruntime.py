"""ONNX Runtime: the host CPU, and NVIDIA GPUs through the CUDA and TensorRT execution providers.

CPU (the default, ``providers="CPUExecutionProvider"``): the compiled artifact is the graph ORT
optimized offline at the extended level (portable across CPUs); fp32 only, because fp16 models
give no speed-up on CPU execution providers (DESIGN.md, "Measured on these machines").

GPU (``providers="TensorrtExecutionProvider,CUDAExecutionProvider"`` as ``fixtures/chips.toml``
gives it for the T4): the artifact is the graph optimized offline at the *basic* level on the CPU
provider (constant folding and redundant-node removal only: higher levels insert
provider-specific fused nodes, and a graph holding TensorRT-compiled nodes cannot be saved at
all), plus, with TensorRT, the engine built for the target's batch size in ``trt_engines/`` next
to it (``trt_engine_cache_*``), with the optimization profile trtexec's seed scripts give:
min batch 1, opt = max = the target batch. Precision:

- ``fp32``: every provider.
- ``fp16``: TensorRT only (``trt_fp16_enable``); nodes TensorRT does not take fall back to the
  CUDA provider and run in float32 there. The CUDA provider alone runs each node in its tensors'
  precision, so fp16 on it needs a float16-converted ONNX (e.g. onnxconverter-common's
  ``convert_float_to_float16(keep_io_types=True)``), which this backend does not make: it refuses
  the combination and says so.
- ``bf16``: refused (no ORT provider here runs it for these models).

On a GPU the session binds inputs and outputs with IOBinding: each batch is copied to the device
first (``OrtValue.ortvalue_from_numpy(x, "cuda", device_id)``), then only the run is timed and
reported through ``compute_times_ms()``, so the timing loop's ``device_compute`` clock is compute
only, like trtexec's GPU compute time and ais_bench's ``NPU_compute_time``.

Spinning is disabled on every session (``session.intra_op.allow_spinning = 0``): with it,
timings collapse whenever anything else runs on the host.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from harness.backends.base import (
    Backend,
    BackendUnavailable,
    InferenceError,
    check_batch,
    check_logits,
)
from harness.environment import installed_version
from harness.errors import UsageError
from harness.specs import CompileTarget

ARTIFACT_NAME = "model.ort.onnx"
TRT_ENGINE_DIR = "trt_engines"
INSTALL_HINT = "pip install 'onnxruntime>=1.16'"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
# Which pip distribution of ONNX Runtime ships a provider (they replace one another).
PROVIDER_PACKAGES: Mapping[str, str] = {
    TENSORRT: "onnxruntime-gpu",
    CUDA: "onnxruntime-gpu",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "MIGraphXExecutionProvider": "onnxruntime-migraphx",
    "QNNExecutionProvider": "onnxruntime-qnn",
}
GPU_INSTALL_HINT = (
    "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu>=1.16' (or: pip install -e '.[gpu]'), "
    "with the CUDA 12 and cuDNN 9 runtime libraries"
)
TENSORRT_INSTALL_HINT = ", plus the TensorRT 10 libraries (pip install tensorrt, or NVIDIA's packages)"
# Where the NVIDIA driver lists the GPUs it manages (one directory per GPU).
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-libs", "tensorrt-cu11")
_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime", "onnxruntime-openvino", "onnxruntime-directml")
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX Runtime is not installed ({exc}); {INSTALL_HINT}") from exc
    return onnxruntime


def ort_distribution() -> str:
    """The installed ONNX Runtime distribution, e.g. ``onnxruntime 1.20.1`` or ``onnxruntime-gpu 1.20.1``."""
    found = installed_version(*_DISTRIBUTIONS)
    return " ".join(found) if found else "no onnxruntime distribution found"


def nvidia_gpu_count() -> int:
    """GPUs the NVIDIA driver manages (0 without a driver), narrowed by ``CUDA_VISIBLE_DEVICES``."""
    try:
        count = sum(1 for p in NVIDIA_GPUS_DIR.iterdir() if p.is_dir())
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]))
    return count


def nvidia_gpu_models() -> tuple[str, ...]:
    """The distinct GPU models the driver lists (``Model:`` of ``<gpus dir>/<bus id>/information``).

    Part of a GPU artifact's cache key: a TensorRT engine is built for one GPU model and is not
    valid on another. Empty without a driver.
    """
    models = set()
    try:
        entries = sorted(p for p in NVIDIA_GPUS_DIR.iterdir() if p.is_dir())
    except OSError:
        return ()
    for entry in entries:
        try:
            text = (entry / "information").read_text(errors="replace")
        except OSError:
            models.add("unknown")
            continue
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                      if line.lower().startswith("model:")), "unknown")
        models.add(model or "unknown")
    return tuple(sorted(models))


def tensorrt_version() -> str:
    """The TensorRT Python distribution's version (the libraries ORT's TensorRT provider loads)."""
    found = installed_version(*TENSORRT_DISTRIBUTIONS)
    return " ".join(found) if found else "not installed as a Python package (system libraries)"


# --------------------------------------------------------------------------------------------
# Configuration: providers, options, precision


class ConfigError(UsageError, ValueError):
    """A backend option is malformed; the message names the option, what was expected and found."""


def parse_providers(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"TensorrtExecutionProvider,CUDAExecutionProvider"`` (as chips.toml gives it) or a list.

    Names are checked against every provider ONNX Runtime knows (available in this build or not);
    None or empty means the CPU provider.
    """
    if value is None:
        return (CPU,)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(p).strip() for p in items if str(p).strip())
    if not names:
        return (CPU,)
    try:
        known = list(_ort().get_all_providers())
    except BackendUnavailable:
        # Without ONNX Runtime nothing can be checked; unavailable_reason() says what to install.
        known = list(names)
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ConfigError(
            f"onnxruntime backend option providers: unknown provider(s) {', '.join(unknown)}; "
            f"expected comma-separated names from: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"onnxruntime backend option providers: {','.join(names)} names a provider twice")
    return names


def parse_provider_options(value: str | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, str]]:
    """Per-provider options, as a mapping or as chips.toml's one-string form.

    The string form is ``Provider:key=value,key=value;Provider:key=value``, e.g.
    ``"TensorrtExecutionProvider:trt_max_workspace_size=2147483648,trt_builder_optimization_level=3"``.
    Values stay strings: ONNX Runtime parses provider option values itself.
    """
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        return {str(p): {str(k): str(v) for k, v in opts.items()} for p, opts in value.items()}
    out: dict[str, dict[str, str]] = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        provider, sep, pairs = part.partition(":")
        if not sep or not provider.strip():
            raise ConfigError(
                f"onnxruntime backend option provider_options: expected 'Provider:key=value,...' parts "
                f"separated by ';', found {part!r}"
            )
        opts = out.setdefault(provider.strip(), {})
        for pair in pairs.split(","):
            key, eq, val = pair.partition("=")
            if not eq or not key.strip():
                raise ConfigError(
                    f"onnxruntime backend option provider_options: expected key=value in {part!r}, found {pair!r}"
                )
            opts[key.strip()] = val.strip()
    return out


def _bool_option(name: str, value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"onnxruntime backend option {name}: expected true or false, found {value!r}")


def _int_option(name: str, value: int | str | None, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"onnxruntime backend option {name}: expected an integer >= {minimum}, found {value!r}") from None
    if number < minimum:
        raise ConfigError(f"onnxruntime backend option {name}: expected an integer >= {minimum}, found {value!r}")
    return number


def check_precision(providers: Sequence[str], precision: str) -> None:
    """Refuse a precision the providers cannot honour, saying what would."""
    if precision == "fp32":
        return
    if not any(p in GPU_PROVIDERS for p in providers):
        raise BackendUnavailable(
            f"the onnxruntime CPU backend compiles fp32 only, asked for {precision}; "
            "use --precision fp32 (fp16 gives no speed-up on CPU EPs)"
        )
    if precision == "fp16":
        if TENSORRT in providers:
            return
        raise BackendUnavailable(
            f"onnxruntime with {','.join(providers)} cannot run fp16: the CUDA provider runs each node "
            "in its tensors' precision, so fp16 needs a float16-converted ONNX, which this backend does "
            f"not make; add {TENSORRT} first in providers (trt_fp16_enable), or use --precision fp32"
        )
    raise BackendUnavailable(
        f"onnxruntime with {','.join(providers)} runs fp32 or (with {TENSORRT}) fp16; asked for "
        f"{precision}: use --precision fp16 or fp32"
    )


def _dims(batch: int, shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in (batch, *shape))


def harness_provider_options(
    provider: str, device_id: int, target: CompileTarget, engine_dir: Path | None
) -> dict[str, str]:
    """The options this backend sets itself for ``provider`` (users may not contradict them)."""
    if provider == CUDA:
        return {"device_id": str(device_id)}
    if provider == TENSORRT:
        name = target.input_name
        opts = {
            "device_id": str(device_id),
            "trt_fp16_enable": "True" if target.precision == "fp16" else "False",
            # trtexec's --minShapes/--optShapes/--maxShapes: short last batches need no rebuild.
            "trt_profile_min_shapes": f"{name}:{_dims(1, target.input_shape)}",
            "trt_profile_opt_shapes": f"{name}:{_dims(target.batch_size, target.input_shape)}",
            "trt_profile_max_shapes": f"{name}:{_dims(target.batch_size, target.input_shape)}",
        }
        if engine_dir is not None:
            opts |= {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(engine_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(engine_dir),
            }
        return opts
    return {}


def provider_list(
    providers: Sequence[str],
    target: CompileTarget,
    device_id: int = 0,
    user_options: Mapping[str, Mapping[str, str]] | None = None,
    engine_dir: Path | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """The ``(provider, options)`` pairs an InferenceSession is created with, in priority order.

    The harness's own options (device, TensorRT precision, profile shapes, engine cache) come
    first; ``user_options`` add to them and may not contradict them. The CPU provider is always
    last, as ONNX Runtime's fallback for nodes no other provider takes.
    """
    check_precision(providers, target.precision)
    user_options = user_options or {}
    stray = sorted(set(user_options) - set(providers))
    if stray:
        raise ConfigError(
            f"onnxruntime backend option provider_options names {', '.join(stray)}, which is not in "
            f"providers ({','.join(providers)}); add it to providers or drop its options"
        )
    out: list[tuple[str, dict[str, str]]] = []
    for provider in providers:
        opts = harness_provider_options(provider, device_id, target, engine_dir)
        for key, value in user_options.get(provider, {}).items():
            if key in opts and opts[key].lower() != value.lower():
                raise ConfigError(
                    f"onnxruntime backend option provider_options: {provider} {key}={value} contradicts "
                    f"{opts[key]!r}, which the harness derives from the chip and target (device_id, "
                    "precision, batch size, engine cache); change those instead, or drop the option"
                )
            opts[key] = value
        out.append((provider, opts))
    if CPU not in providers:
        out.append((CPU, {}))
    return out


# --------------------------------------------------------------------------------------------
# Sessions


def _input_dtype(session: Any, where: str) -> np.dtype:
    kind = session.get_inputs()[0].type
    if kind not in _INPUT_DTYPES:
        raise InferenceError(f"{where}: the model's input is {kind}; expected tensor(float) or tensor(uint8)")
    return np.dtype(_INPUT_DTYPES[kind])


class OnnxRuntimeSession:
    """One ORT InferenceSession; ``infer`` takes (N<=batch_size, 3, H, W) of the model's input dtype
    (float32 normally, uint8 for a model made by :mod:`harness.model.uint8_input`)."""

    def __init__(self, session: Any, target: CompileTarget, num_classes: int):
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self.batch_size = target.batch_size
        self._shape = target.input_shape
        self._num_classes = num_classes
        self.input_dtype = _input_dtype(session, "onnxruntime")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.batch_size, self._shape, "onnxruntime", self.input_dtype)
        try:
            (out,) = self._session.run([self._output], {self._input: batch})
        except Exception as exc:  # ORT raises its own exception types per failure kind
            raise InferenceError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        return check_logits(out, batch.shape[0], self._num_classes, "onnxruntime")


class OnnxRuntimeBoundSession:
    """A session whose inputs and outputs live on the device (IOBinding).

    ``infer`` copies the batch to the device, then times only the run (synchronized), then copies
    the logits back; :meth:`compute_times_ms` lists those run times, which the timing loop uses as
    its ``device_compute`` clock. ``device_type`` is ``"cuda"`` on a GPU (``"cpu"`` exercises the
    same path on a host without one).
    """

    def __init__(self, session: Any, target: CompileTarget, num_classes: int, device_type: str, device_id: int):
        self._ort = _ort()
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self.batch_size = target.batch_size
        self._shape = target.input_shape
        self._num_classes = num_classes
        self.input_dtype = _input_dtype(session, "onnxruntime")
        self.device_type = device_type
        self.device_id = device_id
        self._compute_ms: list[float] = []

    def compute_times_ms(self) -> Sequence[float]:
        """Milliseconds of every device run since the session opened, transfers excluded."""
        return tuple(self._compute_ms)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.batch_size, self._shape, "onnxruntime", self.input_dtype)
        try:
            value = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), self.device_type, self.device_id)
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(self._input, value)
            binding.bind_output(self._output, self.device_type, self.device_id)
            binding.synchronize_inputs()
            started = time.perf_counter_ns()
            self._session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            elapsed = time.perf_counter_ns() - started
            (out,) = binding.copy_outputs_to_cpu()
        except Exception as exc:  # ORT raises its own exception types per failure kind
            raise InferenceError(
                f"onnxruntime ({self.device_type}:{self.device_id}) failed on a batch of shape {batch.shape}: {exc}"
            ) from exc
        self._compute_ms.append(elapsed / 1e6)
        return check_logits(out, batch.shape[0], self._num_classes, "onnxruntime")


# --------------------------------------------------------------------------------------------
# The backend


@dataclass(frozen=True)
class _Plan:
    """What one session is created with (for the record and the tests)."""

    providers: list[tuple[str, dict[str, str]]]
    device_id: int
    io_binding: bool


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU provider, or on GPU providers where ``onnxruntime-gpu`` and a GPU are.

    Options (``backend_options`` in ``fixtures/chips.toml`` arrive as strings):

    - ``threads``: intra-op threads (None: ORT's default, one per core).
    - ``providers``: comma-separated provider names in priority order (default: CPU).
    - ``device_id``: the GPU, for compile (TensorRT builds its engine there) and as ``open``'s
      default device.
    - ``provider_options``: extra per-provider options, ``Provider:key=value,...;Provider:...``.
    - ``io_binding``: ``auto`` (default: on for GPU providers), ``true`` or ``false``.

    The precision comes from the target (the chip's ``precision``); see the module docstring.
    """

    name: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        threads: int | str | None = None,
        providers: str | Sequence[str] | None = None,
        device_id: int | str = 0,
        provider_options: str | Mapping[str, Mapping[str, Any]] | None = None,
        io_binding: bool | str = "auto",
    ):
        self.threads = _int_option("threads", threads, 1)
        self.providers = parse_providers(providers)
        self.device_id = _int_option("device_id", device_id, 0) or 0
        self.provider_options = parse_provider_options(provider_options)
        stray = sorted(set(self.provider_options) - set(self.providers))
        if stray:
            raise ConfigError(
                f"onnxruntime backend option provider_options names {', '.join(stray)}, which is not in "
                f"providers ({','.join(self.providers)}); add it to providers or drop its options"
            )
        self.io_binding = self.uses_gpu if str(io_binding).lower() == "auto" else _bool_option("io_binding", io_binding)

    @property
    def uses_gpu(self) -> bool:
        """Whether any requested provider runs on an NVIDIA GPU."""
        return any(p in GPU_PROVIDERS for p in self.providers)

    @property
    def cpu_only(self) -> bool:
        return self.providers == (CPU,)

    def unavailable_reason(self) -> str | None:
        try:
            ort = _ort()
        except BackendUnavailable as exc:
            return str(exc)
        available = list(ort.get_available_providers())
        problems = []
        missing = [p for p in self.providers if p not in available]
        if missing:
            packages = sorted({PROVIDER_PACKAGES.get(p, "an onnxruntime build with it") for p in missing})
            if packages == ["onnxruntime-gpu"]:
                fix = GPU_INSTALL_HINT + (TENSORRT_INSTALL_HINT if TENSORRT in missing else "")
            else:
                fix = f"install {' or '.join(packages)}"
            problems.append(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this ONNX Runtime "
                f"({ort_distribution()}; available: {', '.join(available)}); it needs "
                f"{', '.join(packages)}: {fix}"
            )
        if self.uses_gpu:
            gpus = nvidia_gpu_count()
            if gpus == 0:
                problems.append(
                    f"no CUDA device: the NVIDIA driver lists no GPU ({NVIDIA_GPUS_DIR} is missing or empty, "
                    "or CUDA_VISIBLE_DEVICES hides them); run on a host with an NVIDIA GPU and its driver"
                )
            elif self.device_id >= gpus:
                problems.append(
                    f"device_id {self.device_id} asked for, but only {gpus} CUDA device(s) are visible "
                    f"(0..{gpus - 1}); fix backend_options.device_id in fixtures/chips.toml"
                )
        return "; ".join(problems) if problems else None

    def _require_available(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)

    def version(self) -> str:
        return str(_ort().__version__)

    def compile_fields(self) -> Mapping[str, str]:
        if self.cpu_only:
            # Exactly the fields the CPU backend always had: existing cached artifacts stay valid.
            return {"onnxruntime": self.version(), "optimization": "extended", "provider": CPU}
        return {
            "onnxruntime": self.version(),
            "distribution": ort_distribution(),
            "optimization": "basic",
            "providers": ",".join(self.providers),
            "provider_options": json.dumps(self.provider_options, sort_keys=True),
            # A TensorRT engine (and CUDA kernel choices) belong to one GPU model and TensorRT version.
            "gpus": ",".join(nvidia_gpu_models()) or "none visible",
            **({"tensorrt": tensorrt_version()} if TENSORRT in self.providers else {}),
        }

    def _options(self, ort: Any) -> Any:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def plan(self, target: CompileTarget, engine_dir: Path | None, device_id: int | None = None) -> _Plan:
        """The providers with options, device and IOBinding choice a session for ``target`` uses."""
        device = self.device_id if device_id is None else device_id
        providers = provider_list(self.providers, target, device, self.provider_options, engine_dir)
        return _Plan(providers=providers, device_id=device, io_binding=self.io_binding)

    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        check_precision(self.providers, target.precision)
        ort = _ort()
        artifact = Path(out_dir) / ARTIFACT_NAME
        opts = self._options(ort)
        opts.optimized_model_filepath = str(artifact)
        if self.cpu_only:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        else:
            self._require_available()
            # Basic level only: portable to any provider, and saveable (see the module docstring).
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ort.InferenceSession(str(onnx_path), sess_options=opts, providers=[CPU])
        if not artifact.is_file():
            raise InferenceError(f"onnxruntime did not write the optimized model {artifact}")
        if TENSORRT in self.providers:
            engine_dir = Path(out_dir) / TRT_ENGINE_DIR
            engine_dir.mkdir(exist_ok=True)
            # Build the TensorRT engine now, once, into the artifact's directory: one full batch.
            session = self._inference_session(artifact, target, engine_dir, self.device_id)
            dtype = _input_dtype(session, "onnxruntime")
            session.run(None, {session.get_inputs()[0].name: np.zeros((target.batch_size, *target.input_shape), dtype)})
            del session
        return artifact

    def _inference_session(self, artifact: Path, target: CompileTarget, engine_dir: Path | None, device_id: int) -> Any:
        """An ORT InferenceSession on the planned providers; refuses a silent fallback to the CPU."""
        ort = _ort()
        opts = self._options(ort)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        plan = self.plan(target, engine_dir, device_id)
        session = ort.InferenceSession(
            str(artifact), sess_options=opts, providers=[p for p, _ in plan.providers],
            provider_options=[o for _, o in plan.providers],
        )
        # ORT falls back to the CPU with only a logged warning when a provider fails to load
        # (e.g. missing CUDA libraries): a GPU figure measured on the CPU must never be reported.
        got = list(session.get_providers())
        lost = [p for p in self.providers if p not in got]
        if lost:
            raise BackendUnavailable(
                f"onnxruntime created the session without {', '.join(lost)} (it runs on {', '.join(got)}): "
                "the provider failed to load; check the CUDA/cuDNN/TensorRT libraries on LD_LIBRARY_PATH"
            )
        return session

    @contextmanager
    def _session(
        self, artifact: Path, target: CompileTarget, engine_dir: Path | None, device_id: int, num_classes: int
    ) -> Iterator[OnnxRuntimeSession | OnnxRuntimeBoundSession]:
        session = self._inference_session(artifact, target, engine_dir, device_id)
        wrapped: OnnxRuntimeSession | OnnxRuntimeBoundSession
        if self.io_binding:
            wrapped = OnnxRuntimeBoundSession(session, target, num_classes, "cuda" if self.uses_gpu else "cpu", device_id)
        else:
            wrapped = OnnxRuntimeSession(session, target, num_classes)
        try:
            yield wrapped
        finally:
            del wrapped, session

    @contextmanager
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int | None = None, num_classes: int = 1000
    ) -> Iterator[OnnxRuntimeSession | OnnxRuntimeBoundSession]:
        """Load ``artifact``; ``device_id`` (GPU providers) defaults to the backend's ``device_id``."""
        check_precision(self.providers, target.precision)
        if not self.cpu_only:
            self._require_available()
        engine_dir = Path(artifact).parent / TRT_ENGINE_DIR if TENSORRT in self.providers else None
        device = self.device_id if device_id is None else device_id
        with self._session(Path(artifact), target, engine_dir, device, num_classes) as session:
            yield session

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self.version(),
            "distribution": ort_distribution(),
            "provider": self.providers[0],
            "providers": list(self.providers),
            "provider_options": {p: dict(o) for p, o in self.provider_options.items()},
            "device_id": self.device_id if self.uses_gpu else None,
            "io_binding": self.io_binding,
            "threads": self.threads or os.cpu_count(),
            "spinning": False,
        }
