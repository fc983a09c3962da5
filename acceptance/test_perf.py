"""Performance certification: batch sweep, best batch, ratios against baseline chips.

`pytest -m perf --chip 310P3` measures every model's batch sweep on the chip (or reads figures
measured elsewhere with `--measurements FILE|DIR`), records images/s per batch size and the best
batch, and checks each rule of the chip (fixtures/chips.toml) against the baseline chips' best
figures (fixtures/baselines/<chip>.csv).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping

import pytest

from harness.backends.base import BackendUnavailable, DeviceBusy
from harness.judge.baselines import (
    Figure,
    baseline_path,
    load_baselines,
    read_measurements,
    save_baseline,
)
from harness.judge.gates import best_batch, ratio_gate
from harness.model.weights import WeightsNotFound
from harness.pytest.fixtures import PerfOptions
from harness.run.sweep import session_sweep
from harness.run.workbench import Workbench
from harness.specs import ChipSpec, ModelSpec, PerfRule

pytestmark = [pytest.mark.perf, pytest.mark.slow]

_MEASURED: dict[str, list[Figure]] = {}


def _refuse_shared_device(chip: ChipSpec, device_ids: tuple[int, ...]) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > len(device_ids):
        pytest.fail(
            f"refusing to time {chip.name}: {workers} pytest-xdist workers share {len(device_ids)} device(s) "
            f"({','.join(map(str, device_ids))}), so every figure would be slowed by the others. Run the perf "
            f"tests in one process: pytest -m perf --chip {chip.name} -p no:xdist (accuracy tests may keep -n), "
            f"or give each worker its own device: --device-ids with at least {workers} devices",
            pytrace=False,
        )


def _source(workbench: Workbench) -> str:
    return "imagenet" if workbench.cfg.imagenet is not None else "embedded"


def _imported(options: PerfOptions, chip: ChipSpec, models: list[str]) -> list[Figure]:
    assert options.measurements is not None
    key = f"{options.measurements}|{chip.name}"
    if key not in _MEASURED:
        _MEASURED[key] = read_measurements(options.measurements, chip.name, models)
    return _MEASURED[key]


def _figures_under_test(
    workbench: Workbench, options: PerfOptions, spec: ModelSpec, chip: ChipSpec, models: list[str],
    record: Callable[..., None],
) -> list[Figure]:
    """The chip-under-test's figures for ``spec``: imported (--measurements) or measured here."""
    if options.measurements is not None:
        figures = [f for f in _imported(options, chip, models) if f.model == spec.name]
        if not figures:
            pytest.skip(f"no {chip.name} figures for {spec.name} in --measurements {options.measurements}: "
                        "its source gives none, so this chip is not certified for this model")
        record(figures_from=str(options.measurements),
               computed_check="not applicable: figures measured elsewhere (--measurements)")
        return figures
    _refuse_shared_device(chip, workbench.cfg.device_ids)
    try:
        sweep = session_sweep(workbench, spec, chip, options.sizes_for(spec), _source(workbench))
    except BackendUnavailable as exc:
        pytest.skip(f"{chip.name} backend unavailable: {exc}")
    except DeviceBusy as exc:
        pytest.fail(str(exc), pytrace=False)
    except WeightsNotFound as exc:
        pytest.skip(f"pretrained weights not available: {exc.short}; throughput does not depend on weight "
                    "values: pass --weights random to time seeded random weights")
    record(figures_from="measured here", device_id=workbench.device_id(), backend=sweep.backend, backend_version=sweep.backend_version,
           precision=sweep.precision, input_dtype=workbench.cfg.input_dtype, decode=workbench.cfg.decode, dataset=sweep.dataset, dataset_key=sweep.dataset_key,
           ring_images=sweep.ring_images, weights=sweep.weights.get("kind"),
           weights_source=sweep.weights.get("source"),
           **{f"env_{k}": v for k, v in sweep.environment.items()})
    for point in sweep.points:
        bs = point.measurement.batch_size
        record(**point.measurement.as_record(f"_bs{bs}"),
               **{f"computed_top1_agreement_bs{bs}": point.computed.top1_agreement,
                  f"computed_max_rel_diff_bs{bs}": float(f"{point.computed.max_rel_diff:.4g}")})
    return sweep.figures(f"measured on {socket.gethostname()} {time.strftime('%Y-%m-%d')}")


@pytest.mark.perf
def test_throughput(
    workbench: Workbench, perf_options: PerfOptions, model_spec: ModelSpec, chip_spec: ChipSpec,
    chips: Mapping[str, ChipSpec], registry: Mapping[str, ModelSpec], record: Callable[..., None],
) -> None:
    """The batch sweep: images/s and latency per batch size, and the best batch."""
    record(kind="perf", model=model_spec.name, chip=chip_spec.name)
    figures = _figures_under_test(workbench, perf_options, model_spec, chip_spec, list(registry), record)
    top = best_batch(figures)
    assert top is not None
    record(**{f"images_per_s_bs{f.batch_size}": round(f.images_per_s, 4) for f in figures},
           best_batch=top.batch_size, best_images_per_s=round(top.images_per_s, 4),
           best_images_per_s_per_card=round(top.per_card(chip_spec), 4),
           unit=top.unit, clock=top.clock, devices_per_card=chip_spec.devices_per_card)
    if perf_options.save_baseline:
        path = save_baseline(figures, chip_spec.name, perf_options.baselines_dir)
        record(saved_baseline=str(path))


@pytest.mark.perf
def test_throughput_ratio(
    workbench: Workbench, perf_options: PerfOptions, model_spec: ModelSpec, chip_spec: ChipSpec,
    perf_rule: PerfRule, chips: Mapping[str, ChipSpec], registry: Mapping[str, ModelSpec],
    record: Callable[..., None],
) -> None:
    """One rule of the chip: its best batch vs the baseline chip's best batch, per card."""
    gate = f"ratio_vs_{perf_rule.baseline}"
    record(kind="perf_ratio", model=model_spec.name, chip=chip_spec.name, gate=gate, baseline_chip=perf_rule.baseline,
           threshold=perf_rule.min_ratio, rule_source=perf_rule.source)
    models = list(registry)
    baseline = [f for f in load_baselines(perf_rule.baseline, perf_options.baselines_dir, models)
                if f.model == model_spec.name]
    path = baseline_path(perf_rule.baseline, perf_options.baselines_dir)
    if not baseline:
        pytest.skip(
            f"no {perf_rule.baseline} baseline for {model_spec.name}: add its rows "
            f"({model_spec.name},<batch_size>,<images_per_s>,<unit>,<clock>,<source>,<note>) to {path}, "
            f"e.g. by running pytest -m perf --chip {perf_rule.baseline} --models {model_spec.name} --save-baseline "
            f"on a machine with a {perf_rule.baseline}"
        )
    measured = _figures_under_test(workbench, perf_options, model_spec, chip_spec, models, record)
    check = ratio_gate(perf_rule, measured, chip_spec, baseline, chips[perf_rule.baseline])
    record(**{gate: round(check.ratio, 4)}, ratio=round(check.ratio, 6),
           best_batch=check.measured.batch_size, best_images_per_s_per_card=round(check.measured_per_card, 4),
           baseline_best_batch=check.baseline.batch_size,
           baseline_images_per_s_per_card=round(check.baseline_per_card, 4),
           baseline_source=check.baseline.source, baseline_note=check.baseline.note,
           clock=check.measured.clock, verdict="pass" if check.passed else "fail", detail=check.line())
    assert check.passed, check.line()
