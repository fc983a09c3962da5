"""The one timing loop and the sweep's proof that timed runs computed (MLPerf TEST01).

Sessions here are real: ONNX Runtime on a small real ONNX graph, fed real preprocessed pixels
from the project's synthetic JPEGs; two deliberately broken sessions stand in for runtimes that
skip work (one returns a stale buffer, one ignores its input).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.backends.base import InferenceError
from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.cache import ArtifactCache
from harness.data import (
    PreparedDataset,
    list_dataset,
    prepare_dataset,
    synthetic_dataset,
)
from harness.judge.ratios import best_batch
from harness.run.sweep import NotComputedError, accuracy_mode_logits, time_one
from harness.run.timing import (
    DEVICE_COMPUTE,
    WALL,
    Measurement,
    TimingError,
    measure,
    ring_indices,
)
from harness.specs import CompileTarget, PreprocessSpec, TimingPolicy
from tests.waiting import HANG_S

SPEC = PreprocessSpec(resize=40, crop=32)
SHAPE = (3, 32, 32)
CLASSES = 16
FAST = TimingPolicy(warmup_runs=2, min_runs=5, min_seconds=0.0, max_seconds=5.0, ring_images=12, computed_rtol=1e-4)
# The timing loop itself: run alone (serial: it times things), and under scripts/hog-check.sh (timing).
pytestmark = [pytest.mark.timing, pytest.mark.serial]


def conv_onnx(path: Path) -> Path:
    """A small real CNN: conv 3x3 -> relu -> global pool -> linear, dynamic batch."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    fc = rng.normal(size=(CLASSES, 8)).astype(np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv", [x], [y], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    cache = ArtifactCache(tmp_path_factory.mktemp("timing"))
    return prepare_dataset(list_dataset(synthetic_dataset(cache, 10, seed=5)), SPEC, cache, workers=1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_onnx(tmp_path_factory.mktemp("onnx") / "conv.onnx")


def open_session(model_path: Path, bs: int) -> Iterator:
    target = CompileTarget(chip="cpu", batch_size=bs, input_shape=SHAPE, input_name="input")
    return OnnxRuntimeBackend(threads=1).open(model_path, target, num_classes=CLASSES)


def test_ring_gives_full_batches_cycling_the_dataset() -> None:
    batches = ring_indices(dataset_size=10, batch_size=4, ring_images=128)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert [b.tolist() for b in ring_indices(3, 8, 128)] == [[0, 1, 2, 0, 1, 2, 0, 1]]
    assert [b.tolist() for b in ring_indices(100, 2, 3)] == [[0, 1], [2, 0]]
    with pytest.raises(TimingError, match="empty"):
        ring_indices(0, 4, 8)


def test_measure_times_real_runs_and_keeps_first_pass_outputs(model_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(4, *SHAPE)).astype(np.float32) for _ in range(3)]
    with open_session(model_path, 4) as session:
        timed = measure(session, batches, FAST)
        for batch, out in zip(batches, timed.outputs, strict=True):
            np.testing.assert_array_equal(out, session.infer(batch))
    m = timed.measurement
    assert m.clock == WALL and m.device_images_per_s is None
    assert m.runs >= FAST.min_runs and len(timed.outputs) == 3
    assert m.images_per_s == pytest.approx(m.runs * 4 / m.seconds)
    assert m.latency_ms_median <= m.latency_ms_p90 <= m.latency_ms_p99


def test_minimum_duration_is_honoured(model_path: Path) -> None:
    batches = [np.zeros((1, *SHAPE), np.float32) + 0.5]
    policy = TimingPolicy(warmup_runs=0, min_runs=1, min_seconds=0.2, max_seconds=1.0)
    with open_session(model_path, 1) as session:
        m = measure(session, batches, policy).measurement
    assert m.seconds >= 0.2 and m.runs > 1


