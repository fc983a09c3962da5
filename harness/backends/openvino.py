"""OpenVINO on the host CPU: the compiled artifact is an IR (``model.xml`` + ``model.bin``).

``compile`` converts the ONNX with ``openvino.convert_model``, fixes the batch dimension to the
target's batch size (the IR is then the analogue of an ATC ``.om`` or a TensorRT plan: one static
shape, the fastest kernels for it) and writes the IR with ``openvino.save_model``. Weights are
kept in float32 (``compress_to_fp16=False``): ``save_model`` would otherwise round every weight to
float16 by default, and an "f32" run would silently not be one.

Precision is a runtime decision in OpenVINO: ``open`` sets ``INFERENCE_PRECISION_HINT`` from the
target's precision (fp32 -> f32, bf16 -> bf16, fp16 -> f16), always explicitly, because on a CPU
with AVX-512 BF16 or AMX the CPU plugin runs bf16 when nothing is said (measured on the CPUs this
suite runs on). A reduced precision the device does not list in ``OPTIMIZATION_CAPABILITIES``
is refused with :class:`BackendUnavailable` naming the missing capability (callers turn that into
a skip), before anything is converted. The precision the compiled model actually uses is read
back; when it differs from the request the session is refused unless ``allow_precision_fallback``
is set, and either way what ran is recorded in :meth:`OpenVinoBackend.describe` and on the
session. What the plugin quietly does instead depends on the CPU (OpenVINO 2026.4): with
AVX-512-BF16 but no native f16 it turns an f16 hint into bf16; without AVX-512 it turns bf16 and
f16 hints into f32.

The CPU of the machines this runs on changes: one day an EPYC with AVX-512-BF16, the
next one without any AVX-512, whose CPU plugin lists only ``FP32, INT8, BIN, EXPORT_IMPORT``.
OpenVINO's own ISA caps reproduce the second on the first: with ``OV_CPU_MAX_ISA=AVX2
ONEDNN_MAX_CPU_ISA=AVX2`` in the environment (read once per process) the plugin reports exactly
that list and compiles bf16 and f16 hints as f32 (``tests/test_cpu_features.py`` runs the suite
that way). ``describe`` records the caps when they are set, so such a run is never mistaken for
the machine's own.

Threads and scheduling: ``PERFORMANCE_HINT`` is ``LATENCY`` by default, i.e. one stream whose
threads all work on the one request a synchronous :meth:`Session.infer` issues. ``THROUGHPUT``
splits the cores into several streams that only pay off with as many requests in flight; with
the harness's one-request-at-a-time timing loop it leaves cores idle (EfficientNet-Lite0 at batch
8, f32, measured 2026-11-23 on a 2-core AMD EPYC VM with AVX-512-BF16: 343 images/s with LATENCY,
177 with THROUGHPUT).
``threads`` sets ``INFERENCE_NUM_THREADS``; the effective value is recorded. The CPU plugin has
no switch for its (TBB) worker spinning, unlike ONNX Runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.backends.base import (
    Backend,
    BackendUnavailable,
    InferenceError,
    Session,
)
from harness.backends.openvino_quantize import NncfQuantizer
from harness.backends.options import OptionReader
from harness.specs import OFFLINE, SINGLE_STREAM, CompileTarget

ARTIFACT_NAME = "model.xml"
INSTALL_HINT = "pip install 'openvino>=2024.0' (or: pip install -e '.[openvino]')"
# The suite's precision names -> OpenVINO element type names for INFERENCE_PRECISION_HINT. An int8 IR
# (NNCF's, harness.backends.openvino_quantize) runs its quantized layers in int8 whatever the hint, and
# the rest in the hint's precision: f32, said explicitly as for fp32 (a BF16 CPU would run bf16).
PRECISION_HINTS: Mapping[str, str] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# OPTIMIZATION_CAPABILITIES a device must list to run a reduced precision natively.
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
# What an x86 CPU needs for the CPU plugin to list them, for the refusal message.
_CAPABILITY_ISA = {"BF16": "AVX512_BF16 or AMX", "FP16": "AVX512_FP16 or AMX-FP16"}
# OpenVINO's and oneDNN's ISA caps (see the module docstring): recorded by describe() when set.
ISA_CAP_VARIABLES = ("OV_CPU_MAX_ISA", "ONEDNN_MAX_CPU_ISA")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
_NUMPY_DTYPES = {"f32": np.float32, "u8": np.uint8}
OPTIONS = OptionReader("openvino")


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(f"OpenVINO is not installed ({exc}); {INSTALL_HINT}") from exc
    return openvino


def precision_hint(precision: str) -> str:
    """The ``INFERENCE_PRECISION_HINT`` value for a suite precision (fp32 / bf16 / fp16)."""
    try:
        return PRECISION_HINTS[precision]
    except KeyError:
        raise BackendUnavailable(
            f"the openvino backend runs precisions {', '.join(PRECISION_HINTS)}; asked for {precision!r}"
        ) from None


class OpenVinoSession(Session):
    """One compiled model; ``infer`` takes (N <= batch_size, 3, H, W) on one infer request, ``submit``
    keeps up to ``requests`` (the compiled model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``) in flight
    through an ``AsyncInferQueue``, as ``benchmark_app -api async`` does.

    The IR has a static batch: a short batch is zero-padded to ``batch_size`` and the padding's
    rows are dropped from the output, so every row is computed by the same kernels whatever the
    batch length. ``input_dtype`` is the IR's input element type (float32 normally, uint8 for a
    model made by :mod:`harness.model.uint8_input`). ``info`` records what the device actually uses.
    Inputs are shared with the runtime, not copied (``share_inputs=True``): the caller's array is
    the request's input tensor, which is why :meth:`submit` needs the batch unchanged until done.
    """

    where = "openvino"

    def __init__(self, compiled: Any, target: CompileTarget, num_classes: int, info: Mapping[str, Any]):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self.batch_size = target.batch_size
        self.input_shape = target.input_shape
        self.num_classes = num_classes
        element = compiled.input(0).get_element_type().to_string()
        if element not in _NUMPY_DTYPES:
            raise InferenceError(
                f"openvino: the IR's input is {element}; this harness feeds f32 (normalized) or u8 "
                "(raw pixels) images"
            )
        self.input_dtype = np.dtype(_NUMPY_DTYPES[element])
        self.info: dict[str, Any] = dict(info)
        self.streams = int(info.get("num_streams") or 1)
        self.requests = int(info.get("optimal_requests") or 1)
        self._queue: Any = None
        self._quiet: Any = None
        self._tensors: dict[int, tuple[np.ndarray, Any, np.ndarray]] = {}
        self._failure: BaseException | None = None

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n < self.batch_size:
            padded = np.zeros((self.batch_size, *self.input_shape), dtype=self.input_dtype)
            padded[:n] = batch
            return padded
        return np.ascontiguousarray(batch)

    @staticmethod
    def _rows(values: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` rows, copied: the request's output memory is shared and reused."""
        return np.array(values[:n], dtype=np.float32, copy=True)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        padded = self._padded(batch)
        try:
            result = self._request.infer({0: padded}, share_inputs=True, share_outputs=True)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses without a stable type
            raise InferenceError(f"openvino failed on a batch of shape {padded.shape}: {exc}") from exc
        return self._rows(result[self._output], n)

    def _completed(self, request: Any, done: Callable[[np.ndarray], None]) -> None:
        try:  # in OpenVINO's callback thread: an exception must reach wait_all, not vanish there
            logits = self._rows(request.get_tensor(self._output).data, self.batch_size)
            done(self._check_logits(logits, self.batch_size))
        except BaseException as exc:  # re-raised by wait_all
            self._failure = self._failure or exc

    def submit(self, batch: np.ndarray, done: Callable[[np.ndarray], None] | None) -> None:
        """On a queue whose completions call back into Python, or (``done=None``) on one without a
        callback, so that no Python runs when its requests complete (``benchmark_app``'s loop). The
        batch and the logits are checked as :meth:`infer` checks them."""
        self._check_batch(batch)
        if batch.shape[0] != self.batch_size:
            raise InferenceError(f"openvino: submit() takes full batches of {self.batch_size}, got {batch.shape[0]}")
        if self._queue is None:
            ov = _ov()
            self._queue = ov.AsyncInferQueue(self._compiled, self.requests)
            self._queue.set_callback(self._completed)
            self._quiet = ov.AsyncInferQueue(self._compiled, self.requests)
        try:
            inputs = {0: self._tensor(batch)}
            if done is None:
                self._quiet.start_async(inputs, share_inputs=True)
            else:
                self._queue.start_async(inputs, done, share_inputs=True)
        except Exception as exc:
            raise InferenceError(f"openvino failed to start a batch of shape {batch.shape}: {exc}") from exc

    def _tensor(self, batch: np.ndarray) -> Any:
        """An ``ov.Tensor`` over ``batch``'s memory, made once per batch until :meth:`wait_all`: the
        offline loop cycles one ring of batches, and wrapping an array on every start cost ~1.5%
        of the throughput against benchmark_app's preset tensors (docs/vendor-parity.md)."""
        known = self._tensors.get(id(batch))
        if known is not None and known[0] is batch:
            return known[1]
        padded = self._padded(batch)
        if not padded.flags.writeable:  # ov.Tensor shares writeable memory only (a read-only memmap)
            padded = padded.copy()
        tensor = _ov().Tensor(padded, shared_memory=True)
        self._tensors[id(batch)] = (batch, tensor, padded)  # keeps both alive while the id is in use
        return tensor

    def wait_all(self) -> None:
        self._tensors.clear()
        if self._queue is not None:
            self._queue.wait_all()
            self._quiet.wait_all()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise InferenceError(f"openvino: an asynchronous request failed: {failure}") from failure


