"""Every certification gate and verdict rule: each compares measured figures with a threshold taken from fixtures/.

Accuracy (top-1/top-5 against the published figures), agreement with the framework reference,
conversion parity, the throughput-ratio rules of a chip, the computed-check of a timing run
(MLPerf TEST01: the timed outputs equal the accuracy-mode outputs) and the one best-batch rule
live here and nowhere else; records store their outcome, the report shows what was recorded.
Every threshold is inclusive: a figure exactly at the threshold passes.

The three-way gates of issue 14 (paired accuracy against the framework reference, published
accuracy on the full validation set only, agreement) decide from intervals
(:mod:`harness.judge.paired`) and carry a ``verdict`` beyond ``passed``: pass, fail, inconclusive
or "not applicable: why". :func:`verdict_fields` gives a record their issue-14 names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from harness.data.coverage import Coverage
from harness.errors import NotCertified
from harness.judge.baselines import BaselineError, Figure
from harness.judge.metrics import Accuracy, Parity, topk_predictions, wilson_interval
from harness.judge.paired import agreement_verdict, discordance, paired_verdict, z_value
from harness.specs import (
    AccuracyRef,
    ChipSpec,
    ModelSpec,
    PerfRule,
    Policy,
    TimingPolicy,
)
from harness.specs.policy import AccuracyTolerance

VERDICTS = ("pass", "fail", "inconclusive")
# Percentages compared with a threshold get this slack, far below one image in 10**9: a count
# exactly at the threshold is not always exactly equal in floating point (31,502 of 50,000 is
# 63.004, published 64.004 - 1 is 63.004000000000005; 0.99 * 80 is not 80 - 0.8).
SLACK = 1e-9
NOT_APPLICABLE = "not applicable"  # a verdict "not applicable: <why>" decides nothing


@dataclass(frozen=True)
class Gate:
    """One check with everything needed to explain it.

    ``passed``: whether the test may pass on it. ``verdict``: what it decided: ``pass``,
    ``fail``, ``inconclusive`` (the interval straddles the threshold; ``passed`` then follows
    the policy's ``inconclusive``) or ``not applicable: <why>`` (decides nothing; ``passed`` is
    True); left empty it is ``pass`` / ``fail`` from ``passed``. ``images_needed``: for
    inconclusive, the estimated images that would decide. ``values``: the figures to record,
    under the issue-14 record names (``paired_drop_top1``, ``discordant_ref_only``...).
    """

    name: str
    measured: float
    threshold: float
    passed: bool
    detail: str
    verdict: str = ""
    images_needed: int | None = None
    values: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", "pass" if self.passed else "fail")

    @property
    def decided(self) -> bool:
        """False for a ``not applicable`` gate: it informs, it does not decide."""
        return not self.verdict.startswith(NOT_APPLICABLE)

    def line(self) -> str:
        mark = self.verdict.split(":")[0].upper()
        if self.verdict == "inconclusive" and self.passed:
            mark += " (allowed by policy)"
        return f"{mark} {self.name}: {self.detail}"


def accuracy_gates(measured: Accuracy, published: AccuracyRef, policy: Policy) -> list[Gate]:
    """top-1 (and top-5 where published) may drop at most the policy's tolerance below published."""
    tol = policy.accuracy_tolerance_points
    gates = []
    for which, got, ref in (("top1", measured.top1, published.top1), ("top5", measured.top5, published.top5)):
        if ref is None:
            continue
        floor = ref - tol
        gates.append(
            Gate(
                name=which,
                measured=got,
                threshold=floor,
                passed=got >= floor - SLACK,
                detail=(
                    f"measured {got:.3f}% vs published {ref:.3f}% ({published.source}); "
                    f"delta {got - ref:+.3f} points, allowed down to {floor:.3f}% (tolerance {tol} points) "
                    f"on {measured.count} images"
                ),
            )
        )
    return gates


def agreement_gate(agreement: Parity, policy: Policy, reference: str) -> Gate:
    """The compiled model's top-1 class must match the reference's on enough images."""
    need = policy.agreement_min_top1
    return Gate(
        name="top1_agreement",
        measured=agreement.top1_agreement,
        threshold=need,
        passed=agreement.top1_agreement >= need - SLACK,
        detail=(
            f"top-1 equals the {reference} reference on {agreement.top1_agreement:.2f}% of "
            f"{agreement.count} images (need >= {need}%); max |logit diff| {agreement.max_abs_diff:.3g}"
        ),
    )


