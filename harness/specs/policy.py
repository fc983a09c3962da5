"""The certification policy (``fixtures/policy.toml``): tolerances, seeds, how timing measures
and when the report flags a regression, as frozen data classes.

Reading and validating the file is ``harness.specs.load``'s job; these classes only hold the
result (the defaults below are what a missing [perf] or [history] table, or a missing optional
[accuracy] field, means).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

TOLERANCE_RULES = ("absolute", "relative")
INCONCLUSIVE_POLICIES = ("fail", "allow")
PAIRED_METHODS = ("tango", "newcombe")  # harness.judge.paired.drop_interval's methods


@dataclass(frozen=True)
class AccuracyTolerance:
    """How far below a reference accuracy a compiled model may be (fixtures/policy.toml
    [accuracy], per model ``accuracy_tolerance`` in fixtures/models.toml).

    ``absolute``: at most ``points`` percentage points below (the mission's "within 1 point").
    ``relative``: at least ``fraction`` of the reference (MLPerf's ">= 99% of the FP32
    reference"), i.e. at most ``(1 - fraction) * reference`` points below.
    """

    rule: str = "absolute"
    points: float = 1.0
    fraction: float = 0.99

    def points_for(self, reference_accuracy: float) -> float:
        """The allowed drop in points below ``reference_accuracy`` (percent)."""
        if self.rule == "relative":
            return (1.0 - self.fraction) * reference_accuracy
        return self.points

    def describe(self) -> str:
        """``absolute rule: 1 point`` or ``relative rule: >= 99% of the reference``."""
        if self.rule == "relative":
            return f"relative rule: >= {self.fraction * 100:g}% of the reference"
        return f"absolute rule: {self.points:g} point{'' if self.points == 1 else 's'}"


@dataclass(frozen=True)
class VerdictPolicy:
    """How the three-way verdicts are reached and what ``inconclusive`` does (policy.toml [accuracy]).

    ``confidence``: the two-sided level of every interval (0.95: each decisive verdict is wrong
    in at most ~2.5% of runs). ``paired_method``: the paired drop's interval (Tango's score
    interval or Newcombe's hybrid score, harness.judge.paired). ``inconclusive``: ``fail``
    (default: a run on too few images is not green) or ``allow`` (recorded as inconclusive, the
    test passes).
    """

    confidence: float = 0.95
    paired_method: str = "tango"
    inconclusive: str = "fail"


@dataclass(frozen=True)
class ReferencePolicy:
    """When the torch reference may judge (fixtures/policy.toml [reference], issue 24).

    ``subset_margin_points``: on a subset of the validation set, the published figure must lie
    within the reference's Wilson interval widened by this many points on each side (on the full
    set the tolerance decides). ``check_images``: how many images of a reference not computed in
    this session are recomputed with torch before it judges; ``check_rtol``: the largest
    difference allowed there, relative to each image's largest |logit|.
    """

    subset_margin_points: float = 20.0
    check_images: int = 32
    check_rtol: float = 1e-3


@dataclass(frozen=True)
class DataPolicy:
    """How much memory decoding one image may take (fixtures/policy.toml [data], issue 25).

    ``decode_memory_mb``: the most one image may allocate in a preprocessing worker, decoded
    pixels and every intermediate of the resize included, estimated from its header before it is
    decoded (harness.data.transforms); an image over it is refused naming the file.
    """

    decode_memory_mb: int = 512


@dataclass(frozen=True)
class TimingPolicy:
    """How the one timing loop measures (fixtures/policy.toml [perf])."""

    warmup_runs: int = 3
    min_runs: int = 10
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    ring_images: int = 128
    computed_rtol: float = 1e-4
    # A whole card's devices must have been timed together for at least this fraction of the
    # shortest device's steady state, or there is no card figure (harness.run.cards).
    card_min_overlap: float = 0.5


@dataclass(frozen=True)
class HistoryPolicy:
    """When the report flags a run as worse than the previous one (fixtures/policy.toml [history]).

    Separate from the gates: a nightly drift of half a point is worth a look long before it fails
    the 1-point certification tolerance.
    """

    regression_top1_points: float = 0.5
    regression_throughput_percent: float = 5.0


@dataclass(frozen=True)
class LocalizeThresholds:
    """When a tensor is over threshold, and how localisation runs (fixtures/policy.toml [localize]).

    The metric thresholds are msit's documented defaults for ``debug compare`` (its analyser flags
    the first operator with CosineSimilarity < 0.99, RootMeanSquareError > 1.0 or MeanRelativeError
    > 1.0; github.com/Ascend/msit ``msit/components/debug/compare/README_EN.md``, "Comparison Result
    Analysis", and ``msquickcmp/net_compare/analyser.py`` ``MONITOR_THRESHOLD``; docs/localize.md).
    msit has no threshold on the largest absolute or relative difference: ours default to infinity
    (reported, never judged). The other fields are this suite's own choices (docs/localize.md).
    """

    min_cosine: float = 0.99  # msit: CosineSimilarity < 0.99
    max_rmse: float = 1.0  # msit: RootMeanSquareError > 1.0
    max_mean_relative_error: float = 1.0  # msit: MeanRelativeError > 1.0
    max_abs_diff: float = math.inf  # msit has none: reported, not judged
    max_relative_diff: float = math.inf  # msit has none: reported, not judged
    images: int = 16  # the most divergent images the layer comparison runs on
    # Exposing every tensor must not change the candidate's final error by more than this fraction,
    # or the exposed run does not show the error being localised: bisect instead.
    exposure_tolerance: float = 0.2
    # Accumulated: some tensor after the first divergent one is this many times further from the
    # reference (1 - cosine) than the first divergent one; local otherwise.
    growth_factor: float = 2.0

    def over(self, cosine: float, rmse: float, mean_relative_error: float, max_abs_diff: float,
             max_relative_diff: float) -> tuple[str, ...]:
        """The metrics over threshold (empty: within); a NaN (non-finite output) counts as over."""
        reasons = []
        if not cosine >= self.min_cosine:
            reasons.append("cosine")
        if not rmse <= self.max_rmse:
            reasons.append("rmse")
        if not mean_relative_error <= self.max_mean_relative_error:
            reasons.append("mean_relative_error")
        if not max_abs_diff <= self.max_abs_diff:
            reasons.append("max_abs_diff")
        if not max_relative_diff <= self.max_relative_diff:
            reasons.append("max_relative_diff")
        return tuple(reasons)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (infinity as the string ``"inf"``: JSON has no infinity)."""
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


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
    # The tolerance as a rule; its ``points`` is always ``accuracy_tolerance_points``.
    accuracy_tolerance: AccuracyTolerance = AccuracyTolerance()
    verdicts: VerdictPolicy = VerdictPolicy()
    localize: LocalizeThresholds = LocalizeThresholds()
    reference: ReferencePolicy = ReferencePolicy()
    data: DataPolicy = DataPolicy()
