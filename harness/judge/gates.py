"""The certification gates and verdict rules: each compares measured figures with a threshold taken from fixtures/.

Accuracy (paired against the framework reference, and against the published figures), agreement
with the reference, conversion parity and the computed-check of a timing run (MLPerf TEST01: the
timed outputs equal the accuracy-mode outputs) live here; the throughput rules (the best batch,
the ratio rules of a chip) in :mod:`harness.judge.ratios`, the reference's own gate in
:mod:`harness.judge.reference_check`, the gate of predictions without a reference in
:mod:`harness.judge.unpaired`. Records store their outcome, the report shows what was recorded.
Every threshold is inclusive: a figure exactly at the threshold passes.

The three-way gates (paired accuracy against the framework reference, published accuracy on the
full validation set only, agreement) decide from intervals (:mod:`harness.judge.paired`) and carry
a ``verdict`` beyond ``passed``: pass, fail, inconclusive or "not applicable: why".
:func:`verdict_fields` gives a record their field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.data.coverage import Coverage
from harness.errors import NotCertified
from harness.judge.baselines import BaselineError
from harness.judge.headline import FAIL, INCONCLUSIVE, compose, needed_text
from harness.judge.metrics import Accuracy, Parity, topk_predictions, wilson_interval
from harness.judge.paired import (
    PairedVerdict,
    UnpairedVerdict,
    agreement_verdict,
    as_method,
    discordance,
    paired_verdict,
    z_value,
)
from harness.specs import AccuracyRef, ModelSpec, Policy, TimingPolicy
from harness.specs.policy import AccuracyTolerance

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
    under their record names (``paired_drop_top1``, ``discordant_ref_only``...). ``summary``: the
    deciding figures in a few words for a message's first line (:func:`gate_headline`; empty: the
    measured figure, its interval when ``values`` has one, and the threshold).
    """

    name: str
    measured: float
    threshold: float
    passed: bool
    detail: str
    verdict: str = ""
    images_needed: int | None = None
    values: Mapping[str, object] = field(default_factory=dict, hash=False)
    summary: str = ""

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

    def figures(self) -> str:
        """:attr:`summary`, or the measured figure [its interval] against the threshold."""
        if self.summary:
            return self.summary
        interval = ""
        for key, low in self.values.items():
            high = self.values.get(key.removesuffix("_low95") + "_high95")
            if key.endswith("_low95") and isinstance(low, (int, float)) and isinstance(high, (int, float)):
                interval = f" [{low:.4g}, {high:.4g}]"
                break
        return f"{self.measured:.4g}{interval} vs {self.threshold:.4g}"


def _op(verdict: str, good: str, bad: str) -> str:
    """The comparison a summary shows: ``good`` when the gate passed, ``bad`` when it failed, ``vs`` else."""
    return {"pass": good, "fail": bad}.get(verdict, "vs")


def agreement_gate(agreement: Parity, policy: Policy, reference: str) -> Gate:
    """The compiled model's top-1 class must match the reference's on enough images."""
    need = policy.accuracy.agreement_min_top1
    passed = agreement.top1_agreement >= need - SLACK
    return Gate(
        name="top1_agreement",
        measured=agreement.top1_agreement,
        threshold=need,
        passed=passed,
        summary=(f"top-1 equals {reference}'s on {agreement.top1_agreement:.2f}% "
                 f"{'>=' if passed else '<'} {need:g}%, {agreement.count:,} images"),
        detail=(
            f"top-1 equals the {reference} reference on {agreement.top1_agreement:.2f}% of "
            f"{agreement.count} images (need >= {need}%); max |logit diff| {agreement.max_abs_diff:.3g}"
        ),
    )


def conversion_gates(p: Parity, policy: Policy) -> list[Gate]:
    """torch vs exported ONNX on the same inputs, seeded random weights."""
    rtol, cosine = policy.conversion.rtol, policy.conversion.min_cosine
    rel_ok, cos_ok, agree_ok = p.max_rel_diff <= rtol, p.min_cosine >= cosine, p.top1_agreement >= 100.0
    return [
        Gate("max_rel_diff", p.max_rel_diff, rtol, rel_ok,
             f"max |torch - onnx| / max |torch logit| per image = {p.max_rel_diff:.3g} "
             f"(allowed {rtol:g}; max |torch - onnx| = {p.max_abs_diff:.3g})",
             summary=f"torch vs onnx {p.max_rel_diff:.3g} {'<=' if rel_ok else '>'} {rtol:g}"),
        Gate("min_cosine", p.min_cosine, cosine, cos_ok,
             f"min cosine = {p.min_cosine:.10f} (need >= {cosine})",
             summary=f"{p.min_cosine:.10f} {'>=' if cos_ok else '<'} {cosine}"),
        Gate("top1_agreement", p.top1_agreement, 100.0, agree_ok,
             f"top-1 agreement {p.top1_agreement:.2f}% on {p.count} images (need 100%)",
             summary=f"torch vs onnx {p.top1_agreement:.2f}% {'=' if agree_ok else '<'} 100%"),
    ]


