"""The gates of harness.judge.gates at, just above and just below their thresholds: the
computed-check (each clause alone), the one best-batch rule, the ratio gate, and issue 14's
three-way gates (paired drop, published figure on full val only, agreement), whose boundaries are
realised by integer image counts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from harness.data.coverage import Coverage
from harness.judge.baselines import BaselineError, Figure
from harness.judge.gates import (
    Gate,
    agreement_gate,
    agreement_verdict_gate,
    best_batch,
    computed_check,
    failures,
    overall_verdict,
    paired_accuracy_gates,
    published_gate,
    published_gates,
    ratio_gate,
    topk_correct,
    verdict_fields,
)
from harness.judge.metrics import Accuracy, Parity
from harness.specs import (
    AccuracyRef,
    ChipSpec,
    PerfRule,
    Policy,
    TimingPolicy,
    load_policy,
)
from harness.specs.policy import AccuracyTolerance, VerdictPolicy

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


# --------------------------------------------------------------------------------------------
# Issue 14: three-way verdicts. Every boundary is realised by integer image counts.


def correctness(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of the reference and the candidate with the paired table (a, b, c, d):
    both right, only the reference right, only the candidate right, both wrong."""
    ref = np.array([True] * a + [True] * b + [False] * c + [False] * d)
    got = np.array([True] * a + [False] * b + [True] * c + [False] * d)
    return ref, got


def paired(a: int, b: int, c: int, d: int, policy: Policy | None = None,
           tolerance: AccuracyTolerance | None = None) -> Gate:
    ref, got = correctness(a, b, c, d)
    (gate,) = paired_accuracy_gates({"top1": ref}, {"top1": got}, policy or POLICY_14, tolerance)
    return gate


POLICY_14 = load_policy()  # absolute 1 point, 95%, Tango, inconclusive fails
ALLOW = dataclasses.replace(POLICY_14, verdicts=VerdictPolicy(inconclusive="allow"))


# n = 10,000 images, reference right on 7,800, c = 50 only the candidate right; b = only the reference.
@pytest.mark.parametrize(("b", "verdict"), [
    (123, "pass"),          # upper bound 0.997: just below the 1-point tolerance
    (124, "inconclusive"),  # upper bound 1.008: just above it
    (178, "inconclusive"),  # lower bound 0.993: just below it
    (179, "fail"),          # lower bound 1.003: just above it
])
def test_paired_gate_at_the_integer_boundaries_of_a_one_point_tolerance(b: int, verdict: str) -> None:
    gate = paired(7800 - b, b, 50, 2200 - 50, POLICY_14)
    assert gate.verdict == verdict and gate.passed is (verdict == "pass")
    low, high = gate.values["paired_drop_top1_low95"], gate.values["paired_drop_top1_high95"]
    assert isinstance(low, float) and isinstance(high, float)
    assert (high < 1.0) is (verdict == "pass") and (low > 1.0) is (verdict == "fail")
    assert gate.measured == pytest.approx((b - 50) / 100) and gate.threshold == 1.0
    assert gate.values["discordant_ref_only"] == b and gate.values["discordant_compiled_only"] == 50
    assert gate.values["images"] == 10000
    assert f"top1 drop {(b - 50) / 100:.3f} points" in gate.detail
    assert f"[{low:.3f}, {high:.3f}]" in gate.detail and "tolerance 1.000 points (absolute rule: 1 point)" in gate.detail
    assert gate.line().startswith(verdict.upper())
    if verdict == "inconclusive":
        assert gate.images_needed is not None and gate.images_needed > 10000
        assert gate.values["images_needed_top1"] == gate.images_needed
        assert verdict_fields([gate])["images_needed"] == gate.images_needed
        assert f"about {gate.images_needed:,} images would decide" in gate.detail
        assert 'inconclusive fails by default (fixtures/policy.toml [accuracy] inconclusive = "fail")' in gate.detail
        assert gate.line() in failures([gate])
    else:
        assert gate.images_needed is None and "images_needed_top1" not in gate.values
        assert "images_needed" not in verdict_fields([gate])


def test_paired_gate_bounds_exactly_on_the_tolerance_decide_nothing() -> None:
    """pass needs the upper bound strictly below the tolerance, fail the lower strictly above."""
    table = (7800 - 150, 150, 50, 2150)
    probe = paired(*table)
    low, high = probe.values["paired_drop_top1_low95"], probe.values["paired_drop_top1_high95"]
    assert isinstance(low, float) and isinstance(high, float)
    at = {"high": high, "above_high": math.nextafter(high, math.inf), "low": low, "below_low": math.nextafter(low, -math.inf)}
    verdicts = {k: paired(*table, tolerance=AccuracyTolerance(points=v)).verdict for k, v in at.items()}
    assert verdicts == {"high": "inconclusive", "above_high": "pass", "low": "inconclusive", "below_low": "fail"}