def conversion_gates(p: Parity, policy: Policy) -> list[Gate]:
    """torch vs exported ONNX on the same inputs, seeded random weights."""
    return [
        Gate("max_rel_diff", p.max_rel_diff, policy.conversion_rtol, p.max_rel_diff <= policy.conversion_rtol,
             f"max |torch - onnx| / max |torch logit| per image = {p.max_rel_diff:.3g} "
             f"(allowed {policy.conversion_rtol:g}; max |torch - onnx| = {p.max_abs_diff:.3g})"),
        Gate("min_cosine", p.min_cosine, policy.conversion_min_cosine, p.min_cosine >= policy.conversion_min_cosine,
             f"min cosine = {p.min_cosine:.10f} (need >= {policy.conversion_min_cosine})"),
        Gate("top1_agreement", p.top1_agreement, 100.0, p.top1_agreement >= 100.0,
             f"top-1 agreement {p.top1_agreement:.2f}% on {p.count} images (need 100%)"),
    ]


def certify(gates: Sequence[Gate], what: str) -> None:
    """Raise :class:`~harness.errors.NotCertified` (a failure without traceback) listing every
    gate, failed ones first, unless all passed."""
    gates = list(gates)
    problems = failures(gates)
    if problems:
        raise NotCertified(f"{what} is not certified (verdict: {overall_verdict(gates)}):\n{problems}")


def failures(gates: list[Gate]) -> str:
    """A multi-line message listing every gate, failed ones first; empty when all passed."""
    if all(g.passed for g in gates):
        return ""
    ordered = sorted(gates, key=lambda g: g.passed)
    return "\n".join(g.line() for g in ordered)


# --------------------------------------------------------------------------------------------
# Three-way verdicts (issue 14): paired drop, published figure on full val only, agreement

_METHOD_NAMES = {"tango": "Tango score", "newcombe": "Newcombe hybrid score"}


def tolerance_for(policy: Policy, model: ModelSpec | None = None) -> AccuracyTolerance:
    """The model's own ``accuracy_tolerance`` (models.toml) or else the policy's; the policy's
    points are ``accuracy_tolerance_points`` (one number, whichever object is asked)."""
    if model is not None and model.accuracy_tolerance is not None:
        return model.accuracy_tolerance
    return replace(policy.accuracy_tolerance, points=policy.accuracy_tolerance_points)


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
    """Per-image correctness ``{"top1": bool (N,), "top5": ...}``: the paired gates' inputs."""
    top = topk_predictions(logits, max(ks))
    hit = top == np.asarray(labels)[:, None]
    return {f"top{k}": hit[:, :k].any(axis=1) for k in ks}


def passes_by_policy(verdict: str, policy: Policy) -> bool:
    return verdict == "pass" or (verdict == "inconclusive" and policy.verdicts.inconclusive == "allow")


def undecided_text(needed: int | None, images: int, policy: Policy) -> str:
    """The inconclusive part of a message: how many images would decide, and what happens now."""
    if needed is None:
        more = "no feasible number of images would decide: the observed figure sits on the threshold"
    else:
        more = f"about {needed:,} images would decide at the observed rates (this run had {images:,})"
    rule = ("the policy allows it (fixtures/policy.toml [accuracy] inconclusive = \"allow\")"
            if policy.verdicts.inconclusive == "allow" else
            "inconclusive fails by default (fixtures/policy.toml [accuracy] inconclusive = \"fail\"): "
            "run on more images, e.g. the full validation set")
    return f"inconclusive, the interval straddles the threshold: {more}; {rule}"


