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
    computed_check,
    failures,
    overall_verdict,
    paired_accuracy_gates,
    published_gate,
    published_gates,
    topk_correct,
    verdict_fields,
)
from harness.judge.metrics import Accuracy, Parity
from harness.judge.ratios import best_batch, ratio_gate
from harness.specs import (
    AccuracyRef,
    ChipSpec,
    PerfRule,
    Policy,
    TimingPolicy,
    load_policy,
)
from harness.specs.policy import AccuracyTolerance

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


def figure(chip: str, bs: int, ips: float, clock: str = "wall", unit: str = "per_chip",
           scenario: str = "single-stream") -> Figure:
    return Figure(chip=chip, model="m", batch_size=bs, images_per_s=ips, unit=unit, clock=clock, source="test",
                  scenario=scenario)


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


def test_ratio_gate_refuses_a_baseline_of_another_clock_or_scenario() -> None:
    rule = PerfRule(baseline="B", min_ratio=1.2)
    with pytest.raises(BaselineError, match="its baseline figures are single-stream, wall"):
        ratio_gate(rule, [figure("A", 4, 500.0, clock="device_compute")], CHIP, [figure("B", 8, 100.0)], BASE)
    with pytest.raises(BaselineError, match=r"\(offline, wall\) with B: its baseline figures are single-stream, wall"):
        ratio_gate(rule, [figure("A", 4, 500.0, scenario="offline")], CHIP, [figure("B", 8, 100.0)], BASE)


def test_ratio_gate_compares_only_the_baseline_figures_of_the_measured_scenario_and_clock() -> None:
    """A baseline with both scenarios: the faster offline figure must not be the single-stream one's best."""
    rule = PerfRule(baseline="B", min_ratio=1.2)
    baseline = [figure("B", 8, 100.0), figure("B", 16, 500.0, scenario="offline"),
                figure("B", 16, 900.0, clock="device_compute")]
    single = ratio_gate(rule, [figure("A", 4, 480.0)], CHIP, baseline, BASE)
    assert (single.baseline.batch_size, single.baseline_per_card, single.passed) == (8, 400.0, True)
    assert single.line().startswith("PASS ratio_vs_B (single-stream, wall): ")
    offline = ratio_gate(rule, [figure("A", 4, 480.0, scenario="offline")], CHIP, baseline, BASE)
    assert (offline.baseline.batch_size, offline.baseline_per_card, offline.passed) == (16, 2000.0, False)
    assert offline.line().startswith("FAIL ratio_vs_B (offline, wall): ")
    with pytest.raises(BaselineError, match="mix scenarios or clocks"):
        ratio_gate(rule, [figure("A", 4, 480.0), figure("A", 8, 500.0, scenario="offline")], CHIP, baseline, BASE)


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
ALLOW = dataclasses.replace(POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, inconclusive="allow"))


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
    assert (
        f"[{low:.3f}, {high:.3f}]" in gate.detail and "tolerance 1.000 points (absolute rule: 1 point)" in gate.detail
    )
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
    at = {
        "high": high,
        "above_high": math.nextafter(high, math.inf),
        "low": low,
        "below_low": math.nextafter(low, -math.inf),
    }
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
        return agreement_verdict_gate(
            p,
            dataclasses.replace(
                POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, agreement_min_top1=minimum)
            ),
            "torch",
        ).verdict

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


# --------------------------------------------------------------------------------------------
# Issue 19's mutation testing (docs/mutation.md, scripts/mutation.sh): what the surviving mutants
# of harness/judge/gates.py showed untested. Each boundary is realised exactly: integer counts of
# images where the figure is a count, the threshold itself and its next float where it is not.

from harness.errors import NotCertified  # noqa: E402  (kept with the tests that need it)
from harness.judge.gates import certify, conversion_gates, tolerance_for  # noqa: E402
from harness.judge.metrics import parity as logit_parity  # noqa: E402
from harness.judge.metrics import wilson_interval  # noqa: E402
from harness.judge.paired import (  # noqa: E402
    Discordance,
    agreement_verdict,
    newcombe_interval,
    z_value,
)
from harness.specs import load_models  # noqa: E402

TORCHVISION = AccuracyRef(top1=77.618, top5=93.698, source="torchvision")


