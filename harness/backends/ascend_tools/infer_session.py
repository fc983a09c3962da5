"""ais_bench's Python API on an Ascend device: its two generations, ACL finalize, the session.

``ais_bench.infer.interface.InferSession(device_id, model_path)`` loads an .om; ``infer([batch],
mode="static")`` returns the outputs as numpy arrays; the session's summary lists every run's NPU
compute time in ms (``exec_time_list``), which :meth:`AscendSession.compute_times_ms` hands to the
timing loop. An .om has a static batch: a short last batch is padded by repeating its last image,
and the padding's outputs are dropped.

Two generations of ais_bench are in use, with different shapes of the same API (read from their
published sources; paths and lines below are of those repositories):

- Ascend's tools repository (github.com/Ascend/tools, 2022-2023,
  ``ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py``): ``sumary()`` only (line 106),
  ``finalize(self)`` an INSTANCE method (lines 108-110), no ``free_resource``; ``exec_time_list``
  is a list of float ms (``backend/base/include/Base/ModelInfer/ModelInferenceProcessor.h`` line
  139, ``std::vector<float>``).
- The ait / msit benchmark (github.com/Ascend/msit history, last at commit 42a9c807 2024-06,
  ``ait/components/benchmark/ais_bench/infer/interface.py``): ``finalize()`` a STATICMETHOD
  (lines 119-122), ``free_resource()`` (lines 509-511), ``summary()`` only (lines 649-650);
  ``exec_time_list`` holds ``(start, end)`` ms pairs (``ModelInferenceProcessor.h`` line 141).

In both, finalize ends ACL for the whole process (``TensorContext::Finalize`` -> ``DeviceManager::
DestroyDevices`` -> ``aclFinalize``: tools ``backend/base/module/Tensor/TensorContext/TensorContext.cpp``
lines 43-54 and ``DeviceManager/DeviceManager.cpp`` lines 88-121), and ACL is initialized only once,
when the process-wide ``TensorContext`` singleton is built (TensorContext.cpp lines 26-41, 73-77):
after a finalize no session can be opened again in that process. So finalize runs once, at exit
(:class:`AclFinalizer`), as the last act of the process the way both CLIs end (tools
``ais_bench/infer/__main__.py`` line 351, ait ``benchmark_process.py`` line 566); a session is
released when it closes with ``free_resource()`` where that exists (ait ``benchmark_process.py``
line 562); the tools generation has no such call (its sessions are released when collected).

These objects are ais_bench's, not the harness's: which members they have is the generation's
API shape, so it is read from them (``inspect.getattr_static``, ``getattr``) here and only here.
"""

from __future__ import annotations

import atexit
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from harness.backends.ascend_tools import npu_smi
from harness.backends.ascend_tools.tools import ToolError, ToolNotFound
from harness.backends.base import (
    BackendUnavailable,
    InferenceError,
    Session,
)
from harness.specs import CompileTarget

AIS_BENCH_HINT = (
    "install ais_bench and aclruntime: the wheels from https://gitee.com/ascend/tools "
    "(ais-bench_workload/tool/ais_bench), `pip install aclruntime-*.whl ais_bench-*.whl`, on a host with "
    "the Ascend driver and CANN"
)

FinalizeKind = Literal["static", "instance", "absent"]


def exec_times_ms(summary: Any) -> list[float]:
    """``exec_time_list`` as milliseconds: floats (tools generation), or ``(start, end)`` ms pairs (ait)."""
    times = []
    for item in list(getattr(summary, "exec_time_list", [])):
        if isinstance(item, (tuple, list)):
            start, end = item[0], item[-1]
            times.append(float(end) - float(start))
        else:
            times.append(float(item))
    return times


def finalize_kind(infer_session_cls: Any) -> FinalizeKind:
    """How this ais_bench's ``InferSession.finalize`` is called: on the class (ait: a staticmethod), on a
    live session (Ascend/tools: an instance method), or not at all (absent)."""
    raw = inspect.getattr_static(infer_session_cls, "finalize", None)
    if raw is None:
        return "absent"
    if isinstance(raw, (staticmethod, classmethod)):
        return "static"
    return "instance" if callable(raw) else "absent"


def api_shape(infer_session_cls: Any) -> str:
    """The ais_bench API generation seen, for the records (e.g. ``finalize static, summary, free_resource``)."""
    parts = [f"finalize {finalize_kind(infer_session_cls)}"]
    parts += [name for name in ("summary", "sumary", "free_resource") if hasattr(infer_session_cls, name)]
    return ", ".join(parts)


def free_resource(infer_session: Any) -> None:
    """Release a closed session's device memory where the generation can (ait); the tools
    generation has no such call."""
    free = getattr(infer_session, "free_resource", None)
    if callable(free):
        free()


