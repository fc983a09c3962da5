"""The certification policy (``fixtures/policy.toml``): tolerances, seeds, how timing measures
and when the report flags a regression, as frozen data classes.

Reading and validating the file is ``harness.specs.load``'s job; these classes only hold the
result (the defaults below are what a missing [perf] or [history] table means).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimingPolicy:
    """How the one timing loop measures (fixtures/policy.toml [perf])."""

    warmup_runs: int = 3
    min_runs: int = 10
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    ring_images: int = 128
    computed_rtol: float = 1e-4


@dataclass(frozen=True)
class HistoryPolicy:
    """When the report flags a run as worse than the previous one (fixtures/policy.toml [history]).

    Separate from the gates: a nightly drift of half a point is worth a look long before it fails
    the 1-point certification tolerance.
    """

    regression_top1_points: float = 0.5
    regression_throughput_percent: float = 5.0


@dataclass(frozen=True)
class Policy:
    """fixtures/policy.toml, validated: the numbers the gates and the timing loop use."""

    accuracy_tolerance_points: float
    agreement_min_top1: float
    accuracy_batch_sizes: tuple[int, ...]
    conversion_rtol: float
    conversion_min_cosine: float
    calibration_images: int
    seed: int
    timing: TimingPolicy = TimingPolicy()
    history: HistoryPolicy = HistoryPolicy()
