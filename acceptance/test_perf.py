"""Performance certification: batch sweep, best batch, ratios against baseline chips.

`pytest -m perf --chip 310P3` measures every model's batch sweep on the chip (or reads figures
measured elsewhere with `--measurements FILE|DIR`), records images/s per batch size and the best
batch, and checks each rule of the chip (fixtures/chips.toml) against the baseline chips' best
figures (fixtures/baselines/<chip>.csv). The records (harness.records.schema) carry the figures,
the ratios per batch size and at the best batch, and the verdicts of the gates.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace

import pytest

from acceptance._records import (
    card_best,
    configuration,
    figure_points,
    sweep_points,
    sweep_setup,
)
from harness.errors import NotApplicable
from harness.judge.baselines import (
    Figure,
    baseline_path,
    load_baselines,
    read_measurements,
    save_baseline,
)
from harness.judge.gates import Gate, certify, computed_check
from harness.judge.ratios import RatioCheck, best_batch, ratio_gate
from harness.pytest.fixtures import PerfOptions, RecordWriter
from harness.records.parts import (
    MEASURED,
    MEASUREMENTS,
    Configuration,
    Judgement,
)
from harness.records.perf_parts import (
    Best,
    Origin,
    PerfPoint,
    RatioResult,
    RatioRule,
    VendorComparison,
    merge_points,
)
from harness.records.schema import PerfRatioRecord, PerfRecord
from harness.run.sweep import session_card, session_sweep
from harness.run.workbench import Workbench
from harness.specs import ChipSpec, ModelSpec, PerfRule

pytestmark = [pytest.mark.perf, pytest.mark.slow]

_MEASURED: dict[str, list[Figure]] = {}


def _xdist_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def _refuse_shared_device(chip: ChipSpec, device_ids: tuple[int, ...]) -> None:
    workers = _xdist_workers()
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


def _configuration(workbench: Workbench, options: PerfOptions, spec: ModelSpec, chip: ChipSpec) -> Configuration:
    return configuration(workbench, spec, chip, source=MEASUREMENTS if options.measurements is not None else MEASURED,
                         scenario=options.scenario)


def _figures_under_test(
    workbench: Workbench, options: PerfOptions, spec: ModelSpec, chip: ChipSpec, models: list[str],
    record: RecordWriter,
) -> tuple[list[Figure], list[Gate]]:
    """The chip-under-test's figures for ``spec``: imported (--measurements) or measured here, and
    the computed-check gates of the timed runs (none for figures measured elsewhere)."""
    if options.measurements is not None:
        theirs = [f for f in _imported(options, chip, models) if f.model == spec.name]
        figures = [f for f in theirs if f.scenario == options.scenario]
        if not figures:
            other = sorted({f.scenario for f in theirs})
            kind = f" {options.scenario}" if other else ""
            pytest.skip(f"no{kind} {chip.name} figures for {spec.name} in --measurements {options.measurements}"
                        + (f" (it has {', '.join(other)}: --scenario {other[0]})" if other else "")
                        + ": its source gives none, so this chip is not certified for this model")
        record.update(origin=Origin(figures_from=str(options.measurements),
                                    computed_check="not applicable: figures measured elsewhere (--measurements)"),
                      points=merge_points(record.current.points, figure_points(figures)))
        return figures, []
    _refuse_shared_device(chip, workbench.cfg.device_ids)
    sweep = session_sweep(workbench, spec, chip, options.sizes_for(spec), _source(workbench), options.scenario)
    record.update(config=replace(record.current.config, backend=sweep.backend, precision=sweep.precision),
                  origin=Origin(figures_from="measured here"), setup=sweep_setup(sweep, workbench),
                  points=merge_points(record.current.points, sweep_points(sweep)))
    gates = [computed_check(p.computed, workbench.policy.perf, p.measurement.batch_size, sweep.ring_images)
             for p in sweep.points]
    return sweep.figures(f"measured on {socket.gethostname()} {time.strftime('%Y-%m-%d')}"), gates


def card_and_vendor(workbench: Workbench, options: PerfOptions, spec: ModelSpec, chip: ChipSpec, top: Figure,
                    record: RecordWriter) -> None:
    """At the best batch measured here: the whole card when --device-ids names several devices (one
    process, not pytest-xdist's workers), and the vendor's own tool with --compare-vendor-tool."""
    ids = workbench.cfg.device_ids
    if len(ids) > 1 and _xdist_workers() == 1:
        try:
            point = session_card(workbench, spec, chip, top.batch_size, _source(workbench), ids, options.scenario)
        except NotApplicable as exc:  # e.g. a backend with one device: the sweep stands, the card is not measured
            warnings.warn(f"--device-ids {','.join(map(str, ids))}: the card was not measured: {exc.reason()}",
                          stacklevel=2)
        else:
            record.update(best=card_best(record.current.best, point))
    if options.compare_vendor_tool:
        record.update(vendor=vendor_comparison(workbench, spec, chip, top, options.scenario))


def vendor_comparison(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, top: Figure, scenario: str
                      ) -> VendorComparison:
    """The vendor tool on the best batch's artifact, same scenario, right after the suite's sweep;
    a tool that cannot run here is recorded as such (and warned about), never a failed certification."""
    from harness.benchmark_tools import vendor_tool_for  # the vendor tools only when asked for


    try:
        tool = vendor_tool_for(chip.backend, chip.backend_options)
        compiled = workbench.compile(spec, chip, top.batch_size, _source(workbench))
        theirs = tool.measure(compiled.artifact, compiled.target, scenario, device_id=workbench.device_id(),
                          seconds=workbench.policy.perf.min_seconds, threads=workbench.cfg.threads)
    except NotApplicable as exc:
        warnings.warn(f"--compare-vendor-tool: {exc.reason()}", stacklevel=2)
        return VendorComparison(vendor_note=f"not run: {exc.reason()}")
    return VendorComparison(
        vendor_tool=theirs.tool, vendor_tool_version=theirs.tool_version, vendor_command=theirs.command_line(),
        vendor_batch_size=theirs.batch_size, vendor_images_per_s=round(theirs.images_per_s, 4),
        vendor_clock=theirs.clock, vendor_streams=theirs.streams, vendor_requests=theirs.requests,
        suite_images_per_s=round(top.images_per_s, 4),
        suite_vs_vendor=round(top.images_per_s / theirs.images_per_s, 4),
    )


@pytest.mark.perf
def test_throughput(
    workbench: Workbench, perf_options: PerfOptions, model_spec: ModelSpec, chip_spec: ChipSpec,
    chips: Mapping[str, ChipSpec], registry: Mapping[str, ModelSpec], record: RecordWriter,
) -> None:
    """The batch sweep: images/s and latency per batch size, and the best batch."""
    record.start(PerfRecord(config=_configuration(workbench, perf_options, model_spec, chip_spec)))
    figures, gates = _figures_under_test(workbench, perf_options, model_spec, chip_spec, list(registry), record)
    top = best_batch(figures)
    assert top is not None
    record.update(best=Best(best_batch=top.batch_size, best_images_per_s=round(top.images_per_s, 4),
                            best_images_per_s_per_card=round(top.per_card(chip_spec), 4), unit=top.unit,
                            clock=top.clock, devices_per_card=chip_spec.devices_per_card),
                  judgement=Judgement.of(gates))
    if perf_options.measurements is None:
        card_and_vendor(workbench, perf_options, model_spec, chip_spec, top, record)
    if perf_options.save_baseline:
        path = save_baseline(figures, chip_spec.name, perf_options.baselines_dir)
        record.update(saved_baseline=str(path))


@pytest.mark.perf
def test_throughput_ratio(
    workbench: Workbench, perf_options: PerfOptions, model_spec: ModelSpec, chip_spec: ChipSpec,
    perf_rule: PerfRule, chips: Mapping[str, ChipSpec], registry: Mapping[str, ModelSpec],
    record: RecordWriter,
) -> None:
    """One rule of the chip: its best batch vs the baseline chip's best batch, per card."""
    record.start(PerfRatioRecord(
        config=_configuration(workbench, perf_options, model_spec, chip_spec),
        rule=RatioRule(gate=f"ratio_vs_{perf_rule.baseline}", baseline_chip=perf_rule.baseline,
                       threshold=perf_rule.min_ratio, rule_source=perf_rule.source)))
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
    measured, gates = _figures_under_test(workbench, perf_options, model_spec, chip_spec, models, record)
    baseline_chip = chips[perf_rule.baseline]
    check = ratio_gate(perf_rule, measured, chip_spec, baseline, baseline_chip)
    theirs = {f.batch_size: f.per_card(baseline_chip) for f in baseline
              if (f.scenario, f.clock) == (check.measured.scenario, check.measured.clock)}
    per_batch = [PerfPoint(batch_size=f.batch_size, ratio=f.per_card(chip_spec) / theirs[f.batch_size])
                 for f in measured if theirs.get(f.batch_size)]
    record.update(
        named_ratio=round(check.ratio, 4), points=merge_points(record.current.points, per_batch),
        result=RatioResult(ratio=round(check.ratio, 6), best_batch=check.measured.batch_size,
                           best_images_per_s_per_card=round(check.measured_per_card, 4),
                           baseline_best_batch=check.baseline.batch_size,
                           baseline_images_per_s_per_card=round(check.baseline_per_card, 4),
                           baseline_source=check.baseline.source, baseline_note=check.baseline.note,
                           clock=check.measured.clock, detail=check.line()),
        judgement=Judgement.of(gates).with_ratio(check))
    certify([ratio_as_gate(check)],
            f"{model_spec.name} on {chip_spec.name} vs {perf_rule.baseline} ({perf_rule.source})")


def ratio_as_gate(check: RatioCheck) -> Gate:
    """A throughput rule as a gate, for the verdict's message (harness.judge.gates.certify): named with its
    scenario and clock, its line (RatioCheck.line) as the detail; the record keeps ``gate_ratio_vs_<chip>``."""
    m, b = check.measured, check.baseline
    name = f"ratio_vs_{check.rule.baseline} ({m.scenario}, {m.clock})"
    return Gate(name=name, measured=check.ratio, threshold=check.rule.min_ratio,
                passed=check.passed, detail=check.line().split(f"{name}: ", 1)[-1],
                summary=(f"{check.ratio:.4f} {'>=' if check.passed else '<'} {check.rule.min_ratio:g} "
                         f"(bs{m.batch_size} {check.measured_per_card:.1f} vs {b.chip} bs{b.batch_size} "
                         f"{check.baseline_per_card:.1f} images/s per card)"))
