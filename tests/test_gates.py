"""The gates moved into harness.judge.gates: the computed-check (each clause alone), the one
best-batch rule and the ratio gate, at, just above and just below their thresholds."""

from __future__ import annotations

import pytest

from harness.judge.baselines import BaselineError, Figure
from harness.judge.gates import best_batch, computed_check, ratio_gate
from harness.judge.metrics import Parity
from harness.specs import ChipSpec, PerfRule, TimingPolicy

POLICY = TimingPolicy(computed_rtol=1e-4)


def parity(agreement: float, rel: float) -> Parity:
    return Parity(count=128, max_abs_diff=rel, mean_abs_diff=rel / 2, min_cosine=1.0, top1_agreement=agreement,
                  max_rel_diff=rel)


@pytest.mark.parametrize(("agreement", "rel", "passed"), [
    (100.0, 0.0, True),
    (100.0, 1e-4, True),           # exactly at the tolerance
    (100.0, 1.0001e-4, False),     # just above it, every class still equal: the relative clause alone decides
    (100.0, 1e-3, False),
    (127 / 128 * 100, 0.0, False),  # one class flipped, logits otherwise equal: the agreement clause alone
])
def test_computed_check_decides_on_each_clause_alone(agreement: float, rel: float, passed: bool) -> None:
    gate = computed_check(parity(agreement, rel), POLICY, batch_size=8, ring=128)
    assert gate.passed is passed
    assert "bs8" in gate.detail and "128 images" in gate.detail and "allowed 0.0001" in gate.detail


def figure(chip: str, bs: int, ips: float, clock: str = "wall", unit: str = "per_chip") -> Figure:
    return Figure(chip=chip, model="m", batch_size=bs, images_per_s=ips, unit=unit, clock=clock, source="test")


def test_best_batch_takes_the_highest_rate_and_on_a_tie_the_smaller_batch() -> None:
    figures = [figure("A", 1, 100.0), figure("A", 16, 300.0), figure("A", 8, 300.0), figure("A", 32, 250.0)]
    chosen = best_batch(figures)
    assert chosen is not None and chosen.batch_size == 8
    assert best_batch([]) is None


CHIP = ChipSpec(name="A", backend="onnxruntime", devices_per_card=1)
BASE = ChipSpec(name="B", backend="onnxruntime", devices_per_card=4)


@pytest.mark.parametrize(("measured", "passed"), [(480.0, True), (480.01, True), (479.99, False)])
def test_ratio_gate_passes_exactly_at_the_threshold(measured: float, passed: bool) -> None:
    # the baseline is per chip on a 4-chip card: 100 images/s per chip = 400 per card; 480 / 400 = 1.2
    rule = PerfRule(baseline="B", min_ratio=1.2)
    check = ratio_gate(rule, [figure("A", 4, measured)], CHIP, [figure("B", 8, 100.0)], BASE)
    assert check.passed is passed
    assert check.baseline_per_card == 400.0
    assert check.line().startswith("PASS" if passed else "FAIL")


def test_ratio_gate_refuses_to_mix_clocks() -> None:
    rule = PerfRule(baseline="B", min_ratio=1.2)
    with pytest.raises(BaselineError, match="mix clocks"):
        ratio_gate(rule, [figure("A", 4, 500.0, clock="device_compute")], CHIP, [figure("B", 8, 100.0)], BASE)
