"""The one timing loop: every chip's throughput is measured here, by the same method.

Warm-up runs first (first-run allocations, lazy compilation, clock ramp-up), then steady-state
runs until both a minimum count and a minimum duration are reached. The batches are real
preprocessed images cycled from a ring, never zeros, and the loop keeps the outputs of the first
steady pass over the ring so the caller can prove the timed runs computed (MLPerf TEST01: perf
mode outputs must equal accuracy mode outputs on the same images).

Two clocks: ``wall`` (host time around each ``infer`` call, always available) and
``device_compute`` (the device's own compute time per run, when the session reports it, as
ais_bench does: ``1000 * batch / mean compute ms``). The measurement says which one its headline
figure uses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from harness.backends.base import Session
from harness.errors import HarnessError
from harness.specs import TimingPolicy

WALL = "wall"
DEVICE_COMPUTE = "device_compute"
CLOCKS = (WALL, DEVICE_COMPUTE)


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
    """Steady-state throughput and latency of one batch size on one device."""

    batch_size: int
    runs: int
    warmup_runs: int
    seconds: float
    images_per_s: float  # by ``clock``
    clock: str
    wall_images_per_s: float
    device_images_per_s: float | None
    latency_ms_mean: float
    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_cv_percent: float  # spread: standard deviation / mean of the per-run latency


@dataclass(frozen=True)
class Timed:
    """A measurement plus the outputs of the first steady pass over the ring, batch by batch."""

    measurement: Measurement
    outputs: tuple[np.ndarray, ...]


def _percentile(sorted_ms: np.ndarray, q: float) -> float:
    return float(np.percentile(sorted_ms, q, method="linear"))


def measure(session: Session, batches: Sequence[np.ndarray], policy: TimingPolicy) -> Timed:
    """Time ``session.infer`` over ``batches`` (full batches of real images, cycled).

    Stops after at least ``policy.min_runs`` runs and ``policy.min_seconds`` of steady state, or
    at ``policy.max_seconds`` once the minimum count is reached.
    """
    if not batches:
        raise TimingError("nothing to time: no batches were given")
    bs = session.batch_size
    for i, batch in enumerate(batches):
        if batch.shape[0] != bs:
            raise TimingError(f"batch {i} has {batch.shape[0]} images; the timed session takes exactly {bs}")
    for i in range(policy.warmup_runs):
        session.infer(batches[i % len(batches)])
    reports_device = isinstance(session, ReportsComputeTime)
    device_before = len(session.compute_times_ms()) if reports_device else 0

    durations_ns: list[int] = []
    outputs: list[np.ndarray] = []
    clock = time.perf_counter_ns
    min_ns, max_ns = int(policy.min_seconds * 1e9), int(policy.max_seconds * 1e9)
    start = clock()
    elapsed = 0
    run = 0
    while run < policy.min_runs or (elapsed < min_ns and elapsed < max_ns) or run < len(batches):
        batch = batches[run % len(batches)]
        t0 = clock()
        out = session.infer(batch)
        t1 = clock()
        durations_ns.append(t1 - t0)
        if run < len(batches):
            outputs.append(out)
        run += 1
        elapsed = t1 - start

    lat_ms = np.sort(np.asarray(durations_ns, dtype=np.float64) / 1e6)
    seconds = elapsed / 1e9
    wall_ips = run * bs / seconds if seconds > 0 else math.inf
    device_ips = None
    if reports_device:
        device_ms = list(session.compute_times_ms())[device_before:]
        if len(device_ms) != run:
            raise TimingError(
                f"the session reported {len(device_ms)} device compute times for {run} timed runs; "
                "its compute_times_ms() must list one entry per infer() call"
            )
        mean_ms = float(np.mean(device_ms))
        device_ips = 1000.0 * bs / mean_ms if mean_ms > 0 else math.inf
    mean = float(lat_ms.mean())
    m = Measurement(
        batch_size=bs,
        runs=run,
        warmup_runs=policy.warmup_runs,
        seconds=seconds,
        images_per_s=device_ips if device_ips is not None else wall_ips,
        clock=DEVICE_COMPUTE if device_ips is not None else WALL,
        wall_images_per_s=wall_ips,
        device_images_per_s=device_ips,
        latency_ms_mean=mean,
        latency_ms_median=_percentile(lat_ms, 50),
        latency_ms_p90=_percentile(lat_ms, 90),
        latency_ms_p99=_percentile(lat_ms, 99),
        latency_cv_percent=100.0 * float(lat_ms.std()) / mean if mean > 0 else 0.0,
    )
    return Timed(measurement=m, outputs=tuple(outputs))


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