def test_paired_gate_inconclusive_may_be_allowed_by_policy() -> None:
    gate = paired(7800 - 150, 150, 50, 2150, ALLOW)
    assert gate.verdict == "inconclusive" and gate.passed
    assert gate.line().startswith("INCONCLUSIVE (allowed by policy) paired_top1:")
    assert 'the policy allows it (fixtures/policy.toml [accuracy] inconclusive = "allow")' in gate.detail
    assert failures([gate]) == ""


def test_paired_gate_relative_rule_takes_the_fraction_of_the_reference() -> None:
    # reference right on 8,000 of 10,000: 99% of 80% allows 0.8 points.
    relative = AccuracyTolerance(rule="relative", fraction=0.99)
    gate = paired(8000 - 40, 40, 40, 1960, tolerance=relative)
    assert gate.threshold == pytest.approx(0.8) and gate.values["tolerance_top1_points"] == pytest.approx(0.8)
    assert gate.verdict == "pass" and "relative rule: >= 99% of the reference" in gate.detail
    # a model's own tolerance wins over the policy's
    assert paired(8000 - 140, 140, 40, 1960, tolerance=relative).verdict == "inconclusive"
    assert paired(8000 - 140, 140, 40, 1960, tolerance=AccuracyTolerance(points=2.0)).verdict == "pass"


def test_paired_gates_for_top1_and_top5_and_their_record_names() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 400)
    ref_logits = rng.normal(size=(400, 10)).astype(np.float32)
    ref_logits[np.arange(300), labels[:300]] += 10.0  # the reference gets 300+ right
    got_logits = ref_logits.copy()
    got_logits[:20] = np.roll(got_logits[:20], 1, axis=1)  # the candidate loses some of those
    ref, got = topk_correct(ref_logits, labels), topk_correct(got_logits, labels)
    assert set(ref) == {"top1", "top5"} and ref["top1"].dtype == bool
    assert (ref["top5"] >= ref["top1"]).all()
    gates = paired_accuracy_gates(ref, got, POLICY_14)
    assert [g.name for g in gates] == ["paired_top1", "paired_top5"]
    fields = verdict_fields(gates)
    for name in ("verdict", "images", "paired_drop_top1", "paired_drop_top1_low95", "paired_drop_top1_high95",
                 "discordant_ref_only", "discordant_compiled_only", "paired_drop_top5", "paired_drop_top5_low95",
                 "paired_drop_top5_high95", "discordant_ref_only_top5", "discordant_compiled_only_top5"):
        assert name in fields, name
    assert fields["images"] == 400 and fields["discordant_ref_only"] == int((ref["top1"] & ~got["top1"]).sum())
    assert fields["verdict"] == overall_verdict(gates)


FULL = Coverage("full", 50000, 50000, "all of them", "SHA-256 ... matches fixtures/imagenet_val.toml")
SUBSET = Coverage("subset", 1300, 50000, "the images under /data/val", "labels not checked")


def measured_on(n: int, correct1: int, correct5: int) -> Accuracy:
    return Accuracy(count=n, top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, correct1=correct1, correct5=correct5)


@pytest.mark.parametrize(("correct1", "passed"), [(37000, True), (37001, True), (36999, False)])
def test_published_gate_on_full_val_passes_exactly_at_published_minus_tolerance(correct1: int, passed: bool) -> None:
    # 37,000 of 50,000 = 74.000% against published 75.0 - 1 point
    gate = published_gate(measured_on(50000, correct1, 46000), AccuracyRef(75.0, 92.0, "paper"), FULL,
                          AccuracyTolerance(points=1.0))
    assert gate.name == "published_top1" and gate.threshold == 74.0
    assert gate.passed is passed and gate.verdict == ("pass" if passed else "fail")
    assert "on the full validation set" in gate.detail and "allowed down to 74.000%" in gate.detail


@pytest.mark.parametrize(("correct1", "passed"), [(39600, True), (39601, True), (39599, False)])
def test_published_gate_relative_rule_at_its_integer_boundary(correct1: int, passed: bool) -> None:
    # 99% of published 80.0 is 79.2% = 39,600 of 50,000 (0.99 * 80 is not exactly 79.2 in floating point)
    gate = published_gate(measured_on(50000, correct1, 46000), AccuracyRef(80.0, 95.0, "paper"), FULL,
                          AccuracyTolerance(rule="relative", fraction=0.99))
    assert gate.passed is passed and gate.threshold == pytest.approx(79.2)
    assert "relative rule: >= 99% of the reference" in gate.detail


