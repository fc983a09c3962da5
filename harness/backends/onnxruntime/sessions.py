"""ONNX Runtime sessions: a plain ``InferenceSession`` run, and one bound to the device (IOBinding).

On a GPU the bound session copies each batch to the device first
(``OrtValue.ortvalue_from_numpy(x, "cuda", device_id)``), then times only the run and reports it
through ``compute_times_ms()``, so the timing loop's ``device_compute`` clock is compute only, like
trtexec's GPU compute time and ais_bench's ``NPU_compute_time``. The plain session has no such
clock (and no such member): it is timed by the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from harness.backends.base import InferenceError, Session
from harness.specs import CompileTarget

_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


def input_dtype(session: Any, where: str) -> np.dtype:
    """The dtype an ORT session's (first) input takes: float32, or uint8 (:mod:`harness.model.uint8_input`)."""
    kind = session.get_inputs()[0].type
    if kind not in _INPUT_DTYPES:
        raise InferenceError(f"{where}: the model's input is {kind}; expected tensor(float) or tensor(uint8)")
    return np.dtype(_INPUT_DTYPES[kind])


class OnnxRuntimeSession(Session):
    """One ORT InferenceSession; ``infer`` takes (N<=batch_size, 3, H, W) of the model's input dtype
    (float32 normally, uint8 for a model made by :mod:`harness.model.uint8_input`)."""

    where = "onnxruntime"

    def __init__(self, session: Any, target: CompileTarget, num_classes: int):
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self.batch_size = target.batch_size
        self.input_shape = target.input_shape
        self.num_classes = num_classes
        self.input_dtype = input_dtype(session, self.where)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        try:
            (out,) = self._session.run([self._output], {self._input: batch})
        except Exception as exc:  # ORT raises its own exception types per failure kind
            raise InferenceError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        return out


class OnnxRuntimeConcurrentSession(OnnxRuntimeSession):
    """An ORT session that also keeps ``requests`` runs in flight (:meth:`submit`), each on a worker
    thread of its own: the ``offline`` scenario on the CPU. The session is opened with one intra-op
    thread, so ``requests`` runs use ``requests`` cores (``streams == requests``)."""

    def __init__(self, session: Any, target: CompileTarget, num_classes: int, requests: int):
        super().__init__(session, target, num_classes)
        self.requests = self.streams = max(1, int(requests))
        self._slots = threading.BoundedSemaphore(self.requests)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def submit(self, batch: np.ndarray, done: Callable[[np.ndarray], None] | None) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.requests, thread_name_prefix="ort-request")
        self._slots.acquire()  # blocks while every request is busy

        def run() -> None:
            try:
                out = self.infer(batch)
            finally:
                self._slots.release()
            if done is not None:
                done(out)

        self._pending.append(self._pool.submit(run))

    def wait_all(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises a failed run's InferenceError here

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class OnnxRuntimeBoundSession(OnnxRuntimeSession):
    """A session whose inputs and outputs live on the device (IOBinding).

    ``infer`` copies the batch to the device, then times only the run (synchronized), then copies
    the logits back; :meth:`compute_times_ms` lists those run times, which the timing loop uses as
    its ``device_compute`` clock. ``device_type`` is ``"cuda"`` on a GPU (``"cpu"`` exercises the
    same path on a host without one).
    """

    def __init__(self, session: Any, target: CompileTarget, num_classes: int, device_type: str, device_id: int):
        import onnxruntime  # importable: ``session`` is one of its InferenceSessions

        super().__init__(session, target, num_classes)
        self._ort_value = onnxruntime.OrtValue
        self.device_type = device_type
        self.device_id = device_id
        self._compute_ms: list[float] = []

    def compute_times_ms(self) -> Sequence[float]:
        """Milliseconds of every device run since the session opened, transfers excluded."""
        return tuple(self._compute_ms)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        try:
            value = self._ort_value.ortvalue_from_numpy(np.ascontiguousarray(batch), self.device_type, self.device_id)
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
        return out
