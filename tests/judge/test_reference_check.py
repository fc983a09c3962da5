"""The reference gate (harness.judge.reference_check): is the torch reference plausible before it
judges, and what does a cheap look at its predictions say when it is not? Data-free."""

from __future__ import annotations

import numpy as np
import pytest

from harness.data.coverage import Coverage
from harness.judge.gates import verdict_fields
from harness.judge.metrics import Accuracy, wilson_interval
from harness.judge.paired import z_value
from harness.judge.reference_check import WRONG_REFERENCE, likely_cause, reference_gates
from harness.specs import AccuracyRef, ReferencePolicy
from harness.specs.policy import AccuracyTolerance

PUBLISHED = AccuracyRef(top1=75.0, top5=92.0, source="the test's table")
TOLERANCE = AccuracyTolerance(points=1.0)
MARGIN = ReferencePolicy(subset_margin_points=10.0)  # the tests pick their own margin


def full() -> Coverage:
    return Coverage(kind="full", images=50_000, total=50_000, chosen_by="all", recognised_by="the test")


def subset(n: int) -> Coverage:
    return Coverage(kind="subset", images=n, total=50_000, chosen_by="--limit", recognised_by="the test")


def acc(n: int, correct1: int, correct5: int) -> Accuracy:
    return Accuracy(count=n, top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, correct1=correct1, correct5=correct5)


def verdicts(reference: Accuracy, coverage: Coverage, published: AccuracyRef = PUBLISHED) -> dict[str, str]:
    return {g.name: g.verdict for g in reference_gates(reference, published, coverage, TOLERANCE, MARGIN)}


@pytest.mark.parametrize("top1, verdict", [(74.0, "pass"), (76.0, "pass"), (73.99, "fail"), (76.01, "fail")])
def test_on_full_val_the_reference_must_be_within_the_tolerance_either_way(top1: float, verdict: str) -> None:
    """Below: broken weights, labels or recipe; above: another checkpoint than the one published."""
    correct1 = round(top1 * 500)
    assert verdicts(acc(50_000, correct1, 46_000), full())["reference_top1"] == verdict


def test_on_a_subset_the_published_figure_must_lie_in_the_widened_interval() -> None:
    n = 500
    low, high = wilson_interval(300, n, z_value(0.95))  # 60% on 500 images
    assert low - 10.0 < 50.0 < high + 10.0 < 75.0  # published 75 lies just above the widened interval
    assert verdicts(acc(n, 300, 460), subset(n))["reference_top1"] == "fail"
    inside = AccuracyRef(top1=round(high + 9.9, 3), top5=92.0, source="t")
    assert verdicts(acc(n, 300, 460), subset(n), inside)["reference_top1"] == "pass"
    below = AccuracyRef(top1=round(low - 9.9, 3), top5=92.0, source="t")
    assert verdicts(acc(n, 300, 460), subset(n), below)["reference_top1"] == "pass"
    far_below = AccuracyRef(top1=round(low - 10.1, 3), top5=92.0, source="t")
    assert verdicts(acc(n, 300, 460), subset(n), far_below)["reference_top1"] == "fail"


def test_the_margin_comes_from_the_policy() -> None:
    gates = reference_gates(
        acc(500, 300, 460), PUBLISHED, subset(500), TOLERANCE, ReferencePolicy(subset_margin_points=15.0)
    )
    assert gates[0].verdict == "pass" and "widened by 15 points" in gates[0].detail


def test_random_weights_fail_on_fifty_images() -> None:
    assert verdicts(acc(50, 0, 0), subset(50)) == {"reference_top1": "fail", "reference_top5": "fail"}


def test_no_published_top5_no_top5_gate() -> None:
    gates = reference_gates(acc(500, 380, 460), AccuracyRef(75.0, None, "t"), subset(500), TOLERANCE, MARGIN)
    assert [g.name for g in gates] == ["reference_top1"]