def test_published_gate_on_a_subset_is_not_applicable_with_the_wilson_interval() -> None:
    acc = measured_on(1300, 1083, 1240)  # 83.31%: the easy subset's figure of issue 14
    gates = published_gates(acc, AccuracyRef(74.846, 92.180, "timm results"), SUBSET, AccuracyTolerance())
    assert [g.name for g in gates] == ["published_top1", "published_top5"]
    top1 = gates[0]
    assert top1.verdict == "not applicable: subset of 1300 images" and top1.passed and not top1.decided
    low, high = top1.values["top1_low95"], top1.values["top1_high95"]
    assert isinstance(low, float) and isinstance(high, float) and low < 83.31 < high
    assert f"95% Wilson interval [{low:.3f}, {high:.3f}]% beside published 74.846% (timm results)" in top1.detail
    assert "for information only" in top1.detail and top1.line().startswith("NOT APPLICABLE published_top1:")
    assert failures(gates) == ""
    fields = verdict_fields(gates)
    assert fields["published_gate"] == "not applicable: subset of 1300 images"
    assert fields["verdict"] == "not applicable"
    other = Coverage("other", 1000, 50000, "the images under /x", "not val names")
    assert published_gate(acc, AccuracyRef(74.846, 92.180, "t"), other, AccuracyTolerance()).verdict == \
        "not applicable: not the ILSVRC2012 validation set (1000 images)"
    no_top5 = published_gates(acc, AccuracyRef(81.13, None, "seed"), FULL, AccuracyTolerance())
    assert [g.name for g in no_top5] == ["published_top1"]


# n = 5,000 images against a 99% minimum: Wilson 95% bounds at the integer boundaries.
@pytest.mark.parametrize(("agree", "verdict"), [
    (4936, "fail"),          # upper bound 98.996: just below 99
    (4937, "inconclusive"),  # upper bound 99.014: just above
    (4963, "inconclusive"),  # lower bound 98.982: just below
    (4964, "pass"),          # lower bound 99.005: just above
])
def test_agreement_verdict_gate_at_its_integer_boundaries(agree: int, verdict: str) -> None:
    p = Parity(count=5000, max_abs_diff=0.1, mean_abs_diff=0.01, min_cosine=0.99, top1_agreement=100.0 * agree / 5000)
    gate = agreement_verdict_gate(p, POLICY_14, "torch")
    assert gate.name == "top1_agreement" and gate.verdict == verdict and gate.passed is (verdict == "pass")
    assert f"on {agree:,} of 5,000 images" in gate.detail and "need >= 99.0%" in gate.detail
    assert (gate.images_needed is not None) is (verdict == "inconclusive")
    # the two-way gate is unchanged: the point estimate against the minimum
    assert agreement_gate(p, POLICY_14, "torch").passed is (agree >= 4950)


def test_agreement_verdict_gate_bounds_on_the_minimum() -> None:
    """pass is inclusive at the lower bound (the old gate's >=); fail needs the upper bound strictly below."""
    p = Parity(count=5000, max_abs_diff=0.1, mean_abs_diff=0.01, min_cosine=0.99, top1_agreement=99.0)
    probe = agreement_verdict_gate(p, POLICY_14, "torch")
    low, high = probe.values["agreement_top1_low95"], probe.values["agreement_top1_high95"]
    assert isinstance(low, float) and isinstance(high, float)

    def at(minimum: float) -> str:
        return agreement_verdict_gate(p, dataclasses.replace(POLICY_14, agreement_min_top1=minimum), "torch").verdict

    assert at(low) == "pass" and at(math.nextafter(low, math.inf)) == "inconclusive"
    assert at(high) == "inconclusive" and at(math.nextafter(high, math.inf)) == "fail"


def test_gate_keeps_its_old_fields_and_derives_the_verdict() -> None:
    ok, bad = Gate("x", 1.0, 1.0, True, "fine"), Gate("y", 0.0, 1.0, False, "too low")
    assert (ok.verdict, bad.verdict) == ("pass", "fail") and ok.images_needed is None and ok.values == {}
    assert ok.line() == "PASS x: fine" and bad.line() == "FAIL y: too low"
    assert failures([ok, bad]) == "FAIL y: too low\nPASS x: fine"
    assert overall_verdict([ok, bad]) == "fail" and overall_verdict([ok]) == "pass"
    undecided = Gate("z", 0.5, 1.0, False, "straddles", verdict="inconclusive", images_needed=9000)
    assert overall_verdict([ok, undecided]) == "inconclusive"
    assert verdict_fields([ok, undecided])["images_needed"] == 9000
    assert overall_verdict([undecided, bad]) == "fail" and "images_needed" not in verdict_fields([undecided, bad])
    never = Gate("w", 1.0, 1.0, False, "on the threshold", verdict="inconclusive")
    assert verdict_fields([undecided, never])["images_needed"] is None
