"""Every certification gate and verdict rule: each compares measured figures with a threshold
taken from fixtures/ (policy.toml, models.toml, chips.toml).

Accuracy (top-1/top-5 against the published figures), agreement with the framework reference,
conversion parity, the throughput-ratio rules of a chip, the computed-check of a timing run
(MLPerf TEST01: the timed outputs equal the accuracy-mode outputs) and the one best-batch rule
live here and nowhere else; records store their outcome, the report shows what was recorded.
Every threshold is inclusive: a figure exactly at the threshold passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, TypeVar

from harness.judge.baselines import BaselineError, Figure
from harness.judge.metrics import Accuracy, Parity
from harness.specs import AccuracyRef, ChipSpec, PerfRule, Policy, TimingPolicy


@dataclass(frozen=True)
class Gate:
    """One pass/fail check with everything needed to explain it."""

    name: str
    measured: float
    threshold: float
    passed: bool
    detail: str

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
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
                passed=got >= floor,
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
        passed=agreement.top1_agreement >= need,
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


def failures(gates: list[Gate]) -> str:
    """A multi-line message listing every gate, failed ones first; empty when all passed."""
    if all(g.passed for g in gates):
        return ""
    ordered = sorted(gates, key=lambda g: g.passed)
    return "\n".join(g.line() for g in ordered)


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
            f"{mark} ratio_vs_{self.rule.baseline}: {m.chip} best {self.measured_per_card:.4f} images/s per card "
            f"(bs{m.batch_size}, {m.clock}; {m.source}) / {b.chip} best {self.baseline_per_card:.4f} images/s "
            f"per card (bs{b.batch_size}, {b.clock}; {b.source}{', ' + b.note if b.note else ''}) = "
            f"{self.ratio:.4f}, need >= {self.rule.min_ratio:g}"
        )


def ratio_gate(rule: PerfRule, measured: Sequence[Figure], chip: ChipSpec, baseline: Sequence[Figure],
               baseline_chip: ChipSpec) -> RatioCheck:
    """Evaluate ``rule`` on the best batch of each side, per card, refusing to mix clocks."""
    m_best, b_best = best_batch(measured), best_batch(baseline)
    if m_best is None or b_best is None:
        raise BaselineError("a ratio rule needs figures on both sides")
    clocks = {f.clock for f in (*measured, *baseline)}
    if len(clocks) > 1:
        raise BaselineError(
            f"cannot compare {m_best.model} on {chip.name} with {baseline_chip.name}: the figures mix clocks "
            f"({', '.join(sorted(clocks))}); a device-compute figure and a wall-time figure measure different "
            "things. Measure the chip under test with the baseline's clock, or supply a baseline of the same clock"
        )
    m_card, b_card = m_best.per_card(chip), b_best.per_card(baseline_chip)
    ratio = m_card / b_card
    return RatioCheck(rule=rule, measured=m_best, measured_per_card=m_card, baseline=b_best,
                      baseline_per_card=b_card, ratio=ratio, passed=ratio >= rule.min_ratio)