@pytest.mark.parametrize(("correct1", "passed"), [(38309, True), (38310, True), (38308, False)])
def test_accuracy_gate_top1_at_its_integer_boundary(correct1: int, passed: bool) -> None:
    # 77.618 - 1 point = 76.618% = 38,309 of 50,000 right answers (issue 19's example); top-5 passes.
    top1, top5 = published_gates(measured_on(50000, correct1, 47500), TORCHVISION, FULL, tolerance_for(POLICY_14))
    assert (top1.name, top1.passed, top5.passed) == ("published_top1", passed, True)
    assert top1.measured == 100.0 * correct1 / 50000 and top1.threshold == pytest.approx(76.618)
    assert "allowed down to 76.618% (absolute rule: 1 point)" in top1.detail


@pytest.mark.parametrize(("correct5", "passed"), [(46349, True), (46350, True), (46348, False)])
def test_accuracy_gate_top5_fails_on_its_own_at_its_integer_boundary(correct5: int, passed: bool) -> None:
    # 93.698 - 1 = 92.698% = 46,349 of 50,000; top-1 (80%) passes, so top-5 alone decides.
    top1, top5 = published_gates(measured_on(50000, 40000, correct5), TORCHVISION, FULL, tolerance_for(POLICY_14))
    assert (top5.name, top5.passed, top1.passed) == ("published_top5", passed, True)
    assert top5.measured == 100.0 * correct5 / 50000 and top5.threshold == pytest.approx(92.698)
    assert failures([top1, top5]).startswith("FAIL published_top5") is (not passed)


def agreeing(n: int, agree: int) -> Parity:
    """metrics.parity of two models whose top-1 classes agree on exactly ``agree`` of ``n`` images."""
    ref = np.zeros((n, 3), dtype=np.float32)
    ref[:, 0] = 1.0
    got = ref.copy()
    got[agree:] = np.roll(got[agree:], 1, axis=1)
    return logit_parity(ref, got)


@pytest.mark.parametrize(("agree", "passed"), [(4950, True), (4951, True), (4949, False)])
def test_two_way_agreement_gate_at_its_integer_boundary(agree: int, passed: bool) -> None:
    # 99% of 5,000 images is 4,950: the point estimate against the policy's minimum, inclusive.
    gate = agreement_gate(agreeing(5000, agree), POLICY_14, "torch")
    assert (gate.name, gate.passed, gate.threshold) == ("top1_agreement", passed, 99.0)
    assert gate.measured == 100.0 * agree / 5000
    assert gate.detail.startswith(f"top-1 equals the torch reference on {100.0 * agree / 5000:.2f}% of 5000 images "
                                  "(need >= 99.0%); max |logit diff| ")


def conversion(rel: float = 0.0, cosine: float = 1.0, agree: int = 16) -> list[Gate]:
    p = Parity(count=16, max_abs_diff=rel * 10, mean_abs_diff=rel, min_cosine=cosine,
               top1_agreement=100.0 * agree / 16, max_rel_diff=rel)
    return conversion_gates(p, POLICY_14)  # rtol 1e-3, min cosine 0.99999, 100% agreement


@pytest.mark.parametrize(("figures", "failing"), [
    ({}, set()),
    ({"rel": 1e-3}, set()),                                     # exactly at the relative tolerance
    ({"rel": math.nextafter(1e-3, math.inf)}, {"max_rel_diff"}),  # just above it, alone
    ({"rel": math.nextafter(1e-3, 0.0)}, set()),
    ({"cosine": 0.99999}, set()),                               # exactly at the minimum cosine
    ({"cosine": math.nextafter(0.99999, 0.0)}, {"min_cosine"}),  # just below it, alone
    ({"agree": 15}, {"top1_agreement"}),                        # one of 16 classes flipped, alone
])
def test_conversion_gates_fail_on_each_criterion_alone(figures: dict, failing: set) -> None:
    gates = conversion(**figures)
    assert [g.name for g in gates] == ["max_rel_diff", "min_cosine", "top1_agreement"]
    assert {g.name for g in gates if not g.passed} == failing
    p = {"rel": 0.0, "cosine": 1.0, "agree": 16, **figures}
    assert [g.measured for g in gates] == [p["rel"], p["cosine"], 100.0 * p["agree"] / 16]
    assert [g.threshold for g in gates] == [1e-3, 0.99999, 100.0]
    rel, cos, agree = (g.detail for g in gates)
    assert rel == (f"max |torch - onnx| / max |torch logit| per image = {p['rel']:.3g} (allowed 0.001; "
                   f"max |torch - onnx| = {p['rel'] * 10:.3g})")
    assert cos == f"min cosine = {p['cosine']:.10f} (need >= 0.99999)"
    assert agree == f"top-1 agreement {100.0 * p['agree'] / 16:.2f}% on 16 images (need 100%)"


