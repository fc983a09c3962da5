"""The certification policy (``fixtures/policy.toml``): tolerances, seeds, how timing measures
and when the report flags a regression, as frozen data classes, one per table of the file.

Every field is declared once, here (``harness.specs.settings.setting``): its type (the
annotation), range, default (none: the file must state it), unit and meaning. The loader's checks
(``harness.specs.load.load_policy``), the table of docs/policy.md and the help texts that name a
policy value (``harness.specs.policy_doc``) all come from these declarations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from harness.specs.settings import Table, setting

TOLERANCE_RULES = ("absolute", "relative")
INCONCLUSIVE_POLICIES = ("fail", "allow")
PAIRED_METHODS = ("tango", "newcombe")  # harness.judge.paired.drop_interval's methods


@dataclass(frozen=True, kw_only=True)
class AccuracyPolicy(Table):
    """[accuracy]: how far below its references a compiled model may be, and how the three-way
    verdicts are reached."""

    tolerance_rule: str = setting("absolute", choices=TOLERANCE_RULES, doc=(
        "absolute: at most tolerance_points below the reference; relative: at least tolerance_fraction of it "
        "(a model may override the rule in models.toml, accuracy_tolerance)"))
    tolerance_points: float = setting(ge=0, le=100, unit="points", doc=(
        "the largest drop of top-1 and top-5 below the published figure and the torch reference, absolute rule"))
    tolerance_fraction: float = setting(0.99, gt=0, le=1, unit="of the reference", doc=(
        "the least fraction of the reference's top-1 and top-5, relative rule (MLPerf: 0.99)"))
    inconclusive: str = setting("fail", choices=INCONCLUSIVE_POLICIES, doc=(
        "what an inconclusive verdict (the interval straddles the tolerance) does to the test (--inconclusive)"))
    confidence: float = setting(0.95, gt=0.5, lt=1, doc="the two-sided confidence level of every interval")
    paired_method: str = setting("tango", choices=PAIRED_METHODS, doc=(
        "the paired drop's interval: Tango's score interval or Newcombe's hybrid score (harness/judge/paired.py)"))
    agreement_min_top1: float = setting(ge=0, le=100, unit="%", doc=(
        "the share of images whose top-1 class equals the torch reference's (Wilson interval, three-way)"))
    batch_sizes: tuple[int, ...] = setting(ge=1, le=4096, doc=(
        "the batch sizes the accuracy tests compile and run (--batch-sizes overrides)"))

    @property
    def tolerance(self) -> AccuracyTolerance:
        """The tolerance as a rule (a model's own ``accuracy_tolerance`` wins over it)."""
        return AccuracyTolerance(rule=self.tolerance_rule, points=self.tolerance_points,
                                 fraction=self.tolerance_fraction)


@dataclass(frozen=True)
class AccuracyTolerance:
    """How far below a reference accuracy a compiled model may be (fixtures/policy.toml
    [accuracy], per model ``accuracy_tolerance`` in fixtures/models.toml).

    ``absolute``: at most ``points`` percentage points below (the mission's "within 1 point").
    ``relative``: at least ``fraction`` of the reference (MLPerf's ">= 99% of the FP32
    reference"), i.e. at most ``(1 - fraction) * reference`` points below.
    """

    rule: str = AccuracyPolicy.tolerance_rule  # the declared defaults of [accuracy]
    points: float = 1.0
    fraction: float = AccuracyPolicy.tolerance_fraction

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


@dataclass(frozen=True, kw_only=True)
class ConversionPolicy(Table):
    """[conversion]: torch vs ONNX Runtime on the exported graph, with seeded random weights."""

    rtol: float = setting(ge=0, le=1, unit="of the largest |logit|", doc=(
        "the largest |torch - onnx| logit difference on any image, relative to its largest |logit|"))
    min_cosine: float = setting(ge=-1, le=1, doc="the least cosine similarity of torch and ONNX logits on any image")
    calibration_images: int = setting(ge=0, le=100000, unit="images", doc=(
        "images that calibrate BatchNorm statistics of the random weights before comparing"))
    seed: int = setting(ge=0, le=2**31 - 1, doc="the seed of the random weights")


@dataclass(frozen=True, kw_only=True)
class ReferencePolicy(Table):
    """[reference]: when the torch reference may judge (docs/reference-check.md)."""

    subset_margin_points: float = setting(20.0, ge=0, le=100, unit="points", doc=(
        "on a subset, the published figure must lie within the reference's Wilson interval widened by this "
        "much on each side"))
    check_images: int = setting(32, ge=32, le=10**6, unit="images", doc=(
        "images of a reference not computed this session that torch recomputes before it judges"))
    check_rtol: float = setting(1e-3, ge=0, le=1, unit="of the largest |logit|", doc=(
        "the largest difference allowed there, relative to each image's largest |logit|"))
    fast_path: str = setting("traced-channels-last", choices=("traced-channels-last", "channels-last", "eager"),
                             doc=("how torch computes the reference on a CPU (harness.model.fast_eval); eager is its "
                                  "definition, the others must match it on a check batch or eager runs"))
    fast_check_images: int = setting(40, ge=1, le=10**4, unit="images", doc=(
        "the first images of the dataset run through the fast path and eager before the fast path may compute "
        "the reference"))
    fast_rtol: float = setting(1e-4, ge=0, le=1e-2, unit="of the largest |logit|", doc=(
        "the largest difference between the fast path and eager there, relative to each image's largest |logit|; "
        "beyond it, or a top-5 set that differs, eager computes the reference"))


@dataclass(frozen=True, kw_only=True)
class DataPolicy(Table):
    """[data]: how much memory decoding one image may take."""

    # 64 MB: below it a 4000x3000 photo could not be decoded at all; 64 GB: more than a machine has.
    decode_memory_mb: int = setting(512, ge=64, le=65536, unit="MB per worker", doc=(
        "the most one image may cost to decode, estimated from its header (harness/data/transforms.py)"))


@dataclass(frozen=True, kw_only=True)
class TimingPolicy(Table):
    """[perf]: how the one timing loop measures (harness/run/timing.py)."""

    warmup_runs: int = setting(3, ge=0, le=10000, unit="runs", doc="untimed runs before the steady state")
    min_runs: int = setting(10, ge=1, le=10**6, unit="runs", doc="the fewest timed runs")
    min_seconds: float = setting(1.0, ge=0, le=3600, unit="s", doc=(
        "the shortest steady state (it also lasts min_runs runs and times every batch of the ring once)"))
    max_seconds: float = setting(30.0, ge=0, le=86400, unit="s", doc=(
        "at least min_seconds; a whole card's measurement waits 2 x max_seconds + 60 s for its devices "
        "(harness/run/cards.py)"))
    ring_images: int = setting(128, ge=1, le=10**6, unit="images", doc=(
        "distinct real images cycled through the timed batches (fewer when the dataset is smaller)"))
    computed_rtol: float = setting(1e-4, ge=0, le=1, unit="of the largest |logit|", doc=(
        "perf-mode vs accuracy-mode outputs of one compiled model (MLPerf TEST01), relative to each image's "
        "largest |logit|"))
    card_min_overlap: float = setting(0.5, ge=0, le=1, unit="of the shortest steady state", doc=(
        "a whole card's devices must have been timed together this long, or there is no card figure "
        "(harness/run/cards.py)"))

    def conflicts(self) -> tuple[tuple[str, str, object], ...]:
        if self.max_seconds < self.min_seconds:
            return (("max_seconds", f"at least min_seconds ({self.min_seconds})", self.max_seconds),)
        return ()


@dataclass(frozen=True, kw_only=True)
class HistoryPolicy(Table):
    """[history]: when the report flags a run as worse than the previous one. Separate from the
    gates: a nightly drift of half a point is worth a look long before it fails the tolerance."""

    regression_top1_points: float = setting(0.5, ge=0, le=100, unit="points", doc=(
        "a top-1 drop beyond this, of one model on one chip, backend and precision, is a REGRESSION"))
    regression_throughput_percent: float = setting(5.0, ge=0, le=100, unit="%", doc=(
        "a drop of a chip's best images/s per card beyond this percent of the previous figure is a REGRESSION"))


@dataclass(frozen=True, kw_only=True)
class LocalizeThresholds(Table):
    """[localize]: when a tensor is over threshold, and how localisation runs (docs/localize.md).

    The metric thresholds are msit's documented defaults for ``debug compare`` (its analyser flags
    the first operator with CosineSimilarity < 0.99, RootMeanSquareError > 1.0 or MeanRelativeError
    > 1.0; github.com/Ascend/msit ``msit/components/debug/compare/README_EN.md``, "Comparison Result
    Analysis", and ``msquickcmp/net_compare/analyser.py`` ``MONITOR_THRESHOLD``). msit has no
    threshold on the largest absolute or relative difference: ours default to infinity (reported,
    never judged). The other fields are this suite's own choices.
    """

    min_cosine: float = setting(0.99, ge=-1, le=1, doc="a tensor below this cosine is over (msit: < 0.99)")
    max_rmse: float = setting(1.0, ge=0, le=math.inf, doc="a tensor above this RMSE is over (msit: > 1.0)")
    max_mean_relative_error: float = setting(1.0, ge=0, le=math.inf, doc=(
        "a tensor above this mean relative error is over (msit: > 1.0)"))
    max_abs_diff: float = setting(math.inf, ge=0, le=math.inf, doc=(
        "a tensor above this largest absolute difference is over (msit has none: reported, not judged)"))
    max_relative_diff: float = setting(math.inf, ge=0, le=math.inf, doc=(
        "a tensor above this largest relative difference is over (msit has none: reported, not judged)"))
    images: int = setting(16, ge=1, le=4096, unit="images", doc="the most divergent images the layers are compared on")
    exposure_tolerance: float = setting(0.2, ge=0, le=math.inf, unit="of the final error", doc=(
        "exposing every tensor may move the candidate's final error (relative L2) by this much, or bisect instead"))
    growth_factor: float = setting(2.0, ge=1, le=math.inf, doc=(
        "accumulated: a later tensor this many times further from the reference (1 - cosine) than the first "
        "divergent one; local otherwise"))

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


@dataclass(frozen=True, kw_only=True)
class Int8Policy(Table):
    """[int8]: post-training INT8 quantization (--precision int8; docs/int8.md)."""

    calibration_images: int = setting(300, ge=1, le=100000, unit="images", doc=(
        "images that calibrate the quantizer, split off the given data when no --calibration DIR is given; "
        "never scored"))
    scheme: str = setting("qdq-per-channel", choices=("qdq-per-channel", "qdq-per-tensor"), doc=(
        "ONNX Runtime: one weight scale per output channel (what depthwise convolutions need) or per tensor"))
    activation_type: str = setting("uint8", choices=("uint8", "int8"), doc="ONNX Runtime: the activations' type")
    weight_type: str = setting("int8", choices=("uint8", "int8"), doc="ONNX Runtime: the weights' type")
    logits: str = setting("float", choices=("float", "quantized"), doc=(
        "float: the layer writing the logits is kept in float (quantized logits tie the top-1 of ~1% of images)"))
    nncf_preset: str = setting("performance", choices=("performance", "mixed"), doc=(
        "OpenVINO: NNCF's quantization preset"))
    tensorrt_calibration: str = setting("percentile", choices=("entropy", "percentile", "minmax"), doc=(
        "TensorRT (T4): how the activation ranges of the calibration table are chosen (docs/int8.md)"))
    agreement_min_top1: float = setting(96.0, ge=0, le=100, unit="%", doc=(
        "an int8 model's least top-1 agreement with the torch reference (replaces [accuracy]'s for int8)"))
    keep_float_max: int = setting(32, ge=1, le=1000, unit="layers", doc=(
        "the way back to float: the most layers the search keeps in float before it gives up"))
    keep_float_images: int = setting(200, ge=1, le=100000, unit="images", doc=(
        "the way back to float: each candidate layer is tried on this many of the scored images, those "
        "the failing quantization moves most"))
    amct_fake_quant_min_top1: float = setting(90.0, ge=0, le=100, unit="%", doc=(
        "Ascend: AMCT's fake-quant ONNX on ONNX Runtime must agree with the float ONNX's top-1 on at least this "
        "share of the calibration images, or the quantization is refused before ATC compiles it"))


@dataclass(frozen=True)
class Policy:
    """fixtures/policy.toml, validated: one field per table of the file."""

    accuracy: AccuracyPolicy
    conversion: ConversionPolicy
    perf: TimingPolicy = TimingPolicy()
    history: HistoryPolicy = HistoryPolicy()
    localize: LocalizeThresholds = LocalizeThresholds()
    reference: ReferencePolicy = ReferencePolicy()
    data: DataPolicy = DataPolicy()
    int8: Int8Policy = Int8Policy()

    def for_precision(self, precision: str) -> Policy:
        """The policy a model compiled at ``precision`` is judged by: an int8 model's agreement minimum
        is [int8]'s (quantization moves ~2% of top-1 classes on models that keep their accuracy)."""
        if precision != "int8":
            return self
        return replace(self, accuracy=replace(self.accuracy, agreement_min_top1=self.int8.agreement_min_top1))
