"""The batch-size sweep: compile per batch size, prove the timed runs computed, time, pick the best.

Each batch size gets its own compiled artifact (an .om has a static batch), an accuracy-mode pass
over the ring images (the ordinary inference path, untimed) and the timing loop over the same
images. The timed outputs must equal the accuracy-mode outputs (MLPerf TEST01): a loop that fed
zeros, skipped work or returned stale buffers fails here, before any figure is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.data import normalize
from harness.errors import NotCertified
from harness.judge.baselines import Figure
from harness.judge.gates import computed_check
from harness.judge.metrics import Parity, parity
from harness.run.infer import feed
from harness.run.timing import Measurement, measure, ring_indices
from harness.run.workbench import on_chip
from harness.specs import SINGLE_STREAM, ChipSpec, ModelSpec, TimingPolicy

if TYPE_CHECKING:
    from harness.backends.base import Session
    from harness.data import PreparedDataset
    from harness.run.cards import CardMeasurement
    from harness.run.workbench import Workbench


class NotComputedError(NotCertified, AssertionError):
    """The timed runs' outputs differ from the accuracy-mode outputs on the same images."""


@dataclass(frozen=True)
class Point:
    """One batch size of a sweep: its timing and the proof that the timed runs computed."""

    measurement: Measurement
    computed: Parity


@dataclass(frozen=True)
class Sweep:
    """A model's throughput over its batch sizes on one chip (one device), measured here."""

    model: str
    chip: str
    backend: str
    backend_version: str
    environment: dict[str, Any]
    precision: str
    dataset: str
    dataset_key: str
    ring_images: int
    weights: dict[str, Any]
    points: tuple[Point, ...]
    scenario: str = SINGLE_STREAM

    @property
    def measurements(self) -> list[Measurement]:
        return [p.measurement for p in self.points]

    def figures(self, source: str) -> list[Figure]:
        """This sweep as baseline-format figures (per chip: one device was timed)."""
        return [
            Figure(chip=self.chip, model=self.model, batch_size=m.batch_size, images_per_s=m.images_per_s,
                   unit="per_chip", clock=m.clock, source=source, scenario=m.scenario,
                   note=f"{self.backend} {self.backend_version}, {self.precision}, {m.runs} runs, {_spread(m)}")
            for m in self.measurements
        ]


def _spread(m: Measurement) -> str:
    if m.latency_cv_percent is None:  # offline: no per-request latency
        return f"{m.streams} stream(s), {m.requests} request(s) in flight"
    return f"cv {m.latency_cv_percent:.1f}%"


def accuracy_mode_logits(session: Session, prepared: PreparedDataset, count: int) -> np.ndarray:
    """Logits of the first ``count`` images through the ordinary (accuracy-run) batching path."""
    chunks = []
    for start, batch in feed(session, prepared, session.batch_size):
        if start >= count:
            break
        chunks.append(session.infer(batch))
    return np.concatenate(chunks, axis=0)[:count]


def time_one(session: Session, prepared: PreparedDataset, policy: TimingPolicy, scenario: str = SINGLE_STREAM) -> Point:
    """Time ``session`` in ``scenario`` on ring batches of real images and check their outputs
    against accuracy mode."""
    indices, batches = ring_batches(prepared, session.batch_size, session.input_dtype, policy)
    reference = accuracy_mode_logits(session, prepared, _ring_size(indices))
    timed = measure(session, batches, policy, scenario=scenario, every_span=False)  # one figure per loop
    return Point(measurement=timed.measurement, computed=_computed(reference, indices, timed.outputs, policy, ""))