class AclFinalizer:
    """Calls ais_bench's finalize once per process, at exit, in the form the installed generation has.

    ait: ``InferSession.finalize()`` on the class. Ascend/tools: ``session.finalize()`` on a session,
    so the most recently opened one is kept until exit (or until the next one replaces it). A weak
    reference would not do: pytest tears its fixtures down before ``atexit`` runs, so the last session
    would be gone and ACL never explicitly finalized. Finalizing each session as it closes would not
    do either: it ends ACL, and the next InferSession of the run could not load (see the module
    docstring). The cost: one closed model of the old generation stays loaded until the next opens.
    """

    def __init__(self) -> None:
        self._registered = False
        self._static: Callable[[], Any] | None = None
        self._last_session: Any = None

    def track(self, infer_session_cls: Any, session: Any) -> None:
        """Remember how to finalize, after ``session`` of ``infer_session_cls`` was opened."""
        kind = finalize_kind(infer_session_cls)
        if kind == "absent":
            return
        if kind == "static":
            self._static, self._last_session = infer_session_cls.finalize, None
        else:
            self._static, self._last_session = None, session
        if not self._registered:
            atexit.register(self.finalize)
            self._registered = True

    def finalize(self) -> None:
        """Finalize now (at exit); nothing when no session was opened since the last run."""
        static, last = self._static, self._last_session
        self._static = self._last_session = None
        if static is not None:
            static()
        elif last is not None:
            last.finalize()


FINALIZER = AclFinalizer()


def load_failure(where: str, device_id: int, detail: str) -> Exception:
    """Why InferSession failed, told apart with `npu-smi info`.

    No driver on this host (no npu-smi): the backend is unavailable, a skip. A driver that lists
    other devices: a wrong --device-ids, a failure naming the devices. A device that exists: a real
    failure (e.g. an .om for another SoC), never hidden as a skip.
    """
    try:
        chips = npu_smi.discover()
    except ToolNotFound:
        return BackendUnavailable(f"{where}: {detail}; no Ascend driver on this host: {npu_smi.INSTALL_HINT}")
    except (ToolError, npu_smi.NpuSmiError) as exc:
        return InferenceError(f"{where}: {detail}; and the driver does not answer: {exc}")
    ids = sorted(c.device_id for c in chips)
    if device_id not in ids:
        return InferenceError(
            f"{where}: {detail}; npu-smi info lists device(s) {ids}, not {device_id}: fix --device-ids"
        )
    return InferenceError(f"{where}: {detail}")


class AscendSession(Session):
    """One loaded .om on one device (ais_bench InferSession), static batch, padded short batches.

    With ``aipp`` (normalization compiled in by ATC) the .om takes uint8 RGB pixels packed NHWC:
    ``input_dtype`` is uint8 and the NCHW batches are transposed to that layout.
    """

    def __init__(self, infer_session: Any, target: CompileTarget, num_classes: int, aipp: bool, where: str):
        self._s = infer_session
        self.batch_size = target.batch_size
        self.input_shape = target.input_shape
        self.num_classes = num_classes
        self.aipp = aipp
        self.input_dtype = np.dtype(np.uint8 if aipp else np.float32)
        self.where = where
        self._check_io()

    def _check_io(self) -> None:
        inputs = list(self._s.get_inputs())
        if len(inputs) != 1:
            raise InferenceError(f"{self.where}: the .om has {len(inputs)} inputs; expected one image input")
        c, h, w = self.input_shape
        itemsize = 1 if self.aipp else 4
        expected = self.batch_size * c * h * w * itemsize
        realsize = getattr(inputs[0], "realsize", expected)
        if int(realsize) != expected:
            raise InferenceError(
                f"{self.where}: the .om input {getattr(inputs[0], 'name', '?')} takes {realsize} bytes, expected "
                f"{expected} (batch {self.batch_size} x {c}x{h}x{w} {'uint8 (AIPP)' if self.aipp else 'float32'}); "
                "was it compiled for another batch size or input?"
            )

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n < self.batch_size:  # static batch: repeat the last image; its outputs are dropped below
            pad = np.repeat(batch[-1:], self.batch_size - n, axis=0)
            batch = np.concatenate([batch, pad], axis=0)
        x = batch.transpose(0, 2, 3, 1) if self.aipp else batch
        try:
            outputs = self._s.infer([np.ascontiguousarray(x)], mode="static")
        except Exception as exc:  # aclruntime raises RuntimeError with the ACL error code
            raise InferenceError(f"{self.where}: ais_bench inference failed: {type(exc).__name__}: {exc}") from exc
        if not outputs:
            raise InferenceError(f"{self.where}: ais_bench returned no outputs")
        out = np.asarray(outputs[0])
        if out.size != self.batch_size * self.num_classes:
            raise InferenceError(
                f"{self.where}: expected {self.batch_size} x {self.num_classes} logits from the first output, got "
                f"shape {tuple(out.shape)}; is this a classifier with {self.num_classes} classes?"
            )
        out = out.reshape(self.batch_size, self.num_classes)[:n]
        return out.astype(np.float32) if out.dtype == np.float16 else out

    def compute_times_ms(self) -> Sequence[float]:
        """NPU compute time of every run since the session opened (ais_bench's exec_time_list).

        ``summary()`` in ait, ``sumary()`` in the Ascend/tools generation (see the module docstring).
        """
        summary = getattr(self._s, "summary", None) or self._s.sumary
        return exec_times_ms(summary())