class DeviceClockSession:
    """Stands in for ais_bench's InferSession, which reports NPU compute time per run."""

    batch_size = 2

    def __init__(self) -> None:
        self._times: list[float] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._times.append(4.0 if len(self._times) % 2 else 6.0)  # mean 5 ms
        return batch.reshape(batch.shape[0], -1)[:, :CLASSES].copy()

    def compute_times_ms(self) -> list[float]:
        return list(self._times)


def test_device_clock_is_used_when_the_session_reports_it() -> None:
    batches = [np.ones((2, *SHAPE), np.float32)]
    m = measure(DeviceClockSession(), batches, TimingPolicy(warmup_runs=1, min_runs=4, min_seconds=0.0)).measurement
    assert m.clock == DEVICE_COMPUTE
    assert m.device_images_per_s == pytest.approx(1000 * 2 / 5.0)
    assert m.images_per_s == m.device_images_per_s and m.wall_images_per_s > 0


def test_refuses_partial_batches_and_missing_device_times(model_path: Path) -> None:
    with open_session(model_path, 4) as session:
        with pytest.raises(TimingError, match="takes exactly 4"):
            measure(session, [np.zeros((3, *SHAPE), np.float32)], FAST)
        with pytest.raises(TimingError, match="no batches"):
            measure(session, [], FAST)

    class Forgetful(DeviceClockSession):
        def compute_times_ms(self) -> list[float]:
            return []

    with pytest.raises(TimingError, match="one entry per infer"):
        measure(Forgetful(), [np.ones((2, *SHAPE), np.float32)], FAST)


def test_best_prefers_the_highest_rate_then_the_smaller_batch() -> None:
    def m(bs: int, ips: float) -> Measurement:
        return Measurement(bs, 10, 1, 1.0, ips, WALL, ips, None, 1.0, 1.0, 1.0, 1.0, 0.0)

    chosen = best_batch([m(1, 100.0), m(8, 300.0), m(16, 300.0), m(32, 250.0)])
    assert chosen is not None and chosen.batch_size == 8
    assert best_batch([]) is None


@pytest.mark.parametrize("bs", [1, 4, 16])
def test_timed_outputs_equal_accuracy_mode_outputs_on_real_pixels(
    model_path: Path, prepared: PreparedDataset, bs: int
) -> None:
    with open_session(model_path, bs) as session:
        point = time_one(session, prepared, FAST)
        reference = accuracy_mode_logits(session, prepared, len(prepared))
    assert point.computed.top1_agreement == 100.0 and point.computed.max_rel_diff <= FAST.computed_rtol
    assert point.computed.count == len(ring_indices(len(prepared), bs, FAST.ring_images)) * bs
    assert point.measurement.batch_size == bs
    assert len(np.unique(reference.argmax(axis=1))) > 1, "real pixels should not all give one class"


class StaleSession:
    """A runtime that computes once and then returns the same buffer for every batch."""

    def __init__(self, inner) -> None:
        self.inner, self.batch_size, self._last = inner, inner.batch_size, None
        self.input_dtype = inner.input_dtype

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._last is None:
            self._last = self.inner.infer(batch)
        return self._last


class ZerosSession:
    """A runtime that times on zeros (ais_bench's pure-inference mode) whatever it is given."""

    def __init__(self, inner) -> None:
        self.inner, self.batch_size, self.calls = inner, inner.batch_size, 0
        self.input_dtype = inner.input_dtype

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.infer(batch if self.calls <= 3 else np.zeros_like(batch))


@pytest.mark.parametrize("broken", [StaleSession, ZerosSession], ids=["stale-buffer", "zeros-input"])
def test_a_loop_that_does_not_compute_is_caught(model_path: Path, prepared: PreparedDataset, broken: type) -> None:
    with open_session(model_path, 4) as session:
        with pytest.raises(NotComputedError, match="did not compute what the accuracy run computes"):
            time_one(broken(session), prepared, FAST)


# --------------------------------------------------------------------------------------------
# Scenarios (issue 18): offline keeps the session's requests in flight