def certify(gates: Sequence[Gate], what: str, scope: str = "") -> None:
    """Raise :class:`~harness.errors.NotCertified` (a failure without traceback) unless all passed:
    first :func:`gate_headline` (``scope``: the images judged, e.g. ``1,300 images (subset)``),
    then ``what`` is not certified, then every gate, failed ones first."""
    gates = list(gates)
    problems = failures(gates)
    if problems:
        raise NotCertified(compose(gate_headline(gates, scope),
                                   f"{what} is not certified (verdict: {overall_verdict(gates)}):\n{problems}"))


def gate_headline(gates: Sequence[Gate], scope: str = "") -> str:
    """The first line of a verdict's message (harness.judge.headline): ``FAIL`` or ``INCONCLUSIVE``,
    the deciding gate (the first failed one, else the first inconclusive one that did not pass) with
    its figures, ``scope``, the images that would decide an inconclusive verdict, and how many other
    gates did not pass. "" when every gate passed."""
    failing = [g for g in gates if not g.passed]
    if not failing:
        return ""
    failing.sort(key=lambda g: g.verdict != "fail")
    first = failing[0]
    word = INCONCLUSIVE if first.verdict == "inconclusive" else FAIL
    parts = [f"{word} {first.name}: {first.figures()}" + (f", {scope}" if scope else "")]
    if word == INCONCLUSIVE and any(k.startswith("images_needed") for k in first.values):  # a gate sized by images
        parts.append(needed_text(first.images_needed))
    if len(failing) > 1:
        parts.append(f"+{len(failing) - 1} more gate(s) not passed: {', '.join(g.name for g in failing[1:])}")
    return "; ".join(parts)


def failures(gates: list[Gate]) -> str:
    """A multi-line message listing every gate, failed ones first; empty when all passed."""
    if all(g.passed for g in gates):
        return ""
    ordered = sorted(gates, key=lambda g: g.passed)
    return "\n".join(g.line() for g in ordered)


# --------------------------------------------------------------------------------------------
# Three-way verdicts: paired drop, published figure on full val only, agreement

_METHOD_NAMES = {"tango": "Tango score", "newcombe": "Newcombe hybrid score"}


def tolerance_for(policy: Policy, model: ModelSpec | None = None) -> AccuracyTolerance:
    """The model's own ``accuracy_tolerance`` (models.toml) or else the policy's ([accuracy])."""
    if model is not None and model.accuracy_tolerance is not None:
        return model.accuracy_tolerance
    return policy.accuracy.tolerance


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
    """Per-image correctness ``{"top1": bool (N,), "top5": ...}``: the paired gates' inputs."""
    top = topk_predictions(logits, max(ks))
    hit = top == np.asarray(labels)[:, None]
    return {f"top{k}": hit[:, :k].any(axis=1) for k in ks}


def passes_by_policy(verdict: str, policy: Policy) -> bool:
    return verdict == "pass" or (verdict == "inconclusive" and policy.accuracy.inconclusive == "allow")


def undecided_text(needed: int | None, images: int, policy: Policy) -> str:
    """The inconclusive part of a message: how many images would decide, and what happens now."""
    if needed is None:
        more = "no feasible number of images would decide: the observed figure sits on the threshold"
    else:
        more = f"about {needed:,} images would decide at the observed rates (this run had {images:,})"
    rule = ("the policy allows it (fixtures/policy.toml [accuracy] inconclusive = \"allow\")"
            if policy.accuracy.inconclusive == "allow" else
            "inconclusive fails by default (fixtures/policy.toml [accuracy] inconclusive = \"fail\"): "
            "run on more images, e.g. the full validation set")
    return f"inconclusive, the interval straddles the threshold: {more}; {rule}"


_DROP_OUTCOMES = {"pass": "pass, the whole interval is below the tolerance",
                  "fail": "fail, the whole interval is above the tolerance"}


