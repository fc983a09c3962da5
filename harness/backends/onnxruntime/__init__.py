"""ONNX Runtime: the host CPU, and NVIDIA GPUs through the CUDA and TensorRT execution providers.

This package's face is :class:`OnnxRuntimeBackend` (here: options, compile, open). Its parts:
:mod:`.providers` (the chip's providers and options, precision rules, the provider list),
:mod:`.sessions` (the plain and the IOBinding session), :mod:`.host` (the installed ONNX Runtime,
NVIDIA GPUs, TensorRT), :mod:`.quantize` (the static INT8 quantizer: ``--precision int8`` compiles the
QDQ model it writes, on the CPU provider), :mod:`.trt_int8` (TensorRT's INT8 calibration table, for
``--precision int8`` with the TensorRT provider first; contract-tested, docs/int8.md).

CPU (the default, ``providers="CPUExecutionProvider"``): the compiled artifact is the graph ORT
optimized offline at the extended level (portable across CPUs); fp32 only, because fp16 models
give no speed-up on CPU execution providers (measured on the CPUs this suite runs on).

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
- ``int8``: the CPU provider runs the QDQ model of :mod:`.quantize`; with TensorRT first, TensorRT
  quantizes the float ONNX itself from the calibration table :mod:`.trt_int8` computes here
  (``trt_int8_enable``; the tables are copied into ``trt_engines/``, where the EP reads them, and
  beside the artifact, where trtexec finds its cache); the CUDA provider alone is refused.

On a GPU the session binds inputs and outputs with IOBinding (``io_binding``, :mod:`.sessions`):
only the device run is timed and reported through ``compute_times_ms()``, the timing loop's
``device_compute`` clock.

Spinning is disabled on every session (``session.intra_op.allow_spinning = 0``): with it,
timings collapse whenever anything else runs on the host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import Backend, BackendUnavailable, InferenceError
from harness.backends.onnxruntime.host import (
    INSTALL_HINT,
    cuda_device_problem,
    load_ort,
    nvidia_gpu_count,
    nvidia_gpu_models,
    ort_distribution,
    tensorrt_version,
)
from harness.backends.onnxruntime.providers import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    OPTIONS,
    TENSORRT,
    check_precision,
    check_provider_options,
    missing_providers_problem,
    parse_provider_options,
    parse_providers,
    provider_list,
)
from harness.backends.onnxruntime.quantize import OrtQuantizer
from harness.backends.onnxruntime.sessions import (
    OnnxRuntimeBoundSession,
    OnnxRuntimeConcurrentSession,
    OnnxRuntimeSession,
    input_dtype,
)
from harness.backends.onnxruntime.trt_int8 import TensorRtQuantizer, calibration_tables, link_or_copy
from harness.specs import OFFLINE, SINGLE_STREAM, CompileTarget

__all__ = [
    "ARTIFACT_NAME", "CPU", "CUDA", "INSTALL_HINT", "TENSORRT", "TRT_ENGINE_DIR", "OnnxRuntimeBackend",
    "OnnxRuntimeBoundSession", "OnnxRuntimeSession", "check_precision", "nvidia_gpu_count", "nvidia_gpu_models",
    "ort_distribution", "parse_provider_options", "parse_providers", "provider_list", "tensorrt_version",
]

ARTIFACT_NAME = "model.ort.onnx"
TRT_ENGINE_DIR = "trt_engines"


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
        self.threads = OPTIONS.integer("threads", threads, 1)
        self.providers = parse_providers(providers)
        self.device_id = OPTIONS.integer("device_id", device_id, 0) or 0
        self.provider_options = parse_provider_options(provider_options)
        check_provider_options(self.providers, self.provider_options)
        auto = str(io_binding).lower() == "auto"
        self.io_binding = self.uses_gpu if auto else OPTIONS.flag("io_binding", io_binding)

    @property
    def uses_gpu(self) -> bool:
        """Whether any requested provider runs on an NVIDIA GPU."""
        return any(p in GPU_PROVIDERS for p in self.providers)

    @property
    def cpu_only(self) -> bool:
        return self.providers == (CPU,)

    def unavailable_reason(self) -> str | None:
        try:
            ort = load_ort()
        except BackendUnavailable as exc:
            return str(exc)
        available = list(ort.get_available_providers())
        problems = []
        missing = [p for p in self.providers if p not in available]
        if missing:
            problems.append(missing_providers_problem(missing, available, ort_distribution()))
        if self.uses_gpu and (gpu_problem := cuda_device_problem(self.device_id)):
            problems.append(gpu_problem)
        return "; ".join(problems) if problems else None

    def _require_available(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)

    def version(self) -> str:
        return str(load_ort().__version__)

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

    def offline_requests(self) -> int:
        """Requests in flight in the ``offline`` scenario on the CPU: one per thread (``threads``, or
        every core), each run on one thread, as OpenVINO's THROUGHPUT mode makes one stream per core."""
        return self.threads or os.cpu_count() or 1

    def _options(self, ort: Any, threads: int | None = None) -> Any:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = threads or self.threads
        if threads:
            opts.intra_op_num_threads = threads
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
        ort = load_ort()
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
            if target.precision == "int8":  # the EP reads its table from the engine cache path, trtexec beside
                for table in calibration_tables(onnx_path):
                    link_or_copy(table, engine_dir / table.name)
                    link_or_copy(table, Path(out_dir) / table.name)
            # Build the TensorRT engine now, once, into the artifact's directory: one full batch.
            session = self._inference_session(artifact, target, engine_dir, self.device_id)
            dtype = input_dtype(session, "onnxruntime")
            session.run(None, {session.get_inputs()[0].name: np.zeros((target.batch_size, *target.input_shape), dtype)})
            del session
        return artifact

    def _inference_session(self, artifact: Path, target: CompileTarget, engine_dir: Path | None, device_id: int,
                           threads: int | None = None) -> Any:
        """An ORT InferenceSession on the planned providers; refuses a silent fallback to the CPU."""
        ort = load_ort()
        opts = self._options(ort, threads)
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
        self, artifact: Path, target: CompileTarget, engine_dir: Path | None, device_id: int, num_classes: int,
        scenario: str = SINGLE_STREAM,
    ) -> Iterator[OnnxRuntimeSession | OnnxRuntimeBoundSession]:
        concurrent = scenario == OFFLINE and self.cpu_only and not self.io_binding
        session = self._inference_session(artifact, target, engine_dir, device_id, threads=1 if concurrent else None)
        wrapped: OnnxRuntimeSession | OnnxRuntimeBoundSession
        if concurrent:
            wrapped = OnnxRuntimeConcurrentSession(session, target, num_classes, self.offline_requests())
        elif self.io_binding:
            wrapped = OnnxRuntimeBoundSession(
                session, target, num_classes, "cuda" if self.uses_gpu else "cpu", device_id
            )
        else:
            wrapped = OnnxRuntimeSession(session, target, num_classes)
        try:
            yield wrapped
        finally:
            del wrapped, session

    @contextmanager
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int | None = None, num_classes: int = 1000,
        scenario: str = SINGLE_STREAM,
    ) -> Iterator[OnnxRuntimeSession | OnnxRuntimeBoundSession]:
        """Load ``artifact``; ``device_id`` (GPU providers) defaults to the backend's ``device_id``.

        ONNX Runtime has no throughput mode of its own. On the CPU, ``offline`` runs
        :meth:`offline_requests` requests at once on one session, each on one intra-op thread
        (``InferenceSession.run`` is thread-safe): the layout of OpenVINO's THROUGHPUT hint, one
        stream per core. On a GPU (IOBinding, device-compute clock) ``offline`` runs one request at
        a time and its figures say ``requests = 1``."""
        check_precision(self.providers, target.precision)
        if not self.cpu_only:
            self._require_available()
        engine_dir = Path(artifact).parent / TRT_ENGINE_DIR if TENSORRT in self.providers else None
        device = self.device_id if device_id is None else device_id
        with self._session(Path(artifact), target, engine_dir, device, num_classes, scenario) as session:
            yield session

    def quantizer(self) -> OrtQuantizer | TensorRtQuantizer:
        """ONNX Runtime's static QDQ quantizer (:mod:`.quantize`) on the CPU provider; TensorRT's
        calibration table (:mod:`.trt_int8`, ``[int8] tensorrt_calibration``) with TensorRT first."""
        check_precision(self.providers, "int8")
        if self.providers[0] == TENSORRT:
            return TensorRtQuantizer()
        return OrtQuantizer()

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
            **({"quantization": dict(self.quantization)} if self.quantization else {}),
        }