def test_certify_is_silent_when_all_pass_and_lists_failures_first() -> None:
    ok, bad = Gate("x", 1.0, 1.0, True, "fine"), Gate("y", 0.0, 1.0, False, "too low")
    certify([ok], "m on A")
    with pytest.raises(NotCertified) as raised:
        certify([ok, bad], "m on A")
    # the verdict first (harness.judge.headline: what a dashboard shows), then the whole list
    assert str(raised.value) == ("FAIL y: 0 vs 1\n"
                                 "m on A is not certified (verdict: fail):\nFAIL y: too low\nPASS x: fine")


def test_tolerance_for_takes_the_models_own_rule_else_the_policys_points() -> None:
    policy = dataclasses.replace(POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, tolerance_points=2.5))
    model = load_models()["resnext50_32x4d"]
    plain = dataclasses.replace(model, accuracy_tolerance=None)
    own = dataclasses.replace(model, accuracy_tolerance=AccuracyTolerance(rule="relative", fraction=0.98))
    assert tolerance_for(policy) == AccuracyTolerance(points=2.5)
    assert tolerance_for(policy, plain) == AccuracyTolerance(points=2.5)
    assert tolerance_for(policy, own) == AccuracyTolerance(rule="relative", fraction=0.98)


def test_topk_correct_marks_each_images_hits_for_every_k() -> None:
    logits = np.tile(np.arange(10, 0, -1, dtype=np.float32), (3, 1))  # class 0 best ... class 9 worst
    labels = np.array([0, 4, 9])
    hits = topk_correct(logits, labels, ks=(1, 5, 10))
    assert hits["top1"].tolist() == [True, False, False]
    assert hits["top5"].tolist() == [True, True, False]
    assert hits["top10"].tolist() == [True, True, True]
    assert topk_correct(logits, labels)["top5"].tolist() == [True, True, False]


def test_paired_gate_default_reference_method_and_decided_wording() -> None:
    ref, got = correctness(7800 - 123, 123, 50, 2150)
    (passing,) = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY_14)
    assert "vs the torch reference" in passing.detail
    assert "123 only the reference got right, 50 only the compiled model)" in passing.detail
    assert passing.detail.endswith(": pass, the whole interval is below the tolerance")
    failing = paired(7800 - 179, 179, 50, 2150)
    assert failing.detail.endswith(": fail, the whole interval is above the tolerance")
    newcombe = dataclasses.replace(
        POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, paired_method="newcombe")
    )
    gate = paired(7800 - 150, 150, 50, 2150, newcombe)
    low, high = newcombe_interval(Discordance(7800 - 150, 150, 50, 2150))
    assert (gate.values["paired_drop_top1_low95"], gate.values["paired_drop_top1_high95"]) == (low, high)
    assert "(Newcombe hybrid score)" in gate.detail


def test_paired_gate_inconclusive_wording_when_it_fails() -> None:
    gate = paired(7800 - 124, 124, 50, 2150)
    assert gate.verdict == "inconclusive" and not gate.passed and gate.images_needed is not None
    assert gate.detail.endswith(
        f": inconclusive, the interval straddles the threshold: about {gate.images_needed:,} images would decide at "
        "the observed rates (this run had 10,000); inconclusive fails by default (fixtures/policy.toml [accuracy] "
        'inconclusive = "fail"): run on more images, e.g. the full validation set')


@pytest.mark.parametrize(("correct5", "passed"), [(45500, True), (45501, True), (45499, False)])
def test_published_top5_gate_on_full_val_at_its_integer_boundary(correct5: int, passed: bool) -> None:
    # published top-5 92.0 - 1 point = 91.000% = 45,500 of 50,000; top-1 (37,500 = 75%) passes.
    top1, top5 = published_gates(measured_on(50000, 37500, correct5), AccuracyRef(75.0, 92.0, "paper"), FULL,
                                 AccuracyTolerance(points=1.0))
    assert (top5.name, top5.passed, top1.passed) == ("published_top5", passed, True)
    assert top5.measured == 100.0 * correct5 / 50000 and top5.threshold == 91.0
    assert f"measured {100.0 * correct5 / 50000:.3f}% vs published 92.000% (paper)" in top5.detail
    fields = verdict_fields([top1, top5])
    assert fields["published_gate"] == ("pass" if passed else "fail") == fields["verdict"]


