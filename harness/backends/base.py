"""The Backend and Session base classes every inference runtime implements, and the registry.

Build is separate from run: ``compile`` is pure and cached by the caller (its output depends only
on the ONNX file, the target and ``version()``); ``open`` owns the device and yields a Session.
Timing never lives inside a backend. Optional members are plain members with defaults here,
never probed with ``getattr``.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, final

import numpy as np

from harness.backends.options import OptionReader
from harness.backends.quantization import Quantizer
from harness.errors import HarnessError, NotApplicable, NotReady
from harness.specs import SINGLE_STREAM, CompileTarget


class BackendUnavailable(NotApplicable, RuntimeError):
    """The backend's SDK, tool or device is missing; the message says what to install."""


class DeviceBusy(NotReady, RuntimeError):
    """The device is busy or unhealthy; timing it would not certify anything (the message says why)."""


class InferenceError(HarnessError, RuntimeError):
    """A session was given input it cannot run, or produced output that is not logits."""


class Session(ABC):
    """One loaded model on one device, as :meth:`Backend.open` yields it.

    - ``batch_size``: the most images one :meth:`infer` takes;
    - ``input_shape``: (C, H, W) of one image; ``num_classes``: the logits' width;
    - ``input_dtype``: the dtype :meth:`infer` takes; float32 (normalized images) unless the model
      takes uint8 pixels (:mod:`harness.model.uint8_input`, Ascend's AIPP);
    - ``where``: the session's name at the head of its error messages;
    - ``streams`` / ``requests``: the execution streams and the requests in flight of the session's
      ``offline`` scenario (:meth:`submit`); 1 and 1 where the runtime has no asynchronous requests.

    :meth:`infer` is the contract, the same on every backend: the batch is checked
    (:func:`check_batch`), the backend's :meth:`_forward` runs it, and its output is checked as
    logits (:func:`check_logits`). A backend implements only :meth:`_forward`; an asynchronous
    :meth:`submit` checks its batches and outputs with the same :meth:`_check_batch` and
    :meth:`_check_logits`.

    A session that knows its device's compute time per run also has ``compute_times_ms()``
    (:class:`harness.run.timing.ReportsComputeTime`); the others have no such member, so the
    timing loop's device clock is only ever a real one.
    """

    batch_size: int
    input_shape: tuple[int, int, int]
    num_classes: int
    input_dtype: np.dtype = np.dtype(np.float32)
    where: str = "session"
    streams: int = 1
    requests: int = 1

    @final
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) of ``input_dtype`` with N <= batch_size -> (N, classes) float32 logits."""
        self._check_batch(batch)
        return self._check_logits(self._forward(batch), batch.shape[0])

    @abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """The runtime's own run of a checked batch: its N rows of output, before they are checked
        as logits (any float dtype; a runtime failure raised as :class:`InferenceError`)."""

    def _check_batch(self, batch: np.ndarray) -> None:
        check_batch(batch, self.batch_size, self.input_shape, self.where, self.input_dtype)

    def _check_logits(self, out: np.ndarray, n: int) -> np.ndarray:
        return check_logits(out, n, self.num_classes, self.where)

    def submit(self, batch: np.ndarray, done: Callable[[np.ndarray], None] | None) -> None:
        """Start ``batch`` (a full batch, kept unchanged until it completes) and call ``done`` with
        its logits when it completes (``None``: nothing is called and the output is not read);
        blocks while all ``requests`` are busy. The default runs it synchronously through
        :meth:`infer`: the session then has one request in flight, as it says."""
        out = self.infer(batch)
        if done is not None:
            done(out)

    def wait_all(self) -> None:
        """Return when every submitted batch has completed and called back."""
        return None  # the default submit() completes each batch before it returns


class Backend(ABC):
    """What every backend is; subclasses implement the abstract members and override the defaults.

    Defaults (override where the backend has more to say):

    - :meth:`describe`: what ran (threads, providers, precision), into the records;
    - :meth:`compile_key`: target-dependent compile inputs (Ascend: the ATC command and AIPP config),
      added to the compiled artifact's cache key and manifest (``Workbench.compiled``);
    - :meth:`preflight`: raise :class:`DeviceBusy` before timing (Ascend: npu-smi);
    - :meth:`compiled_precision`: the precision the records show for a target (Ascend: the ATC mode);
    - :meth:`quantizer`: the INT8 quantizer (``--precision int8``; none by default);
    - ``handles_uint8_input``: compiles normalization in itself (:func:`folds_uint8_input`);
    - ``threads``: the host threads the runtime runs with; None: its default, or not applicable.

    Options (``backend_options`` in fixtures/chips.toml) are the constructor's keyword parameters
    (:meth:`option_names`), read with :class:`harness.backends.options.OptionReader`.
    """

    name: ClassVar[str]
    handles_uint8_input: ClassVar[bool] = False
    threads: int | None = None
    # What quantized the artifact this backend compiled last (harness.run.int8 sets it): the types and
    # tool a perf or accuracy record of an int8 run says, through describe(). None: nothing quantized.
    quantization: Mapping[str, Any] | None = None

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options this backend takes: its constructor's keyword parameters, sorted."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
        return tuple(sorted(p.name for p in params if p.kind in kinds))

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when usable; otherwise what is missing and the command that installs it."""

    @abstractmethod
    def version(self) -> str:
        """Runtime version string: part of every compiled-artifact cache key and every result."""

    @abstractmethod
    def compile_fields(self) -> Mapping[str, str]:
        """Extra inputs that decide compiled artifacts (tool versions, options)."""

    @abstractmethod
    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        """Write the compiled artifact for ``target`` into ``out_dir`` and return its path."""

    @abstractmethod
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int = 0, num_classes: int = 1000,
        scenario: str = SINGLE_STREAM,
    ) -> AbstractContextManager[Session]:
        """Load ``artifact`` on ``device_id`` set up for ``scenario`` (a backend with a throughput
        mode uses it for ``offline``); the context manager releases the device."""

    def describe(self) -> dict[str, Any]:
        """What ran, for the records (call after :meth:`open`: some backends learn it there)."""
        return {"backend": self.name}

    def compile_key(self, target: CompileTarget) -> dict[str, Any]:
        """Target-dependent compile inputs beyond :meth:`compile_fields` and the target itself."""
        return {}

    def preflight(self, device_id: int) -> None:
        """Before timing on ``device_id``: raise :class:`DeviceBusy` if it cannot be timed now."""
        return None  # by default every device can be timed

    def compiled_precision(self, target: CompileTarget) -> str:
        """The precision the records show for a model compiled for ``target``."""
        return target.precision

    def quantizer(self) -> Quantizer:
        """This backend's INT8 post-training quantizer (harness.backends.quantization); by default
        there is none: ``--precision int8`` is then a skip that says so."""
        raise BackendUnavailable(f"the {self.name} backend has no INT8 quantizer here; --precision int8 runs on "
                                 "onnxruntime (CPU) and openvino")


