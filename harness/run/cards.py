"""A whole card measured concurrently: one process per device, one start barrier, one common window.

An Atlas 300I card carries four Ascend 310 chips; the seed guides multiply one chip's figure by
``devices_per_card``. Given several devices (``--device-ids 0,1,2,3``), :func:`measure_card` times
them *together*, so the card's figure includes what they share (host CPU, PCIe, driver):

- one process per device, started by ``spawn`` (never fork: the parent holds ONNX Runtime /
  OpenVINO thread pools), opens the model on its device (:class:`SessionOpener`, or any picklable
  ``device_id -> context manager of a Session``) and runs the one timing loop,
  :func:`harness.run.timing.measure`; after warm-up, it waits on one shared ``Barrier``
  (``before_steady``), so the devices' steady states start together (within milliseconds). A
  device that does not arrive within ``barrier_timeout_s`` of the first fails the run, named;
- the card's figure is counted over the *common window*, from the latest first-timed-run start to
  the earliest last-timed-run end over the devices (``time.monotonic_ns``, system-wide on Linux),
  while every device was timing. A run inside it counts whole; a run straddling an edge counts pro
  rata, ``batch_size x`` the fraction of its span inside (its images progress evenly over it; in
  ``offline`` a span runs from submission to completion, and overlapping spans add up right). The
  wall figure: those images, all devices, over the window's seconds. When every device reports
  its compute time (ais_bench's NPU clock), the device figure is the sum over devices of
  ``1000 x batch / mean compute ms`` of the device's runs in the window (weighted the same way);
- a window that is empty, or shorter than ``card_min_overlap`` (fixtures/policy.toml) of the
  shortest device's own steady state (a device ran mostly before or after the others), is
  :class:`NotConcurrent`, never a figure.

A device's failure is raised in the parent naming the device, in the ``harness.errors`` category
of the child's exception; the others are stopped and no process is left behind (KeyboardInterrupt
included; a child also ends when the parent dies). Tested with a device double
(tests/doubles/fake_card.py) and ONNX Runtime on two CPU "devices"; no Ascend hardware was at hand."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import BackendUnavailable, DeviceBusy, Session, get_backend
from harness.clocks import DEVICE_COMPUTE, WALL
from harness.errors import HarnessError, NotApplicable, NotReady, UsageError
from harness.run.timing import Measurement, measure
from harness.specs import SCENARIOS, SINGLE_STREAM, CompileTarget, TimingPolicy

BARRIER_TIMEOUT_S = 300.0  # how long the devices at the barrier wait for the last one
START_TIMEOUT_S = 900.0  # from spawning to every device at the barrier (load + warm-up)
_GRACE_S = 5.0  # the parent's slack over the children's own timeouts; join before kill

Opener = Callable[[int], AbstractContextManager[Session]]


class CardError(HarnessError, RuntimeError):
    """A device's process failed (the harness, the runtime or a tool broke), or its results are unusable."""


class CardUnavailable(BackendUnavailable):
    """A device's backend, tool or device is missing (its process raised a NotApplicable): a skip."""


class CardNotReady(DeviceBusy):
    """A device is busy or unhealthy, or did not reach the start barrier or finish in time: a failure."""


class NotConcurrent(CardNotReady):
    """The devices' timed runs did not overlap enough for a whole-card figure."""


class CardUsageError(UsageError, ValueError):
    """What was asked cannot be measured as a card (no device, a repeated id, another scenario)."""


# A child's exception of a harness.errors category is raised in the parent as this class (any other: CardError).
_CATEGORIES = ((NotApplicable, CardUnavailable), (NotReady, CardNotReady), (UsageError, CardUsageError))


@dataclass(frozen=True)
class SessionOpener:
    """What a device's process needs to open the compiled model: picklable, called with a device id.
    ``options``: as :func:`~harness.backends.base.get_backend` takes them (chips.toml's, ``threads``)."""

    backend: str
    options: Mapping[str, Any]
    artifact: Path
    target: CompileTarget
    num_classes: int
    scenario: str = SINGLE_STREAM

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "artifact", Path(self.artifact))
        _check_scenario(self.scenario)

    def __call__(self, device_id: int) -> AbstractContextManager[Session]:
        backend = get_backend(self.backend, **self.options)
        return backend.open(self.artifact, self.target, device_id=device_id, num_classes=self.num_classes,
                            scenario=self.scenario)