def test_published_gate_detail_and_its_floating_point_slack() -> None:
    ref, tol = AccuracyRef(75.0, 92.0, "paper"), AccuracyTolerance(points=1.0)

    def at(top1: float) -> Gate:
        return published_gate(Accuracy(50000, top1, 95.0, 37000, 47500), ref, FULL, tol)

    gate = at(74.0)
    assert (gate.measured, gate.threshold) == (74.0, 74.0)
    assert gate.detail == ("measured 74.000% vs published 75.000% (paper) on the full validation set; delta -1.000 "
                           "points, allowed down to 74.000% (absolute rule: 1 point): pass "
                           "(SHA-256 ... matches fixtures/imagenet_val.toml)")
    assert at(74.0 - 1e-9).passed  # the slack is inclusive too
    below = at(math.nextafter(74.0 - 1e-9, 0.0))
    assert not below.passed and ": fail (SHA-256" in below.detail
    with pytest.raises(BaselineError, match=r"^no published top5 in seed: nothing to compare with$"):
        published_gate(measured_on(50000, 37000, 46000), AccuracyRef(75.0, None, "seed"), FULL, tol, "top5")


def test_published_gate_on_a_subset_uses_each_metrics_count_and_the_confidence() -> None:
    acc = measured_on(1300, 1083, 1240)
    top1, top5 = published_gates(acc, AccuracyRef(74.846, 92.180, "t"), SUBSET, AccuracyTolerance(), confidence=0.90)
    assert (top1.measured, top1.threshold) == (acc.top1, pytest.approx(73.846))
    assert (top5.measured, top5.threshold) == (acc.top5, pytest.approx(91.180))
    z = z_value(0.90)
    assert (top1.values["top1_low95"], top1.values["top1_high95"]) == wilson_interval(1083, 1300, z)
    assert (top5.values["top5_low95"], top5.values["top5_high95"]) == wilson_interval(1240, 1300, z)
    assert "90% Wilson interval" in top5.detail


@pytest.mark.parametrize(("agree", "verdict"), [(4936, "fail"), (4937, "inconclusive"), (4963, "inconclusive"),
                                                (4964, "pass")])
def test_agreement_verdict_gate_records_and_wording(agree: int, verdict: str) -> None:
    p = Parity(count=5000, max_abs_diff=0.1, mean_abs_diff=0.01, min_cosine=0.99, top1_agreement=100.0 * agree / 5000)
    gate = agreement_verdict_gate(p, POLICY_14, "torch")
    v = agreement_verdict(agree, 5000, 99.0)
    assert (gate.measured, gate.threshold) == (100.0 * agree / 5000, 99.0)
    expected = {"agreement_top1": v.agreement, "agreement_top1_low95": v.low, "agreement_top1_high95": v.high}
    if verdict == "inconclusive":
        expected["images_needed_agreement"] = v.images_needed
        assert v.images_needed is not None and f"about {v.images_needed:,} images would decide" in gate.detail
    assert dict(gate.values) == expected
    wording = {"pass": "pass, the whole interval reaches the minimum",
               "fail": "fail, the whole interval is below the minimum"}
    if verdict in wording:
        assert f"need >= 99.0%): {wording[verdict]}; max |logit diff| 0.1" in gate.detail


def test_agreement_verdict_gate_uses_the_policys_confidence() -> None:
    p = Parity(count=5000, max_abs_diff=0.1, mean_abs_diff=0.01, min_cosine=0.99, top1_agreement=99.5)
    policy = dataclasses.replace(POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, confidence=0.90))
    gate = agreement_verdict_gate(p, policy, "torch")
    v = agreement_verdict(4975, 5000, 99.0, 0.90)
    assert (gate.values["agreement_top1_low95"], gate.values["agreement_top1_high95"]) == (v.low, v.high)
    assert "90% Wilson interval" in gate.detail


def test_agreement_verdict_gate_that_no_number_of_images_decides() -> None:
    # 100% agreement against a 100% minimum: the lower bound never reaches 100.
    p = Parity(count=1000, max_abs_diff=0.0, mean_abs_diff=0.0, min_cosine=1.0, top1_agreement=100.0)
    gate = agreement_verdict_gate(
        p,
        dataclasses.replace(POLICY_14, accuracy=dataclasses.replace(POLICY_14.accuracy, agreement_min_top1=100.0)),
        "torch",
    )
    assert gate.verdict == "inconclusive" and gate.images_needed is None and not gate.passed
    assert ("inconclusive, the interval straddles the threshold: no feasible number of images would decide: "
            "the observed figure sits on the threshold; inconclusive fails by default") in gate.detail
    assert gate.values["images_needed_agreement"] is None
    assert verdict_fields([gate])["images_needed"] is None