_BACKENDS: dict[str, str] = {
    "onnxruntime": "harness.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "harness.backends.openvino:OpenVinoBackend",
    "ascend": "harness.backends.ascend:AscendBackend",
}


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The backend's class, its module imported lazily; an unknown name lists the known ones."""
    try:
        target = _BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown backend {name!r}; known backends: {', '.join(known_backends())}"
        ) from None
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def get_backend(name: str, **options: object) -> Backend:
    """An instance of the named backend with ``options`` (fixtures/chips.toml backend_options);
    an option name it does not take is a :class:`~harness.backends.options.BackendOptionError`."""
    cls = backend_class(name)
    OptionReader(name).check_names(options, cls.option_names())
    return cls(**options)


def folds_uint8_input(name: str) -> bool:
    """True when the backend takes uint8 pixels by compiling normalization in (Ascend's AIPP), so the
    float ONNX is kept and the target carries the mean and std instead."""
    return bool(backend_class(name).handles_uint8_input)


def check_logits(out: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    """Refuse output that is not finite (n, num_classes) float logits."""
    if not isinstance(out, np.ndarray):
        # e.g. a list from a graph whose output is a sequence or a map (ONNX ZipMap classifiers).
        raise InferenceError(
            f"{where}: expected a logits array of shape ({n}, {num_classes}), got a "
            f"{type(out).__name__}; is the model's output a tensor of class scores?"
        )
    if out.dtype.kind != "f":
        raise InferenceError(
            f"{where}: expected float logits, got {out.dtype} values of shape {tuple(out.shape)}; "
            "is the model's output class indices or labels instead of scores?"
        )
    if out.ndim != 2 or out.shape != (n, num_classes):
        raise InferenceError(
            f"{where}: expected logits of shape ({n}, {num_classes}), got {tuple(out.shape)}; "
            "is this a classifier with the right number of classes?"
        )
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).any(axis=1).sum())
        raise InferenceError(f"{where}: {bad} of {n} rows of logits contain NaN or Inf")
    return out.astype(np.float32, copy=False)


def check_batch(
    batch: np.ndarray,
    batch_size: int,
    shape: tuple[int, int, int],
    where: str,
    input_dtype: np.dtype | type = np.float32,
) -> None:
    """Refuse a batch a session cannot run: wrong shape, 0 or more than ``batch_size`` images, or
    a dtype other than ``input_dtype`` (float32 normalized images; uint8 raw pixels for models
    whose input was made uint8 by :mod:`harness.model.uint8_input`)."""
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(shape):
        raise InferenceError(
            f"{where}: expected input of shape (N, {', '.join(map(str, shape))}), got {tuple(batch.shape)}"
        )
    if not 0 < batch.shape[0] <= batch_size:
        raise InferenceError(f"{where}: batch of {batch.shape[0]} images; this session takes 1..{batch_size}")
    expected = np.dtype(input_dtype)
    if batch.dtype != expected:
        raise InferenceError(f"{where}: expected {expected} input, got {batch.dtype}")