class OpenVinoBackend(Backend):
    """OpenVINO, CPU device by default; IR compile, precision from the target, LATENCY hint.

    Options (``backend_options`` in ``fixtures/chips.toml`` arrive as strings):

    - ``threads``: ``INFERENCE_NUM_THREADS``; None lets OpenVINO use every core.
    - ``device``: the OpenVINO device name (``CPU``).
    - ``performance_hint``: ``LATENCY`` or ``THROUGHPUT`` for every session; by default it follows
      the scenario: ``LATENCY`` for ``single-stream``, ``THROUGHPUT`` for ``offline`` (the modes
      ``benchmark_app -hint latency`` / ``-hint throughput`` measure).
    - ``allow_precision_fallback``: run when the device would use another precision than asked
      (e.g. f16 requested, bf16 used) instead of refusing; what ran is recorded either way.
    """

    name: ClassVar[str] = "openvino"

    def __init__(
        self,
        threads: int | str | None = None,
        device: str = "CPU",
        performance_hint: str | None = None,
        allow_precision_fallback: bool | str = False,
    ):
        self.threads = OPTIONS.integer("threads", threads, 1)
        self.device = device
        self.performance_hint = (None if performance_hint is None
                                 else OPTIONS.choice("performance_hint", performance_hint, PERFORMANCE_HINTS))
        self.allow_precision_fallback = OPTIONS.flag("allow_precision_fallback", allow_precision_fallback)
        self._core: Any = None
        # requested INFERENCE_PRECISION_HINT -> the one the compiled models reported, per open().
        self.opened: dict[str, dict[str, Any]] = {}

    # -- availability and identity ----------------------------------------------------------------

    def core(self) -> Any:
        """The (lazily created, reused) ``openvino.Core``."""
        if self._core is None:
            self._core = _ov().Core()
        return self._core

    def unavailable_reason(self) -> str | None:
        try:
            core = self.core()
        except BackendUnavailable as exc:
            return str(exc)
        devices = list(core.available_devices)
        if self.device not in devices:
            return (
                f"OpenVINO {self.version()} has no device {self.device!r}; available: {', '.join(devices) or 'none'} "
                "(set backend_options.device in fixtures/chips.toml)"
            )
        return None

    def version(self) -> str:
        return str(_ov().get_version())

    def capabilities(self) -> list[str]:
        """The device's ``OPTIMIZATION_CAPABILITIES`` (e.g. BF16, FP16, INT8)."""
        return [str(c) for c in self.core().get_property(self.device, "OPTIMIZATION_CAPABILITIES")]

    def compile_fields(self) -> Mapping[str, str]:
        # Precision and batch come from the target, which the caller adds to the key itself.
        return {
            "openvino": self.version(),
            "device": self.device,
            "ir": "convert_model+save_model(compress_to_fp16=False), static batch",
        }

    # -- build ----------------------------------------------------------------------------------

    def _check_precision(self, precision: str) -> str:
        """The hint for ``precision``; refuses one the device cannot run natively (unless allowed)."""
        hint = precision_hint(precision)
        if precision == "int8" and "INT8" not in self.capabilities():
            raise BackendUnavailable(f"openvino {self.device} cannot run int8: its OPTIMIZATION_CAPABILITIES are "
                                     f"{', '.join(self.capabilities())}, no INT8")
        needed = _CAPABILITY.get(hint)
        if not needed or self.allow_precision_fallback:
            return hint
        capabilities = self.capabilities()
        if needed not in capabilities:
            isa = f" (x86 CPUs list it with {_CAPABILITY_ISA[needed]})" if self.device == "CPU" else ""
            runnable = ["fp32"] + [p for p, h in PRECISION_HINTS.items() if _CAPABILITY.get(h) in capabilities]
            raise BackendUnavailable(
                f"openvino {self.device} cannot run {precision} natively: its OPTIMIZATION_CAPABILITIES "
                f"are {', '.join(capabilities)}, no {needed}{isa}, so OpenVINO would silently run "
                f"another precision; use --precision {' or '.join(runnable)}, or set backend_options "
                "allow_precision_fallback = \"true\" to run and record what it picks"
            )
        return hint

    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        """Convert ``onnx_path`` to an IR with the batch fixed to ``target.batch_size``."""
        self._check_precision(target.precision)
        ov = _ov()
        try:  # an IR is NNCF's quantized model (--precision int8); anything else an ONNX file
            model = (self.core().read_model(str(onnx_path)) if Path(onnx_path).suffix == ".xml"
                     else ov.convert_model(str(onnx_path)))
        except Exception as exc:  # the frontends raise their own exception types
            raise InferenceError(f"openvino could not convert {onnx_path}: {type(exc).__name__}: {exc}") from exc
        if len(model.inputs) != 1:
            raise InferenceError(
                f"openvino: {onnx_path} has {len(model.inputs)} inputs "
                f"({[sorted(i.get_names()) for i in model.inputs]}); expected one image input"
            )
        names = model.inputs[0].get_names()
        if target.input_name not in names:
            raise InferenceError(
                f"openvino: {onnx_path} has input {sorted(names)}, expected {target.input_name!r} "
                "(input_name in fixtures/models.toml)"
            )
        model.reshape({target.input_name: [target.batch_size, *target.input_shape]})
        artifact = Path(out_dir) / ARTIFACT_NAME
        ov.save_model(model, str(artifact), compress_to_fp16=False)
        if not artifact.is_file() or not artifact.with_suffix(".bin").is_file():
            raise InferenceError(f"openvino did not write the IR {artifact} and its .bin")
        return artifact

    # -- run ------------------------------------------------------------------------------------

    def hint_for(self, scenario: str) -> str:
        """``PERFORMANCE_HINT`` for ``scenario``: the option when set, else the scenario's mode."""
        return self.performance_hint or ("THROUGHPUT" if scenario == OFFLINE else "LATENCY")

    def config(self, precision: str, scenario: str = SINGLE_STREAM) -> dict[str, Any]:
        """The properties ``open`` compiles with, by name (what the report records)."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision_hint(precision),
            "PERFORMANCE_HINT": self.hint_for(scenario),
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    @contextmanager
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int = 0, num_classes: int = 1000,
        scenario: str = SINGLE_STREAM,
    ) -> Iterator[OpenVinoSession]:
        """Compile the IR on the device with the target's precision hint (refusing a silent swap)
        and the scenario's performance hint."""
        if device_id != 0:
            raise BackendUnavailable(f"the openvino {self.device} backend has one device (0); asked for {device_id}")
        hint = self._check_precision(target.precision)
        core = self.core()
        config = self.config(target.precision, scenario)
        try:
            compiled = core.compile_model(core.read_model(str(artifact)), self.device, config)
        except Exception as exc:
            raise InferenceError(
                f"openvino could not compile {artifact} for {self.device} with {config}: {exc}"
            ) from exc
        used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if used != hint and not self.allow_precision_fallback:
            raise BackendUnavailable(
                f"openvino {self.device} was asked for {hint} ({target.precision}) but compiled {used}; "
                f"this device cannot run {hint} here (capabilities: {', '.join(self.capabilities())}); "
                "use another --precision, or set backend_options allow_precision_fallback = \"true\""
            )
        info = {
            "requested_precision": hint,
            "inference_precision": used,
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")).rsplit(".", 1)[-1],
            "num_streams": int(compiled.get_property("NUM_STREAMS")),
            "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "cpu_pinning": bool(compiled.get_property("ENABLE_CPU_PINNING")) if self.device == "CPU" else None,
        }
        self.opened[hint if scenario == SINGLE_STREAM else f"{hint} {scenario}"] = info
        session = OpenVinoSession(compiled, target, num_classes, info)
        try:
            yield session
        finally:
            del session, compiled

    def quantizer(self) -> NncfQuantizer:
        """NNCF's post-training quantization of the IR (:mod:`harness.backends.openvino_quantize`)."""
        return NncfQuantizer()

    def describe(self) -> dict[str, Any]:
        """Backend, version, device and, per precision opened so far, what the device really ran."""
        described: dict[str, Any] = {
            "backend": self.name,
            "version": self.version(),
            "device": self.device,
            "device_name": str(self.core().get_property(self.device, "FULL_DEVICE_NAME")),
            "capabilities": self.capabilities(),
            "performance_hint": self.performance_hint or "by scenario (LATENCY / THROUGHPUT)",
            "threads": self.threads or os.cpu_count(),
            "sessions": {k: dict(v) for k, v in self.opened.items()},
        }
        if self.quantization:
            described["quantization"] = dict(self.quantization)
        isa_cap = {name: os.environ[name] for name in ISA_CAP_VARIABLES if name in os.environ}
        if isa_cap:
            # The capabilities and precisions of a capped run are not the machine's own: say so.
            described["isa_cap"] = isa_cap
        return described