def paired_accuracy_gates(reference_correct: Mapping[str, Sequence[bool] | np.ndarray],
                          candidate_correct: Mapping[str, Sequence[bool] | np.ndarray], policy: Policy,
                          tolerance: AccuracyTolerance | None = None, reference: str = "torch",
                          candidate: str = "the compiled model") -> list[Gate]:
    """The paired gate per metric (``paired_top1``, ``paired_top5``): compiled vs reference on the
    same images, in the order of ``reference_correct`` (per-image correctness, e.g. from
    :func:`topk_correct`). Drop = reference - compiled in points, with the policy's interval
    (:func:`harness.judge.paired.paired_verdict`); the tolerance is ``tolerance`` (default: the
    policy's), the relative rule's taken of the reference's measured accuracy."""
    tolerance = tolerance or tolerance_for(policy)
    confidence, method = policy.verdicts.confidence, policy.verdicts.paired_method
    gates = []
    for metric, ref in reference_correct.items():
        table = discordance(ref, candidate_correct[metric])
        allowed = tolerance.points_for(table.reference_accuracy)
        v = paired_verdict(table, allowed, confidence, method)  # type: ignore[arg-type]
        suffix = "" if metric == "top1" else f"_{metric}"
        values: dict[str, object] = {
            f"paired_drop_{metric}": v.drop, f"paired_drop_{metric}_low95": v.low,
            f"paired_drop_{metric}_high95": v.high, f"tolerance_{metric}_points": allowed,
            f"discordant_ref_only{suffix}": table.reference_only,
            f"discordant_compiled_only{suffix}": table.candidate_only, "images": table.n,
        }
        if v.verdict == "inconclusive":
            values[f"images_needed_{metric}"] = v.images_needed
        outcome = {"pass": "pass, the whole interval is below the tolerance",
                   "fail": "fail, the whole interval is above the tolerance"}.get(v.verdict) \
            or undecided_text(v.images_needed, table.n, policy)
        gates.append(Gate(
            name=f"paired_{metric}", measured=v.drop, threshold=allowed, passed=passes_by_policy(v.verdict, policy),
            verdict=v.verdict, images_needed=v.images_needed, values=values,
            detail=(f"{metric} drop {v.drop:.3f} points vs the {reference} reference ({table.reference_accuracy:.3f}% "
                    f"-> {table.candidate_accuracy:.3f}% on the same {table.n:,} images; {table.reference_only} "
                    f"only the reference got right, {table.candidate_only} only {candidate}), "
                    f"{confidence:.0%} interval [{v.low:.3f}, {v.high:.3f}] ({_METHOD_NAMES[method]}), "
                    f"tolerance {allowed:.3f} points ({tolerance.describe()}): {outcome}"),
        ))
    return gates


def published_gate(measured: Accuracy, published: AccuracyRef, coverage: Coverage, tolerance: AccuracyTolerance,
                   metric: str = "top1", confidence: float = 0.95) -> Gate:
    """The compiled model against the published figure (``published_top1`` / ``_top5``).

    Decides only on the full validation set (``coverage.full``), where the published figure was
    measured: pass when measured >= published - tolerance (there is no sampling error left to
    allow for: it is the same 50,000 images). On anything else the verdict is
    ``not applicable: subset of N images`` (``passed`` True), and the detail shows the subset's
    Wilson interval beside the published figure, for information.
    """
    got, ref = (measured.top1, published.top1) if metric == "top1" else (measured.top5, published.top5)
    correct = measured.correct1 if metric == "top1" else measured.correct5
    if ref is None:
        raise BaselineError(f"no published {metric} in {published.source}: nothing to compare with")
    floor = ref - tolerance.points_for(ref)
    name, versus = f"published_{metric}", f"published {ref:.3f}% ({published.source})"
    if not coverage.full:
        low, high = wilson_interval(correct, measured.count, z_value(confidence))
        return Gate(name=name, measured=got, threshold=floor, passed=True,
                    verdict=f"{NOT_APPLICABLE}: {coverage.not_applicable}",
                    values={f"{metric}_low95": low, f"{metric}_high95": high},
                    detail=(f"measured {got:.3f}% ({coverage.not_applicable}); {confidence:.0%} Wilson interval "
                            f"[{low:.3f}, {high:.3f}]% beside {versus} on all {coverage.total:,}: for "
                            f"information only, the published figure decides only on the full validation set"))
    passed = got >= floor - SLACK
    return Gate(name=name, measured=got, threshold=floor, passed=passed,
                detail=(f"measured {got:.3f}% vs {versus} on the full validation set; delta {got - ref:+.3f} "
                        f"points, allowed down to {floor:.3f}% ({tolerance.describe()}): "
                        f"{'pass' if passed else 'fail'} ({coverage.recognised_by})"))


