"""The acceptance tests' record parts (harness.records.parts) from what the harness measured.

Every test starts its record with the configuration it was asked for (``configuration``) and
replaces it with what ran once that is known (the backend's precision after compiling); the
parts below turn an :class:`~harness.run.workbench.Evaluation` or a
:class:`~harness.run.sweep.Sweep` into the fields of the results file, rounded as recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from harness.judge.baselines import Figure
from harness.model import fast_eval
from harness.records.parts import (
    MEASURED,
    Configuration,
    Published,
    Quantization,
    Reference,
    Scores,
    Setup,
)
from harness.records.perf_parts import Best, PerfPoint
from harness.run.reference import ReferenceCheck
from harness.run.sweep import CardPoint, Sweep
from harness.run.workbench import Evaluation, Workbench
from harness.specs import ChipSpec, ModelSpec


def configuration(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_size: int | None = None,
                  source: str = MEASURED, scenario: str | None = None) -> Configuration:
    """What the test was asked to run: figures measured here know their backend and input up front;
    perf tests also say their scenario."""
    if source != MEASURED:
        return Configuration(model=spec.name, chip=chip.name, batch_size=batch_size, source=source, scenario=scenario)
    return Configuration(model=spec.name, chip=chip.name, backend=chip.backend, input_dtype=workbench.cfg.input_dtype,
                         batch_size=batch_size, source=source, scenario=scenario)


def published(spec: ModelSpec) -> Published:
    p, lib = spec.published, spec.library
    return Published(published_top1=p.top1, published_top5=p.top5, published_source=p.source,
                     library=f"{lib.library} {lib.version}: {lib.weights}" if lib else None,
                     recipe_note=(lib.recipe_note or None) if lib else None)


def evaluation_parts(ev: Evaluation, config: Configuration, dataset_name: str | None = None) -> dict[str, object]:
    """``record.update(**evaluation_parts(ev, config))``: what an accuracy or agreement run measured."""
    return {
        "config": replace(config, backend=ev.backend, precision=ev.precision, input_dtype=ev.input_dtype),
        "setup": Setup(
            backend_version=ev.backend_version, environment=dict(ev.environment), decode=ev.decode,
            dataset=ev.dataset, dataset_name=dataset_name, dataset_key=ev.dataset_key, label_source=ev.label_source,
            preprocess=ev.preprocess.describe(), weights=ev.weights.get("kind"),
            weights_source=ev.weights.get("source"), weights_sha256=ev.weights.get("sha256"),
        ),
        "scores": Scores(images=ev.accuracy.count, skipped_unlabeled=ev.skipped_unlabeled,
                         skipped_missing=ev.skipped_missing, top1=round(ev.accuracy.top1, 4),
                         top5=round(ev.accuracy.top5, 4)),
        "reference": Reference(
            reference_top1=round(ev.reference.top1, 4), reference_top5=round(ev.reference.top5, 4),
            delta_top1_vs_reference=round(ev.accuracy.top1 - ev.reference.top1, 4),
            delta_top5_vs_reference=round(ev.accuracy.top5 - ev.reference.top5, 4),
            top1_agreement=round(ev.agreement.top1_agreement, 4),
            max_abs_diff=float(f"{ev.agreement.max_abs_diff:.4g}"),
            **reference_provenance(ev.reference_origin),
        ),
        "quantization": Quantization.of(ev.quantization),  # int8 runs: calibration, quantizer, logit ties
    }


def reference_provenance(origin: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :class:`Reference` fields that say where the reference logits came from and how they
    were checked (harness.run.workbench.Workbench.reference's ``origin``)."""
    if not origin:
        return {}
    check, imported = origin.get("check"), origin.get("imported_from")
    fields: dict[str, Any] = {"reference_computed": reference_computed(origin),
                              "reference_origin": origin.get("origin"),
                              "reference_path": fast_eval.describe_path(origin.get("reference_path"))}
    if isinstance(imported, Mapping):
        fields.update(reference_file=imported.get("file"), reference_file_sha256=imported.get("file_sha256"))
    if isinstance(check, ReferenceCheck):
        fields.update(reference_checked_images=check.images, reference_check_seed=check.seed,
                      reference_check_max_rel_diff=float(f"{check.max_rel_diff:.4g}"))
    return fields


def reference_computed(origin: Mapping[str, Any] | None) -> str | None:
    """``torch 2.14.1 on HOST at TIME[; imported from FILE (exported on HOST at TIME)]``."""
    if not origin:
        return None
    text = (f"torch {origin.get('torch') or '?'} on {origin.get('computed_host') or '?'} "
            f"at {origin.get('computed_at') or '?'}")
    imported = origin.get("imported_from")
    if isinstance(imported, Mapping):
        text += (f"; imported from {imported.get('file') or '?'} (exported on {imported.get('exported_host') or '?'} "
                 f"at {imported.get('exported_at') or '?'})")
    return text


def sweep_setup(sweep: Sweep, workbench: Workbench) -> Setup:
    """What a batch sweep ran on."""
    return Setup(backend_version=sweep.backend_version, environment=dict(sweep.environment),
                 device_id=workbench.device_id(), decode=workbench.cfg.decode, dataset=sweep.dataset,
                 dataset_key=sweep.dataset_key, ring_images=sweep.ring_images, weights=sweep.weights.get("kind"),
                 weights_source=sweep.weights.get("source"))


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)  # offline figures have no latency


def sweep_points(sweep: Sweep) -> tuple[PerfPoint, ...]:
    """Each batch size's timing and its computed-check figures."""
    points = []
    for p in sweep.points:
        m = p.measurement
        points.append(PerfPoint(
            batch_size=m.batch_size, images_per_s=round(m.images_per_s, 4),
            wall_images_per_s=round(m.wall_images_per_s, 4),
            device_images_per_s=round(m.device_images_per_s, 4) if m.device_images_per_s is not None else None,
            latency_ms_mean=_rounded(m.latency_ms_mean, 4), latency_ms_median=_rounded(m.latency_ms_median, 4),
            latency_ms_p90=_rounded(m.latency_ms_p90, 4), latency_ms_p99=_rounded(m.latency_ms_p99, 4),
            latency_cv_percent=_rounded(m.latency_cv_percent, 3), runs=m.runs, seconds=round(m.seconds, 3),
            computed_top1_agreement=p.computed.top1_agreement,
            computed_max_rel_diff=float(f"{p.computed.max_rel_diff:.4g}"),
            scenario=m.scenario, clock=m.clock, streams=m.streams, requests=m.requests,
        ))
    return tuple(points)


def card_best(best: Best, point: CardPoint) -> Best:
    """The best batch's record with the whole card measured beside the seeds' chip x devices_per_card
    (``best_images_per_s_per_card``)."""
    return replace(best, per_card_measured=round(point.card.images_per_s, 4), per_card_devices=point.devices,
                   per_card_window_s=round(point.card.window_s, 3))


def figure_points(figures: Sequence[Figure]) -> tuple[PerfPoint, ...]:
    """Figures read from elsewhere (--measurements): images/s per batch size, as their source states them."""
    return tuple(PerfPoint(batch_size=f.batch_size, images_per_s=round(f.images_per_s, 4), scenario=f.scenario,
                           clock=f.clock)
                 for f in sorted(figures, key=lambda f: f.batch_size))