@dataclass(frozen=True)
class DeviceRun:
    """One device's part of a card measurement, as its process sent it back."""

    device_id: int
    measurement: Measurement  # the device's own figures over its whole steady state
    run_spans_ns: tuple[tuple[int, int], ...]  # (start, end) of every timed run, time.monotonic_ns
    device_ms: tuple[float, ...] | None  # device compute ms per timed run, when the session reports it
    outputs: tuple[np.ndarray, ...] = field(repr=False, compare=False)  # the first steady pass's
    ready_ns: int = 0  # warmed up, arrived at the barrier
    released_ns: int = 0  # left the barrier


@dataclass(frozen=True)
class CardMeasurement:
    """Several devices timed concurrently; the card's figures are counted over their common window."""

    scenario: str
    batch_size: int
    devices: Mapping[int, DeviceRun]
    window_start_ns: int
    window_end_ns: int
    images_in_window: Mapping[int, float]  # per device; runs straddling an edge pro rata
    wall_images_per_s: float  # images in the window, all devices, over the window's seconds
    device_images_per_s: float | None  # sum of the devices' compute-clock figures in the window

    @property
    def clock(self) -> str:  # as a Measurement's
        return DEVICE_COMPUTE if self.device_images_per_s is not None else WALL

    @property
    def images_per_s(self) -> float:
        """The card's headline figure by :attr:`clock`, as a :class:`Measurement` has it."""
        return self.device_images_per_s if self.device_images_per_s is not None else self.wall_images_per_s

    @property
    def window_s(self) -> float:
        return (self.window_end_ns - self.window_start_ns) / 1e9

    @property
    def per_device_images_per_s(self) -> dict[int, float]:
        """Each device's wall figure inside the window (they sum to :attr:`wall_images_per_s`)."""
        return {d: n / self.window_s for d, n in self.images_in_window.items()}

    @property
    def measurements(self) -> dict[int, Measurement]:
        return {d: r.measurement for d, r in self.devices.items()}

    @property
    def per_device_outputs(self) -> dict[int, tuple[np.ndarray, ...]]:
        """Every device's outputs of its first steady pass over the ring, for the computed check."""
        return {d: r.outputs for d, r in self.devices.items()}

    @property
    def start_spread_ms(self) -> float:
        """The latest minus the earliest first-timed-run start over the devices."""
        starts = [min(s for s, _ in r.run_spans_ns) for r in self.devices.values()]
        return (max(starts) - min(starts)) / 1e6


def _overlap(span: tuple[int, int], start: int, end: int) -> float:
    """The fraction of ``span`` inside [start, end]: 1 inside, pro rata across an edge."""
    s, e = span
    if e <= s:
        return 1.0 if start <= s <= end else 0.0
    return max(0, min(e, end) - max(s, start)) / (e - s)


def card_measurement(runs: Mapping[int, DeviceRun], scenario: str = SINGLE_STREAM,
                     min_overlap: float = TimingPolicy.card_min_overlap) -> CardMeasurement:
    """The card's figures from its devices' runs, over their common window (module docstring);
    ``min_overlap``: fixtures/policy.toml ``[perf] card_min_overlap``."""
    if not runs:
        raise CardUsageError("no device was measured")
    for d, r in runs.items():
        if not r.run_spans_ns:
            raise CardError(f"device {d} reported no timed runs")
        if r.device_ms is not None and len(r.device_ms) != len(r.run_spans_ns):
            raise CardError(f"device {d} reported {len(r.device_ms)} compute times for "
                            f"{len(r.run_spans_ns)} timed runs")
    sizes = sorted({r.measurement.batch_size for r in runs.values()})
    if len(sizes) != 1:
        raise CardError(f"the devices ran batch sizes {sizes}; a card runs one compiled model")
    bs = sizes[0]
    firsts = {d: min(s for s, _ in r.run_spans_ns) for d, r in runs.items()}  # offline: runs overlap, and
    lasts = {d: max(e for _, e in r.run_spans_ns) for d, r in runs.items()}  # may complete out of order
    start, end, t0 = max(firsts.values()), min(lasts.values()), min(firsts.values())
    timeline = "; ".join(f"device {d} from +{(firsts[d] - t0) / 1e9:.3f} s to +{(lasts[d] - t0) / 1e9:.3f} s"
                         for d in sorted(runs))
    if end <= start:
        raise NotConcurrent("the devices did not run concurrently: their timed runs have no common window "
                            f"({timeline})")
    shortest = min(lasts[d] - firsts[d] for d in runs)
    if end - start < min_overlap * shortest:
        raise NotConcurrent(
            f"the devices did not run concurrently: their timed runs overlapped for {(end - start) / 1e9:.3f} s, less "
            f"than {min_overlap:g} of the shortest device's {shortest / 1e9:.3f} s of steady state ({timeline})")
    images: dict[int, float] = {}
    device_ips: float | None = 0.0
    for d, r in sorted(runs.items()):
        weights = [_overlap(span, start, end) for span in r.run_spans_ns]
        images[d] = bs * sum(weights)
        if r.device_ms is None or device_ips is None:
            device_ips = None
            continue
        mean_ms = sum(w * ms for w, ms in zip(weights, r.device_ms, strict=True)) / sum(weights)
        device_ips += 1000.0 * bs / mean_ms if mean_ms > 0 else float("inf")
    return CardMeasurement(
        scenario=scenario, batch_size=bs, devices=dict(sorted(runs.items())), window_start_ns=start,
        window_end_ns=end, images_in_window=images, wall_images_per_s=sum(images.values()) / ((end - start) / 1e9),
        device_images_per_s=device_ips,
    )