def published_gates(measured: Accuracy, published: AccuracyRef, coverage: Coverage, tolerance: AccuracyTolerance,
                    confidence: float = 0.95) -> list[Gate]:
    """:func:`published_gate` for top-1, and top-5 where a top-5 was published."""
    metrics = ("top1", "top5") if published.top5 is not None else ("top1",)
    return [published_gate(measured, published, coverage, tolerance, m, confidence) for m in metrics]


def agreement_verdict_gate(agreement: Parity, policy: Policy, reference: str) -> Gate:
    """:func:`agreement_gate` three-way (``top1_agreement``): pass when the Wilson lower bound
    reaches ``agreement_min_top1``, fail when the upper bound is below it, else inconclusive."""
    need = policy.agreement_min_top1
    agree = round(agreement.top1_agreement * agreement.count / 100.0)
    v = agreement_verdict(agree, agreement.count, need, policy.verdicts.confidence)
    outcome = {"pass": "pass, the whole interval reaches the minimum",
               "fail": "fail, the whole interval is below the minimum"}.get(v.verdict) \
        or undecided_text(v.images_needed, agreement.count, policy)
    values: dict[str, object] = {"agreement_top1": v.agreement, "agreement_top1_low95": v.low,
                                 "agreement_top1_high95": v.high}
    if v.verdict == "inconclusive":
        values["images_needed_agreement"] = v.images_needed
    return Gate(name="top1_agreement", measured=v.agreement, threshold=need, passed=passes_by_policy(v.verdict, policy),
                verdict=v.verdict, images_needed=v.images_needed, values=values,
                detail=(f"top-1 equals the {reference} reference on {agree:,} of {agreement.count:,} images "
                        f"({v.agreement:.2f}%, {v.confidence:.0%} Wilson interval [{v.low:.2f}, {v.high:.2f}]%; "
                        f"need >= {need}%): {outcome}; max |logit diff| {agreement.max_abs_diff:.3g}"))


def worst_verdict(verdicts: Sequence[str]) -> str:
    """fail if any is fail, else inconclusive if any is, else pass; ``not applicable: ...``
    verdicts decide nothing (``not applicable`` when none decided)."""
    decided = [v for v in verdicts if not v.startswith(NOT_APPLICABLE)]
    for verdict in ("fail", "inconclusive", "pass"):
        if verdict in decided:
            return verdict
    return NOT_APPLICABLE


def overall_verdict(gates: Sequence[Gate]) -> str:
    """The worst verdict of ``gates`` (:func:`worst_verdict`)."""
    return worst_verdict([g.verdict for g in gates])


def verdict_fields(gates: Sequence[Gate]) -> dict[str, object]:
    """The issue-14 record fields of these gates: every gate's ``values`` plus ``verdict``,
    ``published_gate`` (pass | fail | not applicable: ...; when a published gate is among them)
    and, only when the verdict is inconclusive, ``images_needed``: the largest estimate of the
    inconclusive gates (None when one of them would not decide at any feasible size);
    ``reference_gate`` likewise from the ``reference_*`` gates (harness.judge.reference_check). Each
    inconclusive gate's own estimate is ``images_needed_top1`` / ``_top5`` / ``_agreement``."""
    out: dict[str, object] = {}
    for g in gates:
        out.update(g.values)
    out["verdict"] = overall_verdict(gates)
    for family in ("published", "reference"):  # published_gate, reference_gate
        members = [g for g in gates if g.name.startswith(f"{family}_")]
        if members:
            out[f"{family}_gate"] = overall_verdict(members) if any(g.decided for g in members) else members[0].verdict
    if out["verdict"] == "inconclusive":
        needed = [g.images_needed for g in gates if g.verdict == "inconclusive"]
        out["images_needed"] = None if None in needed else max(n for n in needed if n is not None)
    return out


