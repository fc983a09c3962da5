"""The one timing loop: every chip's throughput is measured here, by the same method.

Warm-up runs first (first-run allocations, lazy compilation, clock ramp-up), then steady-state
runs until both a minimum count and a minimum duration are reached. The batches are real
preprocessed images cycled from a ring, never zeros, and the loop keeps the outputs of the first
steady pass over the ring so the caller can prove the timed runs computed (MLPerf TEST01: perf
mode outputs must equal accuracy mode outputs on the same images).

Two scenarios (harness.specs.SCENARIOS, MLPerf's names): ``single-stream`` calls ``infer`` and
waits, one run after another (latency percentiles); ``offline`` keeps the session's ``requests``
in flight through :meth:`Session.submit` (images/s from the first submission to the last
completion). A session without asynchronous requests runs ``offline`` one request at a time,
and its figure says ``requests = 1``.

Two clocks: ``wall`` (host time around each ``infer`` call, always available) and
``device_compute`` (the device's own compute time per run, when the session reports it, as
ais_bench does: ``1000 * batch / mean compute ms``). The measurement says which one its headline
figure uses.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from harness.backends.base import Session
from harness.clocks import DEVICE_COMPUTE, WALL
from harness.errors import HarnessError
from harness.specs import OFFLINE, SCENARIOS, SINGLE_STREAM, TimingPolicy


class TimingError(HarnessError, RuntimeError):
    """The loop cannot measure what was asked (no batches, a wrong batch size, a failing run)."""


@runtime_checkable
class ReportsComputeTime(Protocol):
    """A session that knows its device compute time per run (ais_bench's NPU_compute_time)."""

    def compute_times_ms(self) -> Sequence[float]:
        """Compute time in milliseconds of every ``infer`` call since the session opened."""
        ...


@dataclass(frozen=True)
class Measurement:
    """Steady-state throughput of one batch size on one device, in one scenario.

    ``single-stream``: one request at a time, so every run's latency is known (percentiles).
    ``offline``: ``requests`` requests in flight on ``streams`` streams; images/s only, the latency
    fields are None (a queued request's time is not a latency anyone waits for).
    """

    batch_size: int
    runs: int
    warmup_runs: int
    seconds: float
    images_per_s: float  # by ``clock``
    clock: str
    wall_images_per_s: float
    device_images_per_s: float | None
    latency_ms_mean: float | None
    latency_ms_median: float | None
    latency_ms_p90: float | None
    latency_ms_p99: float | None
    latency_cv_percent: float | None  # spread: standard deviation / mean of the per-run latency
    scenario: str = SINGLE_STREAM
    streams: int = 1
    requests: int = 1


@dataclass(frozen=True)
class Timed:
    """A measurement, the outputs of the first steady pass over the ring (batch by batch), and
    when each timed run started and ended (``time.monotonic_ns``, comparable across processes on
    one machine: the whole-card measurement lines devices up by it)."""

    measurement: Measurement
    outputs: tuple[np.ndarray, ...]
    run_spans_ns: tuple[tuple[int, int], ...] = ()
    device_ms: tuple[float, ...] | None = None


def _percentile(sorted_ms: np.ndarray, q: float) -> float:
    return float(np.percentile(sorted_ms, q, method="linear"))


def _keep_going(run: int, elapsed_ns: int, policy: TimingPolicy, ring: int) -> bool:
    min_ns, max_ns = int(policy.min_seconds * 1e9), int(policy.max_seconds * 1e9)
    return run < policy.min_runs or (elapsed_ns < min_ns and elapsed_ns < max_ns) or run < ring


def _check_batches(session: Session, batches: Sequence[np.ndarray]) -> int:
    if not batches:
        raise TimingError("nothing to time: no batches were given")
    bs = session.batch_size
    for i, batch in enumerate(batches):
        if batch.shape[0] != bs:
            raise TimingError(f"batch {i} has {batch.shape[0]} images; the timed session takes exactly {bs}")
    return bs


def _single_stream(session: Session, batches: Sequence[np.ndarray], policy: TimingPolicy
                   ) -> tuple[list[tuple[int, int]], list[np.ndarray], int]:
    """One request at a time: (start, end) of every run, the first pass's outputs, the loop's start."""
    spans: list[tuple[int, int]] = []
    outputs: list[np.ndarray] = []
    clock = time.monotonic_ns
    start = clock()
    t1 = start
    while _keep_going(len(spans), t1 - start, policy, len(batches)):
        run = len(spans)
        t0 = clock()
        out = session.infer(batches[run % len(batches)])
        t1 = clock()
        spans.append((t0, t1))
        if run < len(batches):
            outputs.append(out)
    return spans, outputs, start


def _offline(session: Session, batches: Sequence[np.ndarray], policy: TimingPolicy, every_span: bool = True
             ) -> tuple[list[tuple[int, int]], list[np.ndarray], int]:
    """``session.requests`` requests in flight (:meth:`Session.submit` blocks while all are busy):
    (submitted, completed) of every run in submission order, the first pass's outputs, the start.

    With ``every_span`` False, the runs after the first pass are submitted without a callback
    (``done=None``): no Python runs when they complete, as in ``benchmark_app``'s loop, and each
    span's end is the end of the loop (only the figure over the whole loop is wanted)."""
    clock = time.monotonic_ns
    ring = len(batches)
    ends: dict[int, int] = {}
    firsts: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    def done(run: int, out: np.ndarray) -> None:
        t = clock()
        with lock:
            ends[run] = t
            if run < ring:
                firsts[run] = out

    submitted: list[int] = []
    start = clock()
    now = start
    while _keep_going(len(submitted), now - start, policy, ring):
        run = len(submitted)
        submitted.append(clock())
        callback = (lambda out, run=run: done(run, out)) if every_span or run < ring else None
        session.submit(batches[run % ring], callback)
        now = clock()
    session.wait_all()
    finished = clock()
    if not every_span:
        ends.update({run: finished for run in range(ring, len(submitted))})
    if len(ends) != len(submitted):
        raise TimingError(f"the session completed {len(ends)} of {len(submitted)} submitted runs; "
                          "its submit() must call back once per batch before wait_all() returns")
    spans = [(t0, ends[i]) for i, t0 in enumerate(submitted)]
    return spans, [firsts[i] for i in range(min(ring, len(submitted)))], start


def measure(session: Session, batches: Sequence[np.ndarray], policy: TimingPolicy, scenario: str = SINGLE_STREAM,
            before_steady: Callable[[], None] | None = None, every_span: bool = True) -> Timed:
    """Time ``session`` over ``batches`` (full batches of real images, cycled) in ``scenario``.

    Stops submitting after at least ``policy.min_runs`` runs and ``policy.min_seconds`` of steady
    state, or at ``policy.max_seconds`` once the minimum count is reached. ``before_steady`` runs
    after the warm-up, right before the first timed run (the whole-card measurement's barrier).
    ``every_span=False`` (offline only): completions after the first pass are not observed one by
    one, which costs the host nothing while the device works; ``run_spans_ns`` then end at the
    loop's end for those runs, so only a whole-loop figure may be taken from them (the sweep;
    the whole-card window needs every span).
    """
    if scenario not in SCENARIOS:
        raise TimingError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    bs = _check_batches(session, batches)
    for i in range(policy.warmup_runs):
        session.infer(batches[i % len(batches)])
    reporter = session if isinstance(session, ReportsComputeTime) else None
    device_before = len(reporter.compute_times_ms()) if reporter is not None else 0
    if before_steady is not None:
        before_steady()

    if scenario == OFFLINE:
        spans, outputs, start = _offline(session, batches, policy, every_span)
    else:
        spans, outputs, start = _single_stream(session, batches, policy)
    run = len(spans)
    seconds = (max(end for _, end in spans) - start) / 1e9
    wall_ips = run * bs / seconds if seconds > 0 else math.inf
    device_ips = None
    device_ms: tuple[float, ...] | None = None
    if reporter is not None:
        device_ms = tuple(float(v) for v in list(reporter.compute_times_ms())[device_before:])
        if len(device_ms) != run:
            raise TimingError(
                f"the session reported {len(device_ms)} device compute times for {run} timed runs; "
                "its compute_times_ms() must list one entry per infer() call"
            )
        mean_ms = float(np.mean(device_ms))
        device_ips = 1000.0 * bs / mean_ms if mean_ms > 0 else math.inf
    latency: dict[str, float | None] = dict.fromkeys(
        ("latency_ms_mean", "latency_ms_median", "latency_ms_p90", "latency_ms_p99", "latency_cv_percent"))
    if scenario == SINGLE_STREAM:
        lat_ms = np.sort(np.asarray([end - begin for begin, end in spans], dtype=np.float64) / 1e6)
        mean = float(lat_ms.mean())
        latency = {
            "latency_ms_mean": mean, "latency_ms_median": _percentile(lat_ms, 50),
            "latency_ms_p90": _percentile(lat_ms, 90), "latency_ms_p99": _percentile(lat_ms, 99),
            "latency_cv_percent": 100.0 * float(lat_ms.std()) / mean if mean > 0 else 0.0,
        }
    m = Measurement(
        batch_size=bs,
        runs=run,
        warmup_runs=policy.warmup_runs,
        seconds=seconds,
        images_per_s=device_ips if device_ips is not None else wall_ips,
        clock=DEVICE_COMPUTE if device_ips is not None else WALL,
        wall_images_per_s=wall_ips,
        device_images_per_s=device_ips,
        scenario=scenario,
        streams=session.streams if scenario == OFFLINE else 1,
        requests=session.requests if scenario == OFFLINE else 1,
        **latency,
    )
    return Timed(measurement=m, outputs=tuple(outputs), run_spans_ns=tuple(spans), device_ms=device_ms)


def ring_indices(dataset_size: int, batch_size: int, ring_images: int) -> list[np.ndarray]:
    """Image indices of the timed batches: ``ceil(ring / bs)`` full batches cycling the dataset.

    Every batch is full (a compiled model has a static batch); with fewer images than one batch,
    images repeat.
    """
    if dataset_size <= 0:
        raise TimingError("the dataset to time on is empty")
    ring = min(ring_images, dataset_size)
    count = max(1, math.ceil(ring / batch_size))
    flat = np.arange(count * batch_size) % ring
    return [flat[i * batch_size : (i + 1) * batch_size] for i in range(count)]

