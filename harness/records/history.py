"""Each model's figures across runs, one series per configuration, and the regressions within a series.

A series is keyed by the whole :class:`~harness.records.parts.Configuration` (model, chip,
backend, precision, input dtype, batch size, source of the figures): an ONNX Runtime figure
followed by an OpenVINO one is two series, never a regression; figures measured here and figures
read with --measurements or --predictions are never compared with each other. Within a series,
each figure is compared with the same series' figure of the previous run that has one (runs on
other machines in between measure other configurations). Top-1 figures are compared only when
both runs scored as many images (a --limit 64 run is not "the previous run" of a full one).

Every point keeps the record each figure came from (:attr:`HistoryPoint.records`), so a history
cell carries the verdict its test recorded: a failed and an allowed-inconclusive 50-image run
show the same top-1 but are not the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.records.parts import Configuration
from harness.records.results import Results, Run, finite, sort_key
from harness.records.schema import AccuracyRecord, PerfRecord, ResultRecord
from harness.specs import HistoryPolicy

TOP1, THROUGHPUT = "top-1", "images/s"


@dataclass(frozen=True)
class Scored:
    """One run's top-1/top-5 in one accuracy configuration, and which images they were on."""

    top1: float
    top5: float | None
    images: int | None  # how many images were scored


@dataclass(frozen=True)
class HistoryPoint:
    """One run's figures for one model: top-1/top-5 per accuracy series, the best batch per perf series."""

    run: Run
    accuracy: Mapping[Configuration, Scored]
    throughput: Mapping[Configuration, tuple[int, float]]  # (best batch, images/s per card)
    # (TOP1 or THROUGHPUT, series) -> the record the figure is from: its verdict and outcome
    records: Mapping[tuple[str, Configuration], ResultRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class Regression:
    """A figure that dropped beyond the policy's [history] threshold since the series' previous run."""

    model: str
    figure: str  # TOP1 or THROUGHPUT
    config: Configuration
    run_id: str
    previous_run_id: str
    previous: float
    current: float
    threshold: str

    @property
    def what(self) -> str:
        """``top-1 Ascend310P3 ascend fp16 bs8`` / ``images/s cpu onnxruntime fp32``."""
        return f"{self.figure} {self.config.label()}"

    def describe(self) -> str:
        if self.figure == TOP1:
            change = f"{self.previous:.2f} -> {self.current:.2f} ({self.current - self.previous:+.2f} points)"
        else:
            change = (f"{self.previous:.2f} -> {self.current:.2f} images/s per card "
                      f"({100 * (self.current - self.previous) / self.previous:+.1f}%)")
        return (f"REGRESSION {self.model} {self.what}: {change} in run {self.run_id} vs run "
                f"{self.previous_run_id} (threshold {self.threshold})")


@dataclass(frozen=True)
class ModelHistory:
    model: str
    points: tuple[HistoryPoint, ...]
    accuracy_series: tuple[Configuration, ...]
    throughput_series: tuple[Configuration, ...]


def _accuracy_of(run: Run, model: str, records: dict[tuple[str, Configuration], ResultRecord],
                 ) -> dict[Configuration, Scored]:
    out: dict[Configuration, Scored] = {}
    for r in run.records:
        if isinstance(r, AccuracyRecord) and r.kind == "accuracy" and r.model == model and r.outcome != "skipped":
            s = r.scores
            if finite(s.top1):
                out[r.config] = Scored(float(s.top1), float(s.top5) if finite(s.top5) else None, s.images)
                records[(TOP1, r.config)] = r
    return out


def _throughput_of(run: Run, model: str, records: dict[tuple[str, Configuration], ResultRecord],
                   ) -> dict[Configuration, tuple[int, float]]:
    out: dict[Configuration, tuple[int, float]] = {}
    for r in run.records:
        if isinstance(r, PerfRecord) and r.model == model and r.outcome != "skipped":
            best = r.best_per_card()
            if best is not None:
                out[r.config] = best
                records[(THROUGHPUT, r.config)] = r
    return out


def model_history(results: Results, model: str) -> ModelHistory:
    """One point per run (oldest first) that measured ``model``."""
    points = []
    for run in results.runs:
        records: dict[tuple[str, Configuration], ResultRecord] = {}
        accuracy, throughput = _accuracy_of(run, model, records), _throughput_of(run, model, records)
        if accuracy or throughput:
            points.append(HistoryPoint(run=run, accuracy=accuracy, throughput=throughput, records=records))
    accuracy_series = sorted({c for p in points for c in p.accuracy}, key=sort_key)
    throughput_series = sorted({c for p in points for c in p.throughput}, key=sort_key)
    return ModelHistory(model=model, points=tuple(points), accuracy_series=tuple(accuracy_series),
                        throughput_series=tuple(throughput_series))


def find_regressions(history: ModelHistory, policy: HistoryPolicy) -> list[Regression]:
    """Each figure against the same series' figure of the previous run that has it."""
    found: list[Regression] = []
    last_top1: dict[Configuration, tuple[Scored, str]] = {}
    last_best: dict[Configuration, tuple[float, str]] = {}
    for point in history.points:
        run_id = point.run.run_id
        for config, scored in point.accuracy.items():
            before = last_top1.get(config)
            if (before is not None and before[0].images == scored.images
                    and before[0].top1 - scored.top1 > policy.regression_top1_points):
                found.append(Regression(history.model, TOP1, config, run_id, before[1], before[0].top1, scored.top1,
                                        f"{policy.regression_top1_points:g} points"))
            last_top1[config] = (scored, run_id)
        for config, (_, best) in point.throughput.items():
            if config in last_best:
                previous = last_best[config][0]
                if previous > 0 and 100 * (previous - best) / previous > policy.regression_throughput_percent:
                    found.append(Regression(history.model, THROUGHPUT, config, run_id, last_best[config][1], previous,
                                            best, f"{policy.regression_throughput_percent:g}%"))
            last_best[config] = (best, run_id)
    return found