def ring_batches(prepared: PreparedDataset, batch_size: int, input_dtype: np.dtype, policy: TimingPolicy
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The timed ring: image indices per batch and the batches as the session takes them."""
    indices = ring_indices(len(prepared), batch_size, policy.ring_images)
    spec = prepared.spec
    raw = input_dtype == np.uint8
    batches = [
        np.asarray(prepared.images[idx]) if raw else normalize(np.asarray(prepared.images[idx]), spec.mean, spec.std)
        for idx in indices
    ]
    return indices, batches


def _ring_size(indices: Sequence[np.ndarray]) -> int:
    return int(max(int(i.max()) for i in indices)) + 1


def _computed(reference: np.ndarray, indices: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
              policy: TimingPolicy, where: str) -> Parity:
    """The timed outputs against the accuracy-mode logits of the same images (MLPerf TEST01)."""
    expected = np.concatenate([reference[idx] for idx in indices[: len(outputs)]], axis=0)
    computed = parity(expected, np.concatenate(outputs, axis=0))
    check = computed_check(computed, policy, indices[0].shape[0], _ring_size(indices))
    if not check.passed:
        raise NotComputedError(
            f"{where}{check.line()}: the timing loop did not compute what the accuracy run computes, so its "
            "throughput would not be a certification figure"
        )
    return computed


@dataclass(frozen=True)
class CardPoint:
    """The best batch on several devices of one card at once (harness.run.cards), computed-checked."""

    card: CardMeasurement
    computed: Mapping[int, Parity]

    @property
    def devices(self) -> str:
        return ",".join(str(d) for d in self.card.devices)


def card_point(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_size: int, source: str,
               device_ids: Sequence[int], scenario: str = SINGLE_STREAM) -> CardPoint:
    """``spec`` at ``batch_size`` timed on ``device_ids`` concurrently, one process per device; every
    device's timed outputs must equal the accuracy-mode outputs (computed here, on the first device)."""
    from harness.run.cards import SessionOpener, measure_card

    policy = workbench.policy.perf
    prepared = workbench.dataset(spec, source)
    compiled = workbench.compile(spec, chip, batch_size, source)
    for device in device_ids:
        with on_chip(chip.name):
            compiled.backend.preflight(device)
    with compiled.open(device_ids[0], scenario=scenario) as session:
        indices, batches = ring_batches(prepared, batch_size, session.input_dtype, policy)
        reference = accuracy_mode_logits(session, prepared, _ring_size(indices))
    opener = SessionOpener(
        backend=compiled.backend.name,
        options={"threads": workbench.cfg.threads, **chip.backend_options},
        artifact=compiled.artifact,
        target=compiled.target,
        num_classes=spec.num_classes,
        scenario=scenario,
    )
    with on_chip(chip.name):
        card = measure_card(opener, device_ids, batches, policy, scenario)
    computed = {d: _computed(reference, indices, outputs, policy, f"device {d}: ")
                for d, outputs in card.per_device_outputs.items()}
    return CardPoint(card=card, computed=computed)


def run_sweep(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_sizes: Sequence[int],
              source: str, device_id: int = 0, scenario: str = SINGLE_STREAM) -> Sweep:
    """Compile, check and time ``spec`` on ``chip`` at every batch size in ``scenario``."""
    from harness.progress import progress

    backend = workbench.backend(chip)
    prepared = workbench.dataset(spec, source)
    with on_chip(chip.name):
        backend.preflight(device_id)  # e.g. Ascend: refuse a busy device (npu-smi)
    points = []
    precisions = set()
    weights: dict[str, Any] = {}
    with progress(len(batch_sizes), f"{spec.name} on {chip.name}: batch sweep, {scenario}", unit="bs") as bar:
        for bs in batch_sizes:
            compiled = workbench.compile(spec, chip, bs, source, backend=backend)
            weights = compiled.loaded.provenance
            precisions.add(compiled.precision)
            with compiled.open(device_id, scenario=scenario) as session:
                points.append(time_one(session, prepared, workbench.policy.perf, scenario))
            bar.update(1)
    return Sweep(
        model=spec.name, chip=chip.name, backend=backend.name, backend_version=backend.version(),
        environment=backend.describe(),  # after open(): some backends learn what ran
        precision=", ".join(sorted(precisions)), dataset=str(prepared.listing.image_dir),
        dataset_key=prepared.key, ring_images=min(workbench.policy.perf.ring_images, len(prepared)),
        weights=weights, points=tuple(points), scenario=scenario,
    )


def session_sweep(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_sizes: Sequence[int], source: str,
                  scenario: str = SINGLE_STREAM) -> Sweep:
    """The batch-size sweep of ``spec`` on ``chip``, measured once per session (several ratio tests share it)."""
    memo = (spec.name, chip.name, tuple(batch_sizes), source, scenario)
    if memo not in workbench.sweeps:
        workbench.sweeps[memo] = run_sweep(workbench, spec, chip, batch_sizes, source,
                                           device_id=workbench.device_id(), scenario=scenario)
    return workbench.sweeps[memo]


def session_card(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_size: int, source: str,
                 device_ids: Sequence[int], scenario: str = SINGLE_STREAM) -> CardPoint:
    """The card measured at ``batch_size``, once per session (as :func:`session_sweep`)."""
    memo = ("card", spec.name, chip.name, batch_size, source, tuple(device_ids), scenario)
    if memo not in workbench.sweeps:
        workbench.sweeps[memo] = card_point(workbench, spec, chip, batch_size, source, device_ids, scenario)
    return workbench.sweeps[memo]