def test_a_failed_gate_says_the_reference_is_wrong_and_why() -> None:
    [top1, _] = reference_gates(acc(500, 1, 4), PUBLISHED, subset(500), TOLERANCE, MARGIN, cause="labels off by one")
    assert top1.verdict == "fail" and not top1.passed
    assert WRONG_REFERENCE in top1.detail and top1.detail.endswith("Likely cause: labels off by one")
    assert set(top1.values) == {"reference_top1_low95", "reference_top1_high95"}


def test_reference_gate_is_recorded_beside_the_published_gate() -> None:
    fields = verdict_fields(reference_gates(acc(500, 1, 4), PUBLISHED, subset(500), TOLERANCE, MARGIN))
    assert fields["reference_gate"] == "fail" and fields["verdict"] == "fail" and "published_gate" not in fields
    fields = verdict_fields(reference_gates(acc(500, 380, 460), PUBLISHED, subset(500), TOLERANCE, MARGIN))
    assert fields["reference_gate"] == "pass"


# -- likely_cause --------------------------------------------------------------------------


def sane_logits(labels: np.ndarray, right: float = 0.8, seed: int = 0) -> np.ndarray:
    """Logits whose top-1 is the label on a fraction ``right`` of the images."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 1000)).astype(np.float32)
    hit = rng.random(len(labels)) < right
    logits[np.flatnonzero(hit), labels[hit]] += 10.0
    return logits


def val_like_labels(n: int = 1300, classes: int = 700, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


@pytest.mark.parametrize("shift, higher", [(1, "one higher"), (-1, "one lower")])
def test_labels_off_by_one_are_named(shift: int, higher: str) -> None:
    truth = val_like_labels()
    cause = likely_cause(sane_logits(truth), truth + shift)
    assert "off by one" in cause and higher in cause


def test_another_class_order_is_named() -> None:
    truth = val_like_labels()
    order = np.random.default_rng(2).permutation(1000)
    cause = likely_cause(sane_logits(truth), order[truth])
    assert "another class order" in cause and "sorted-wnid" in cause


def test_one_class_for_most_images_is_broken_weights() -> None:
    truth = val_like_labels()
    logits = np.zeros((len(truth), 1000), dtype=np.float32)
    logits[:, 7] = 1.0
    assert "predicts class 7 for 100% of the images" in likely_cause(logits, truth)


def test_a_plainly_weak_reference_names_checkpoint_or_recipe() -> None:
    truth = val_like_labels()
    cause = likely_cause(sane_logits(truth, right=0.3), truth)
    assert cause.startswith("no labelling pattern found")


def test_exactly_the_tolerance_away_passes_and_the_relative_rule_takes_the_published_figure() -> None:
    assert verdicts(acc(50_000, 37_000, 46_000), full())["reference_top1"] == "pass"  # 74.0: 1 point below 75
    relative = AccuracyTolerance(rule="relative", fraction=0.99)  # 0.75 points of the published 75
    gates = reference_gates(acc(50_000, 37_200, 46_000), PUBLISHED, full(), relative, MARGIN)  # 74.4: 0.6 below
    assert gates[0].verdict == "pass" and "allowed 0.750 points" in gates[0].detail
    gates = reference_gates(acc(50_000, 37_100, 46_000), PUBLISHED, full(), relative, MARGIN)  # 74.2: 0.8 below
    assert gates[0].verdict == "fail" and gates[0].detail.startswith("the torch reference scores top1 74.200%")


def test_the_share_of_pairs_is_counted_like_brute_force() -> None:
    from itertools import combinations

    from harness.judge.reference_check import _order_pattern

    rng = np.random.default_rng(3)
    labels, predicted = rng.integers(0, 4, 40), rng.integers(0, 5, 40)
    pairs = list(combinations(range(40), 2))
    same = [(i, j) for i, j in pairs if labels[i] == labels[j]]
    other = [(i, j) for i, j in pairs if labels[i] != labels[j]]
    within = sum(predicted[i] == predicted[j] for i, j in same) / len(same)
    across = sum(predicted[i] == predicted[j] for i, j in other) / len(other)
    assert _order_pattern(predicted, labels) == (pytest.approx(within), pytest.approx(across), len(same))
