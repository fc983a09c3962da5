"""A test double standing in for the Ascend devices of a card, which we do not have.

:class:`FakeCard` is a picklable opener (``device_id -> context manager of a Session``) for
:func:`harness.run.cards.measure_card`, configured per device (:class:`FakeDevice`). Its sessions:

- sleep a per-device time per batch (a slower device is slower, as a device would be);
- return logits computed from the batch (:func:`fake_logits`), the same on every device, so the
  computed check compares real numbers;
- report ``compute_times_ms()`` as ais_bench's ``exec_time_list`` does (the device's compute time
  per run: ``COMPUTE_FRACTION`` of the sleep, shorter than the host's wall time around it), unless
  the card is made without a device clock;
- and, per device, fail to open (busy, crash, exit without a word, hang) or fail after some runs.

With a ``pid_dir``, each device's process leaves files there that a test waits for instead of
sleeping (events, not guesses about how fast a loaded machine spawns a process):
``device-<id>.pid`` once it opens, ``device-<id>.running`` on its second ``infer()`` (with one
warm-up run: its first timed run, past the start barrier) and ``device-<id>.atexit`` from an
``atexit`` handler. ``FakeDevice.wait_for_opened`` holds a device in its open until the devices
it names have opened (so that devices reach the barrier together however slowly they started).

It checks the orchestration (processes, barrier, window, failures), nothing about any hardware:
no figure measured through it is a throughput claim.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.backends.base import DeviceBusy, Session

CLASSES = 10
SHAPE = (3, 4, 4)
COMPUTE_FRACTION = 0.8  # device compute ms / sleep ms
OPEN_FAILURES = ("busy", "crash", "exit", "hang")


def fake_logits(batch: np.ndarray) -> np.ndarray:
    """Deterministic (N, CLASSES) logits of a (N, *SHAPE) batch: a fixed linear map of its pixels."""
    weights = np.random.default_rng(7).normal(size=(int(np.prod(SHAPE)), CLASSES)).astype(np.float32)
    return batch.reshape(len(batch), -1).astype(np.float32) @ weights


def fake_batches(count: int, batch_size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct batches of images for the fake devices."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch_size, *SHAPE)).astype(np.float32) for _ in range(count)]


@dataclass(frozen=True)
class FakeDevice:
    """One fake device: its speed and what goes wrong on it."""

    ms_per_batch: float = 10.0
    open_delay_s: float = 0.0  # time to "load the model"
    fail_on_open: str | None = None  # one of OPEN_FAILURES
    fail_after_runs: int | None = None  # infer() raises on call number fail_after_runs + 1 (warm-up included)
    wait_for_opened: tuple[int, ...] = ()  # open only once these devices' pid files exist (needs pid_dir)


class FakeSession(Session):
    """A session on a fake device (wall clock only)."""

    def __init__(self, device_id: int, device: FakeDevice, batch_size: int, pid_dir: str | None = None):
        self.device_id, self.device, self.batch_size, self.pid_dir = device_id, device, batch_size, pid_dir
        self.calls = 0
        self.times_ms: list[float] = []

    input_shape = SHAPE
    num_classes = CLASSES
    where = "fake device"

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # Session.infer checks the batch and the logits
        self.calls += 1
        limit = self.device.fail_after_runs
        if limit is not None and self.calls > limit:
            raise RuntimeError(f"fake device {self.device_id}: the device stopped answering after {limit} runs")
        if self.calls == 2 and self.pid_dir is not None:
            (Path(self.pid_dir) / f"device-{self.device_id}.running").write_text(str(os.getpid()))
        time.sleep(self.device.ms_per_batch / 1000.0)
        self.times_ms.append(self.device.ms_per_batch * COMPUTE_FRACTION)
        return fake_logits(batch)


class FakeNpuSession(FakeSession):
    """A session on a fake device that reports its compute time per run, as ais_bench does."""

    def compute_times_ms(self) -> list[float]:
        return list(self.times_ms)


@dataclass(frozen=True)
class FakeCard:
    """A card of fake devices. ``pid_dir``: each device's process writes ``device-<id>.pid`` there on
    open, and ``device-<id>.atexit`` from an ``atexit`` handler (as ais_bench's ACL finalize runs)."""

    devices: Mapping[int, FakeDevice] = field(default_factory=lambda: {0: FakeDevice(), 1: FakeDevice()})
    batch_size: int = 2
    device_clock: bool = True
    pid_dir: str | None = None

    @contextmanager
    def __call__(self, device_id: int) -> Iterator[FakeSession]:
        if self.pid_dir is not None:
            (Path(self.pid_dir) / f"device-{device_id}.pid").write_text(str(os.getpid()))
            atexit.register((Path(self.pid_dir) / f"device-{device_id}.atexit").write_text, "finalized")
        if device_id not in self.devices:
            raise RuntimeError(f"fake card: no device {device_id} (it has {sorted(self.devices)})")
        device = self.devices[device_id]
        if device.wait_for_opened:
            _wait_for_opened(Path(str(self.pid_dir)), device.wait_for_opened)
        time.sleep(device.open_delay_s)
        if device.fail_on_open == "busy":
            raise DeviceBusy(f"fake device {device_id} is busy (another process holds it)")
        if device.fail_on_open == "crash":
            raise RuntimeError(f"fake device {device_id}: the model could not be loaded")
        if device.fail_on_open == "exit":
            os._exit(3)  # dies without a word, as a crashing runtime would
        if device.fail_on_open == "hang":
            time.sleep(3600)
        yield (FakeNpuSession if self.device_clock else FakeSession)(device_id, device, self.batch_size, self.pid_dir)


def _wait_for_opened(pid_dir: Path, device_ids: tuple[int, ...], timeout_s: float = 300.0) -> None:
    """Until every one of ``device_ids`` wrote its pid file (a generous deadline only bounds a hang)."""
    deadline = time.monotonic() + timeout_s
    while not all((pid_dir / f"device-{d}.pid").exists() for d in device_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake card: devices {device_ids} did not all open within {timeout_s:g} s")
        time.sleep(0.01)