def drop_gate(name: str, metric: str, v: PairedVerdict | UnpairedVerdict, values: Mapping[str, object], images: int,
              policy: Policy, detail: str) -> Gate:
    """A three-way gate on an accuracy drop (the paired gate, :func:`harness.judge.unpaired.unpaired_gates`):
    ``v``'s interval against its tolerance, ``passed`` by the policy's rule for inconclusive, ``values``
    plus ``images_needed_<metric>`` when inconclusive, and ``detail`` followed by the outcome."""
    values = dict(values)
    if v.verdict == "inconclusive":
        values[f"images_needed_{metric}"] = v.images_needed
    outcome = _DROP_OUTCOMES.get(v.verdict) or undecided_text(v.images_needed, images, policy)
    summary = (f"drop {v.drop:.2f} [{v.low:.2f}, {v.high:.2f}] {_op(v.verdict, '<=', '>')} "
               f"{v.tolerance_points:.2f} points")
    return Gate(name=name, measured=v.drop, threshold=v.tolerance_points, passed=passes_by_policy(v.verdict, policy),
                verdict=v.verdict, images_needed=v.images_needed, values=values, detail=f"{detail}: {outcome}",
                summary=summary)


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
    confidence, method = policy.accuracy.confidence, as_method(policy.accuracy.paired_method)
    gates = []
    for metric, ref in reference_correct.items():
        table = discordance(ref, candidate_correct[metric])
        allowed = tolerance.points_for(table.reference_accuracy)
        v = paired_verdict(table, allowed, confidence, method)
        suffix = "" if metric == "top1" else f"_{metric}"
        values: dict[str, object] = {
            f"paired_drop_{metric}": v.drop, f"paired_drop_{metric}_low95": v.low,
            f"paired_drop_{metric}_high95": v.high, f"tolerance_{metric}_points": allowed,
            f"discordant_ref_only{suffix}": table.reference_only,
            f"discordant_compiled_only{suffix}": table.candidate_only, "images": table.n,
        }
        gates.append(drop_gate(
            f"paired_{metric}", metric, v, values, table.n, policy,
            detail=(f"{metric} drop {v.drop:.3f} points vs the {reference} reference ({table.reference_accuracy:.3f}% "
                    f"-> {table.candidate_accuracy:.3f}% on the same {table.n:,} images; {table.reference_only} "
                    f"only the reference got right, {table.candidate_only} only {candidate}), "
                    f"{confidence:.0%} interval [{v.low:.3f}, {v.high:.3f}] ({_METHOD_NAMES[method]}), "
                    f"tolerance {allowed:.3f} points ({tolerance.describe()})"),
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
                    summary=f"{got:.3f}% beside published {ref:.3f}%, decided on the full validation set only",
                    values={f"{metric}_low95": low, f"{metric}_high95": high},
                    detail=(f"measured {got:.3f}% ({coverage.not_applicable}); {confidence:.0%} Wilson interval "
                            f"[{low:.3f}, {high:.3f}]% beside {versus} on all {coverage.total:,}: for "
                            f"information only, the published figure decides only on the full validation set"))
    passed = got >= floor - SLACK
    return Gate(name=name, measured=got, threshold=floor, passed=passed,
                summary=f"{got:.3f}% {'>=' if passed else '<'} {floor:.3f}% (published {ref:.3f}%)",
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
    need = policy.accuracy.agreement_min_top1
    agree = round(agreement.top1_agreement * agreement.count / 100.0)
    v = agreement_verdict(agree, agreement.count, need, policy.accuracy.confidence)
    outcome = {"pass": "pass, the whole interval reaches the minimum",
               "fail": "fail, the whole interval is below the minimum"}.get(v.verdict) \
        or undecided_text(v.images_needed, agreement.count, policy)
    values: dict[str, object] = {"agreement_top1": v.agreement, "agreement_top1_low95": v.low,
                                 "agreement_top1_high95": v.high}
    if v.verdict == "inconclusive":
        values["images_needed_agreement"] = v.images_needed
    return Gate(name="top1_agreement", measured=v.agreement, threshold=need, passed=passes_by_policy(v.verdict, policy),
                verdict=v.verdict, images_needed=v.images_needed, values=values,
                summary=f"{v.agreement:.2f}% [{v.low:.2f}, {v.high:.2f}] {_op(v.verdict, '>=', '<')} {need:g}%",
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
    """The record fields of these gates: every gate's ``values`` plus ``verdict``,
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
        summary=(f"bs{batch_size} timed vs accuracy-mode outputs: top-1 {computed.top1_agreement:.2f}% (need 100%), "
                 f"max rel diff {computed.max_rel_diff:.3g} {'<=' if close else '>'} {policy.computed_rtol:g}"),
        detail=(
            f"bs{batch_size}: the timed runs' outputs vs the accuracy-mode outputs on the same {ring} images: "
            f"top-1 agreement {computed.top1_agreement:.2f}% (need 100%), max relative diff "
            f"{computed.max_rel_diff:.3g} (allowed {policy.computed_rtol:g})"
        ),
    )