class ThreadedRequestsSession:
    """A session with asynchronous requests, as OpenVINO's AsyncInferQueue behaves: ``submit``
    blocks while all ``requests`` are busy, and the callbacks come from worker threads, out of order
    (the odd runs take longer)."""

    batch_size = 2
    streams = 2

    def __init__(self, requests: int, delay_s: float = 0.004, call_back: bool = True, meet: bool = False) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        # meet: the first ``requests`` runs wait for each other before computing, so a loop that keeps
        # them all in flight has them in flight at once however a loaded machine schedules the
        # threads (a loop that does not would leave the barrier broken: fewer in flight, a failure)
        self._meet = threading.Barrier(requests) if meet else None
        self._started = 0

        self.requests = requests
        self._pool = ThreadPoolExecutor(requests)
        self._slots = threading.Semaphore(requests)
        self._pending: list = []
        self._delay = delay_s
        self._call_back = call_back
        self._count = 0
        self.in_flight_max = 0
        self.callbacks = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def _compute(self, batch: np.ndarray, slow: bool) -> np.ndarray:
        import time as _time

        _time.sleep(self._delay * (3 if slow else 1))
        return batch.reshape(batch.shape[0], -1)[:, :CLASSES].copy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._count += 1
        return self._compute(batch, bool(self._count % 2))

    def submit(self, batch: np.ndarray, done) -> None:
        self._slots.acquire()
        self._count += 1
        slow = bool(self._count % 2)

        def work() -> None:
            with self._lock:
                self._in_flight += 1
                self.in_flight_max = max(self.in_flight_max, self._in_flight)
                self._started += 1
                first = self._started <= self.requests
            if self._meet is not None and first:
                try:
                    self._meet.wait(timeout=HANG_S)
                except threading.BrokenBarrierError:
                    pass  # fewer than ``requests`` in flight: in_flight_max says so
            out = self._compute(batch, slow)
            with self._lock:
                self._in_flight -= 1
            self._slots.release()
            self.callbacks += done is not None
            if self._call_back and done is not None:
                done(out)

        self._pending.append(self._pool.submit(work))

    def wait_all(self) -> None:
        for f in self._pending:
            f.result()
        self._pending.clear()


def test_offline_keeps_the_sessions_requests_in_flight_and_keeps_outputs_in_submission_order() -> None:
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(2, *SHAPE)).astype(np.float32) for _ in range(3)]
    session = ThreadedRequestsSession(requests=3, meet=True)
    policy = TimingPolicy(warmup_runs=1, min_runs=12, min_seconds=0.0, max_seconds=5.0)
    timed = measure(session, batches, policy, scenario="offline")
    m = timed.measurement
    assert (m.scenario, m.streams, m.requests, m.clock) == ("offline", 2, 3, WALL)
    assert session.in_flight_max == 3  # never more, and really that many at once
    assert m.latency_ms_median is None and m.latency_cv_percent is None  # offline: images/s only
    for batch, out in zip(batches, timed.outputs, strict=True):  # out-of-order completions, outputs in submission order
        np.testing.assert_array_equal(out, session.infer(batch))
    assert len(timed.run_spans_ns) == m.runs >= 12
    last_end = max(end for _, end in timed.run_spans_ns)
    assert m.images_per_s == pytest.approx(m.runs * 2 / m.seconds) and last_end > timed.run_spans_ns[0][0]


def test_a_session_without_asynchronous_requests_runs_offline_one_at_a_time(model_path: Path) -> None:
    batches = [np.zeros((2, *SHAPE), np.float32) + 0.25]
    with open_session(model_path, 2) as session:
        timed = measure(session, batches, FAST, scenario="offline")
        np.testing.assert_array_equal(timed.outputs[0], session.infer(batches[0]))
    assert (timed.measurement.streams, timed.measurement.requests) == (1, 1)


def test_offline_refuses_a_session_that_does_not_call_back_and_unknown_scenarios() -> None:
    batches = [np.ones((2, *SHAPE), np.float32)]
    with pytest.raises(TimingError, match="completed 0 of 5 submitted runs"):
        measure(ThreadedRequestsSession(requests=2, call_back=False), batches,
                TimingPolicy(warmup_runs=0, min_runs=5, min_seconds=0.0), scenario="offline")
    with pytest.raises(TimingError, match="unknown scenario 'server'; known: single-stream, offline"):
        measure(ThreadedRequestsSession(requests=2), batches, FAST, scenario="server")