def test_verdict_fields_published_gate_is_the_worst_decided_one() -> None:
    ref, tol = AccuracyRef(75.0, 92.0, "paper"), AccuracyTolerance(points=1.0)
    top1, top5 = published_gates(measured_on(50000, 37500, 45000), ref, FULL, tol)  # top-1 passes, top-5 fails
    assert (top1.verdict, top5.verdict) == ("pass", "fail")
    assert verdict_fields([top1, top5])["published_gate"] == "fail"
    (alone,) = published_gates(measured_on(1300, 1083, 1240), AccuracyRef(74.846, None, "t"), SUBSET, tol)
    assert verdict_fields([alone])["published_gate"] == "not applicable: subset of 1300 images"


def test_computed_check_records_its_figures() -> None:
    gate = computed_check(parity(100.0, 5e-5), POLICY, batch_size=8, ring=128)
    assert (gate.name, gate.measured, gate.threshold, gate.passed) == ("computed", 5e-5, 1e-4, True)
    assert gate.detail == ("bs8: the timed runs' outputs vs the accuracy-mode outputs on the same 128 images: "
                           "top-1 agreement 100.00% (need 100%), max relative diff 5e-05 (allowed 0.0001)")


def test_ratio_check_line_names_the_baselines_note_only_when_it_has_one() -> None:
    rule = PerfRule(baseline="B", min_ratio=1.2)
    plain = ratio_gate(rule, [figure("A", 4, 480.0)], CHIP, [figure("B", 8, 100.0)], BASE)
    assert plain.line() == ("PASS ratio_vs_B (single-stream, wall): A best 480.0000 images/s per card (bs4; test) / "
                            "B best 400.0000 images/s per card (bs8; test) = 1.2000, need >= 1.2")
    noted = dataclasses.replace(figure("B", 8, 100.0), note="fan at full speed")
    check = ratio_gate(rule, [figure("A", 4, 479.0)], CHIP, [noted], BASE)
    assert check.line().startswith("FAIL ") and "(bs8; test, fan at full speed) = 1.1975" in check.line()


def test_ratio_gate_needs_figures_on_both_sides_and_one_clock() -> None:
    rule = PerfRule(baseline="B", min_ratio=1.2)
    for measured, baseline in (([], [figure("B", 8, 100.0)]), ([figure("A", 4, 480.0)], [])):
        with pytest.raises(BaselineError, match=r"^a ratio rule needs figures on both sides$"):
            ratio_gate(rule, measured, CHIP, baseline, BASE)
    with pytest.raises(BaselineError) as raised:
        ratio_gate(rule, [figure("A", 4, 500.0, clock="device_compute")], CHIP, [figure("B", 8, 100.0)], BASE)
    assert str(raised.value) == (
        "cannot compare m on A (single-stream, device_compute) with B: its baseline figures are single-stream, wall. "
        "A device-compute figure and a wall-time figure, or a single-stream and an offline figure, measure different "
        "things. Measure the chip under test the baseline's way (--scenario), or supply a baseline of the same "
        "scenario and clock")


def test_paired_gate_inconclusive_wording_when_the_policy_allows_it() -> None:
    gate = paired(7800 - 124, 124, 50, 2150, ALLOW)
    assert gate.verdict == "inconclusive" and gate.passed and gate.images_needed is not None
    assert gate.detail.endswith(
        f": inconclusive, the interval straddles the threshold: about {gate.images_needed:,} images would decide at "
        'the observed rates (this run had 10,000); the policy allows it (fixtures/policy.toml [accuracy] '
        'inconclusive = "allow")')


def test_a_count_exactly_at_the_floor_passes_despite_floating_point() -> None:
    """31,502 of 50,000 is 63.004 and published 64.004 - 1 point is 63.004000000000005: the count
    is exactly at the floor, so the gate passes (harness.judge.gates.SLACK); one image fewer fails."""
    policy = load_policy()
    published = AccuracyRef(top1=64.004, top5=None, source="test")
    for right, passed in ((31502, True), (31501, False)):
        measured = Accuracy(count=50000, top1=100.0 * right / 50000, top5=100.0, correct1=right, correct5=50000)
        (gate,) = published_gates(measured, published, FULL, tolerance_for(policy))
        assert gate.passed is passed, (right, gate.detail)