# -- the device processes ---------------------------------------------------------------------------

_READY, _DONE, _FAILED, _BROKEN = "ready", "done", "failed", "broken"


@dataclass(frozen=True)
class _Job:  # what one device's process is given (pickled by spawn)
    opener: Opener
    device_id: int
    batches: Sequence[np.ndarray]
    policy: TimingPolicy
    scenario: str
    barrier: Any  # the context's Barrier, shared by all devices
    barrier_timeout_s: float


def _exit_with_parent() -> None:
    """End this process as soon as the parent dies (a SIGKILLed run runs no cleanup)."""
    parent = multiprocessing.parent_process()

    def watch() -> None:
        if parent is not None:
            parent.join()
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _device_main(job: _Job, conn: Connection) -> None:
    """A device's process: open, warm up, wait at the barrier, time, send the result or the failure."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    _exit_with_parent()
    marks = {"ready": 0, "released": 0, "broken": 0}

    def before_steady() -> None:
        marks["ready"] = time.monotonic_ns()
        conn.send((_READY, job.device_id, marks["ready"]))
        try:
            job.barrier.wait(job.barrier_timeout_s)
        except threading.BrokenBarrierError:
            marks["broken"] = 1
            raise
        marks["released"] = time.monotonic_ns()

    message: tuple[Any, ...]
    try:
        with job.opener(job.device_id) as session:
            timed = measure(session, job.batches, job.policy, scenario=job.scenario, before_steady=before_steady)
        message = (_DONE, job.device_id, DeviceRun(
            device_id=job.device_id, measurement=timed.measurement,
            run_spans_ns=tuple((int(s), int(e)) for s, e in timed.run_spans_ns),
            device_ms=None if timed.device_ms is None else tuple(float(v) for v in timed.device_ms),
            outputs=tuple(timed.outputs), ready_ns=marks["ready"], released_ns=marks["released"]))
    except Exception as exc:
        cls = next((card for base, card in _CATEGORIES if isinstance(exc, base)), CardError)
        detail = (cls, type(exc).__name__, str(exc), traceback.format_exc())
        message = (_BROKEN, job.device_id, None) if marks["broken"] else (_FAILED, job.device_id, detail)
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone, or stopped listening
    finally:
        conn.close()  # then the process exits through sys.exit (spawn): atexit handlers (ACL finalize) run


def _names(ids: Any) -> str:
    return ", ".join(str(d) for d in sorted(ids))


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise CardUsageError(f"scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")


class _Card:
    """The parent's side: the device processes, their pipes, and what they said so far."""

    def __init__(self, ids: tuple[int, ...], barrier_s: float, start_s: float, finish_s: float):
        self.ids, self.barrier_s, self.start_s, self.finish_s = ids, barrier_s, start_s, finish_s
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Connection] = {}
        self.ready: dict[int, int] = {}
        self.runs: dict[int, DeviceRun] = {}
        self.deadline = time.monotonic() + start_s

    def start(self, ctx: Any, job: Callable[[int], _Job]) -> None:
        for d in self.ids:
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_device_main, args=(job(d), writer), name=f"card-device-{d}", daemon=True)
            self.conns[d] = reader
            try:
                proc.start()
            finally:
                writer.close()
            self.procs[d] = proc

    def _late(self) -> CardNotReady:  # a deadline passed or the barrier broke: name the late devices
        if len(self.ready) == len(self.ids):
            pending = [d for d in self.ids if d not in self.runs]
            return CardNotReady(f"device(s) {_names(pending)} did not finish timing within {self.finish_s:g} s of "
                                "the start; is the device hung?")
        missing = [d for d in self.ids if d not in self.ready]
        why = f"within {self.barrier_s:g} s of the first one" if self.ready else f"within {self.start_s:g} s"
        arrived = f"device(s) {_names(self.ready)} were ready" if self.ready else "no device was ready"
        return CardNotReady(f"device(s) {_names(missing)} did not reach the start barrier {why} ({arrived}); is "
                            "the device still loading the model, hung, or in use by another process?")

    def _handle(self, d: int, message: tuple[Any, ...]) -> None:
        kind, _, payload = message
        if kind == _READY:
            self.ready[d] = payload
            if len(self.ready) == len(self.ids):
                self.deadline = time.monotonic() + self.finish_s
            elif len(self.ready) == 1:
                self.deadline = min(self.deadline, time.monotonic() + self.barrier_s + _GRACE_S)
        elif kind == _DONE:
            self.runs[d] = payload
        elif kind == _BROKEN and len(self.ready) == len(self.ids):
            raise CardNotReady(f"the start barrier timed out ({self.barrier_s:g} s) as the last device arrived")
        elif kind == _BROKEN:
            raise self._late()
        else:  # _FAILED: the child's category, type, message and traceback
            cls, type_name, text, trace = payload
            keep = f"\n\nin device {d}'s process:\n{trace.rstrip()}" if cls is CardError else ""  # a tool broke
            raise cls(f"device {d}: {type_name}: {text}{keep}")

    def collect(self) -> dict[int, DeviceRun]:  # raises on the first failure, death or missed deadline
        while len(self.runs) < len(self.ids):
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self._late()
            owner: dict[Any, int] = {}
            for d in (d for d in self.ids if d not in self.runs):
                owner[self.conns[d]] = owner[self.procs[d].sentinel] = d
            for obj in wait(list(owner), timeout=left):
                d = owner[obj]
                conn = self.conns[d]
                if d in self.runs:
                    continue
                if obj is conn or conn.poll():  # a message first: a child sends, then exits
                    try:
                        self._handle(d, conn.recv())
                        continue
                    except EOFError:
                        pass
                self.procs[d].join(_GRACE_S)
                raise CardError(f"device {d}'s process ended (exit code {self.procs[d].exitcode}) without a result; "
                                "did the runtime crash? (its output is above)")
        return self.runs

    def stop(self, graceful: bool) -> None:
        """End every process: after success, wait for a clean exit first; otherwise terminate at once."""
        procs, end = list(self.procs.values()), time.monotonic() + (30.0 if graceful else 0.0)
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join()
            p.close()
        for conn in self.conns.values():
            conn.close()


