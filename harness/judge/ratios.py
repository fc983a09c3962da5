"""The throughput rules: the one best-batch rule and a chip's ratio rules against a baseline chip.

A ratio compares the best batch of each side, per card, and only figures of the same scenario and
clock (fixtures/chips.toml ``rules``, the figure files of :mod:`harness.judge.baselines`). Every
threshold is inclusive: a ratio exactly at the rule's minimum passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from harness.judge.baselines import BaselineError, Figure
from harness.specs import ChipSpec, PerfRule


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
