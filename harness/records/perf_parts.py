"""The perf records' parts (harness.records.parts has the parts every kind shares): where the
figures came from, the best batch, the vendor tool's figure beside the suite's, the ratio rule and
its result, and each batch size's figures as ``<field>_bs<N>`` keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.records.parts import Part, batch_key, checked_value, field_types


@dataclass(frozen=True)
class Origin(Part):
    """Where a perf record's figures come from, and whether the timed runs were shown to compute."""

    figures_from: str | None = None  # "measured here", or the --measurements path
    computed_check: str | None = None  # "not applicable: ..." for figures measured elsewhere


@dataclass(frozen=True)
class Best(Part):
    """The best batch of a sweep (harness.judge.ratios.best_batch) and the units of its figures."""

    best_batch: int | None = None
    best_images_per_s: float | None = None
    best_images_per_s_per_card: float | None = None
    unit: str | None = None  # per_chip / per_card
    clock: str | None = None  # device_compute / wall
    devices_per_card: int | None = None
    # --device-ids naming several devices of a card: measured concurrently at the best batch
    # (harness.run.cards), beside best_images_per_s_per_card, the seeds' rule of one chip's
    # figure x devices_per_card (x 4 on a 310 card).
    per_card_measured: float | None = None
    per_card_devices: str | None = None  # the devices measured together, e.g. "0,1,2,3"
    per_card_window_s: float | None = None  # the common window the measured figure sums over


@dataclass(frozen=True)
class VendorComparison(Part):
    """``--compare-vendor-tool``: the vendor's own tool (benchmark_app, ais_bench, trtexec) on the same
    artifact, batch and scenario as the suite's best batch, measured right after it (harness.benchmark_tools)."""

    vendor_tool: str | None = None
    vendor_tool_version: str | None = None
    vendor_command: str | None = None
    vendor_batch_size: int | None = None
    vendor_images_per_s: float | None = None
    vendor_clock: str | None = None
    vendor_streams: int | None = None
    vendor_requests: int | None = None
    suite_images_per_s: float | None = None  # the suite's figure at that batch, same scenario
    suite_vs_vendor: float | None = None  # suite / tool; docs/vendor-parity.md: the target is within 3%
    vendor_note: str | None = None  # "not run: <why>" when the tool could not run


@dataclass(frozen=True)
class RatioRule(Part):
    """One throughput rule of the chip under test (fixtures/chips.toml)."""

    gate: str | None = None  # ratio_vs_<baseline chip>
    baseline_chip: str | None = None
    threshold: float | None = None
    rule_source: str | None = None


@dataclass(frozen=True)
class RatioResult(Part):
    """The rule evaluated at each side's best batch, per card (harness.judge.ratios.ratio_gate)."""

    ratio: float | None = None
    best_batch: int | None = None
    best_images_per_s_per_card: float | None = None
    baseline_best_batch: int | None = None
    baseline_images_per_s_per_card: float | None = None
    baseline_source: str | None = None
    baseline_note: str | None = None
    clock: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PerfPoint:
    """One batch size's figures; each is the key ``batch_key(<field>, batch_size)``."""

    batch_size: int
    images_per_s: float | None = None
    wall_images_per_s: float | None = None
    device_images_per_s: float | None = None
    latency_ms_mean: float | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_cv_percent: float | None = None
    runs: int | None = None
    seconds: float | None = None
    computed_top1_agreement: float | None = None
    computed_max_rel_diff: float | None = None
    ratio: float | None = None  # perf_ratio: this batch's figure / the baseline's at the same batch, per card
    scenario: str | None = None  # how the figure was measured: single-stream / offline
    clock: str | None = None  # wall / device_compute
    streams: int | None = None  # execution streams the device ran
    requests: int | None = None  # requests in flight (1 in single-stream)


POINT_FIELDS = tuple(f.name for f in dataclasses.fields(PerfPoint) if f.name != "batch_size")
_POINT_KEY = re.compile(rf"^({'|'.join(POINT_FIELDS)})_bs(\d+)$")


def merge_points(*groups: Sequence[PerfPoint]) -> tuple[PerfPoint, ...]:
    """Points of the same batch size merged (later groups' known fields win), sorted by batch size."""
    merged: dict[int, PerfPoint] = {}
    for group in groups:
        for p in group:
            known = {k: v for k, v in dataclasses.asdict(p).items() if v is not None}
            merged[p.batch_size] = dataclasses.replace(merged.get(p.batch_size, p), **known)
    return tuple(merged[bs] for bs in sorted(merged))


def points_json(points: Sequence[PerfPoint]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in POINT_FIELDS:  # grouped by figure, then batch size: the order records always had
        for p in points:
            value = getattr(p, name)
            if value is not None:
                out[batch_key(name, p.batch_size)] = value
    return out


def take_points(data: dict[str, Any], owner: str) -> tuple[PerfPoint, ...]:
    values: dict[int, dict[str, Any]] = {}
    allowed = field_types(PerfPoint)
    for key, match in [(k, m) for k in data if (m := _POINT_KEY.match(k))]:
        name, bs = match.groups()
        values.setdefault(int(bs), {})[name] = checked_value(owner, key, data.pop(key), allowed[name])
    return tuple(PerfPoint(batch_size=bs, **values[bs]) for bs in sorted(values))