def measure_card(opener: Opener, device_ids: Sequence[int], batches: Sequence[np.ndarray], policy: TimingPolicy,
                 scenario: str = SINGLE_STREAM, *, barrier_timeout_s: float = BARRIER_TIMEOUT_S,
                 start_timeout_s: float = START_TIMEOUT_S, finish_timeout_s: float | None = None) -> CardMeasurement:
    """Time ``device_ids`` concurrently, one process each, from one start barrier (module docstring).

    ``opener`` is picklable and called in each device's process with its id (:class:`SessionOpener`);
    ``batches`` are the timed ring, the same on every device. ``start_timeout_s`` bounds the time
    until every device is at the barrier, ``barrier_timeout_s`` the wait there from the first to
    the last, and ``finish_timeout_s`` (default ``2 x policy.max_seconds + 60``) the timed part."""
    ids = tuple(int(d) for d in device_ids)
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise CardUsageError(f"device ids {list(ids)}: a card needs at least one, each named once, each >= 0")
    _check_scenario(scenario)
    if isinstance(opener, SessionOpener) and opener.scenario != scenario:
        raise CardUsageError(f"the sessions open for {opener.scenario!r} but the card is timed as {scenario!r}")
    try:
        pickle.dumps(opener)
    except Exception as exc:  # spawn sends it to every device's process
        raise CardUsageError(f"the opener {opener!r} cannot be sent to a device's process: {exc}") from exc
    ctx = multiprocessing.get_context("spawn")  # never fork: the parent holds runtime thread pools
    barrier = ctx.Barrier(len(ids))
    finish = finish_timeout_s if finish_timeout_s is not None else 2 * policy.max_seconds + 60.0
    card = _Card(ids, barrier_timeout_s, start_timeout_s, finish)
    ring = list(batches)
    done = False
    try:
        card.start(ctx, lambda d: _Job(opener, d, ring, policy, scenario, barrier, barrier_timeout_s))
        runs = card.collect()
        done = True
    finally:
        card.stop(graceful=done)
    return card_measurement(runs, scenario, policy.card_min_overlap)