def test_before_steady_runs_after_the_warm_up_and_before_the_first_timed_run() -> None:
    events: list[str] = []

    class Logged(DeviceClockSession):
        def infer(self, batch: np.ndarray) -> np.ndarray:
            events.append("run")
            return super().infer(batch)

    timed = measure(
        Logged(),
        [np.ones((2, *SHAPE), np.float32)],
        TimingPolicy(warmup_runs=2, min_runs=3, min_seconds=0.0),
        before_steady=lambda: events.append("barrier"),
    )
    assert events[:3] == ["run", "run", "barrier"] and events.count("barrier") == 1
    assert timed.device_ms is not None and len(timed.device_ms) == timed.measurement.runs == 3
    assert all(b <= e for b, e in timed.run_spans_ns)
    spans = timed.run_spans_ns
    assert all(e1 <= b2 for (_, e1), (b2, _) in zip(spans, spans[1:], strict=False))  # one at a time


def test_onnx_runtime_offline_runs_one_thread_per_request_and_computes_the_same(model_path: Path) -> None:
    """ONNX Runtime's offline layout on the CPU: ``threads`` requests in flight on one session, each
    on one intra-op thread (OpenVINO THROUGHPUT's one stream per core); the same logits as one at a time."""
    rng = np.random.default_rng(4)
    batches = [rng.normal(size=(2, *SHAPE)).astype(np.float32) for _ in range(4)]
    target = CompileTarget(chip="cpu", batch_size=2, input_shape=SHAPE, input_name="input")
    backend = OnnxRuntimeBackend(threads=2)
    with backend.open(model_path, target, num_classes=CLASSES, scenario="offline") as session:
        assert (session.requests, session.streams) == (2, 2)
        assert session._session.get_session_options().intra_op_num_threads == 1
        timed = measure(session, batches, FAST, scenario="offline")
    with backend.open(model_path, target, num_classes=CLASSES) as single:
        assert (single.requests, single.streams) == (1, 1)
        assert single._session.get_session_options().intra_op_num_threads == 2
        for batch, out in zip(batches, timed.outputs, strict=True):
            np.testing.assert_allclose(out, single.infer(batch), rtol=1e-5, atol=1e-6)
    assert (timed.measurement.requests, timed.measurement.streams) == (2, 2)


def test_a_failed_offline_run_is_raised_by_wait_all(model_path: Path) -> None:
    target = CompileTarget(chip="cpu", batch_size=2, input_shape=SHAPE, input_name="input")
    with OnnxRuntimeBackend(threads=2).open(model_path, target, num_classes=CLASSES, scenario="offline") as session:
        session.submit(np.zeros((2, *SHAPE), np.float64), lambda out: None)  # wrong dtype: refused in the worker
        with pytest.raises(InferenceError, match="expected float32 input"):
            session.wait_all()


def test_offline_without_every_span_observes_only_the_first_pass() -> None:
    """The sweep's offline loop: after the first pass no completion calls back (nothing runs on
    the host while the device works); the figure is over the whole loop, the outputs are the first pass's."""
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(2, *SHAPE)).astype(np.float32) for _ in range(3)]
    session = ThreadedRequestsSession(requests=2)
    timed = measure(session, batches, TimingPolicy(warmup_runs=0, min_runs=10, min_seconds=0.0), scenario="offline",
                    every_span=False)
    assert session.callbacks == 3 and len(timed.outputs) == 3 and timed.measurement.runs >= 10
    for batch, out in zip(batches, timed.outputs, strict=True):
        np.testing.assert_array_equal(out, session.infer(batch))
    last_end = max(end for _, end in timed.run_spans_ns)
    assert all(end == last_end for _, end in timed.run_spans_ns[3:])
    assert timed.measurement.images_per_s == pytest.approx(timed.measurement.runs * 2 / timed.measurement.seconds)