def computed_check(computed: Parity, policy: TimingPolicy, batch_size: int, ring: int) -> Gate:
    """The timed runs' outputs vs the accuracy-mode outputs on the same images: every top-1 class
    equal, and the largest relative logit difference within ``policy.computed_rtol``."""
    agree = computed.top1_agreement >= 100.0
    close = computed.max_rel_diff <= policy.computed_rtol
    return Gate(
        name="computed",
        measured=computed.max_rel_diff,
        threshold=policy.computed_rtol,
        passed=agree and close,
        detail=(
            f"bs{batch_size}: the timed runs' outputs vs the accuracy-mode outputs on the same {ring} images: "
            f"top-1 agreement {computed.top1_agreement:.2f}% (need 100%), max relative diff "
            f"{computed.max_rel_diff:.3g} (allowed {policy.computed_rtol:g})"
        ),
    )


# --------------------------------------------------------------------------------------------
# Throughput: the best batch and the ratio rules


class _Rated(Protocol):
    @property
    def batch_size(self) -> int: ...

    @property
    def images_per_s(self) -> float: ...


R = TypeVar("R", bound=_Rated)


def best_batch(items: Iterable[R]) -> R | None:
    """The highest-throughput item (a figure or a measurement); ties go to the smaller batch.
    None when there is nothing to choose from."""
    items = list(items)
    if not items:
        return None
    return max(items, key=lambda i: (i.images_per_s, -i.batch_size))


@dataclass(frozen=True)
class RatioCheck:
    """One rule evaluated: the chip under test's best vs the baseline chip's best, per card."""

    rule: PerfRule
    measured: Figure
    measured_per_card: float
    baseline: Figure
    baseline_per_card: float
    ratio: float  # exact; printed with 4 decimals (seed 000 truncates its ratios, seed 003 rounds)
    passed: bool

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        m, b = self.measured, self.baseline
        return (
            f"{mark} ratio_vs_{self.rule.baseline} ({m.scenario}, {m.clock}): {m.chip} best "
            f"{self.measured_per_card:.4f} images/s per card (bs{m.batch_size}; {m.source}) / {b.chip} best "
            f"{self.baseline_per_card:.4f} images/s per card (bs{b.batch_size}; {b.source}"
            f"{', ' + b.note if b.note else ''}) = {self.ratio:.4f}, need >= {self.rule.min_ratio:g}"
        )


def _kinds(figures: Iterable[Figure]) -> list[str]:
    return sorted({f"{f.scenario}, {f.clock}" for f in figures})


def ratio_gate(rule: PerfRule, measured: Sequence[Figure], chip: ChipSpec, baseline: Sequence[Figure],
               baseline_chip: ChipSpec) -> RatioCheck:
    """Evaluate ``rule`` on the best batch of each side, per card, comparing only figures of the
    same scenario and clock: the baseline figures of another kind are left out, and a baseline
    with none of the measured kind is refused, naming the kinds each side has."""
    if not measured or not baseline:
        raise BaselineError("a ratio rule needs figures on both sides")
    measured_kinds = _kinds(measured)
    if len(measured_kinds) > 1:
        raise BaselineError(
            f"the {chip.name} figures of {measured[0].model} mix scenarios or clocks ({'; '.join(measured_kinds)}); "
            "a ratio compares the best batch of one kind"
        )
    scenario, clock = measured[0].scenario, measured[0].clock
    same = [f for f in baseline if f.scenario == scenario and f.clock == clock]
    if not same:
        raise BaselineError(
            f"cannot compare {measured[0].model} on {chip.name} ({scenario}, {clock}) with {baseline_chip.name}: its "
            f"baseline figures are {'; '.join(_kinds(baseline))}. A device-compute figure and a wall-time figure, or "
            "a single-stream and an offline figure, measure different things. Measure the chip under test the "
            "baseline's way (--scenario), or supply a baseline of the same scenario and clock"
        )
    m_best, b_best = best_batch(measured), best_batch(same)
    assert m_best is not None and b_best is not None
    m_card, b_card = m_best.per_card(chip), b_best.per_card(baseline_chip)
    ratio = m_card / b_card
    return RatioCheck(rule=rule, measured=m_best, measured_per_card=m_card, baseline=b_best,
                      baseline_per_card=b_card, ratio=ratio, passed=ratio >= rule.min_ratio)
