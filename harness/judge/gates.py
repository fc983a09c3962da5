"""Certification gates: each compares one measured figure with a threshold taken from fixtures/."""

from __future__ import annotations

from dataclasses import dataclass

from harness.judge.metrics import Accuracy, Parity
from harness.specs import AccuracyRef, Policy


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
