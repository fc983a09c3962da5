"""Top-k accuracy, agreement/parity and gates on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from harness.judge.gates import (
    accuracy_gates,
    agreement_gate,
    conversion_gates,
    failures,
)
from harness.judge.metrics import (
    MetricsError,
    accuracy,
    parity,
    topk_predictions,
    wilson_interval,
)
from harness.specs import AccuracyRef, load_policy


def test_topk_orders_best_first_and_breaks_ties_by_index() -> None:
    logits = np.array([[0.1, 0.9, 0.5, 0.9, 0.0, 0.2]], dtype=np.float32)
    assert topk_predictions(logits, 5).tolist() == [[1, 3, 2, 5, 0]]


def test_accuracy_counts_top1_and_top5() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    order = np.argsort(-logits, axis=1)
    labels = np.array([order[0, 0], order[1, 3], order[2, 7], order[3, 4]])
    acc = accuracy(logits, labels)
    assert (acc.count, acc.correct1, acc.correct5) == (4, 1, 3)
    assert acc.top1 == 25.0 and acc.top5 == 75.0


def test_accuracy_matches_a_brute_force_reference_on_many_rows() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, size=2000)
    ranks = (logits > logits[np.arange(2000), labels][:, None]).sum(axis=1)
    acc = accuracy(logits, labels)
    assert acc.correct1 == int((ranks == 0).sum()) and acc.correct5 == int((ranks < 5).sum())


@pytest.mark.parametrize(
    "logits, labels, message",
    [
        (np.zeros((3, 10)), np.zeros(2, dtype=int), "do not pair up"),
        (np.zeros((0, 10)), np.zeros(0, dtype=int), "no images"),
        (np.zeros((2, 10)), np.array([0, 10]), "out of range"),
        (np.zeros((2, 10)), np.array([-1, 0]), "out of range"),
    ],
)
def test_accuracy_refuses_mismatched_input(logits: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        accuracy(logits, labels)


def test_parity_reports_diff_cosine_and_agreement() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    got = ref.copy()
    got[1] = [1.0, 2.0, 3.5]
    p = parity(ref, got)
    assert p.max_abs_diff == pytest.approx(2.5)
    assert p.top1_agreement == 50.0
    assert p.min_cosine < 0.8
    same = parity(ref, ref)
    assert same.max_abs_diff == 0.0 and same.min_cosine == pytest.approx(1.0) and same.top1_agreement == 100.0
    with pytest.raises(MetricsError):
        parity(ref, ref[:1])


def test_parity_relative_diff_uses_each_images_own_scale() -> None:
    ref = np.array([[100.0, -400.0, 0.0], [1.0, 2.0, 0.5]])
    got = ref + np.array([[0.2, 0.0, 0.0], [0.0, 0.01, 0.0]])
    p = parity(ref, got)
    assert p.max_abs_diff == pytest.approx(0.2)
    assert p.max_rel_diff == pytest.approx(0.005)  # 0.01 / 2 beats 0.2 / 400
    zeros = np.zeros((1, 3))
    assert parity(zeros, zeros).max_rel_diff == 0.0
    assert parity(zeros, zeros + 1e-9).max_rel_diff == np.inf


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson_interval(82, 100)
    assert lo < 82.0 < hi and 70 < lo and hi < 90
    assert wilson_interval(0, 0) == (0.0, 100.0)


def test_accuracy_gates_use_the_policy_tolerance() -> None:
    policy = load_policy()
    ref = AccuracyRef(top1=77.618, top5=93.698, source="torchvision")
    logits = np.eye(4, dtype=np.float32)
    acc = accuracy(logits, np.arange(4))  # 100 / 100
    assert not failures(accuracy_gates(acc, ref, policy))
    low = accuracy(logits, np.array([0, 1, 2, 0]))  # 75% top-1, 100% top-5
    gates = accuracy_gates(low, ref, policy)
    message = failures(gates)
    assert message.startswith("FAIL top1: measured 75.000% vs published 77.618% (torchvision); delta -2.618")
    assert "allowed down to 76.618%" in message and "PASS top5" in message
    no_top5 = accuracy_gates(acc, AccuracyRef(top1=81.13, top5=None, source="seed"), policy)
    assert [g.name for g in no_top5] == ["top1"]


def test_agreement_and_conversion_gates() -> None:
    policy = load_policy()
    ref = np.eye(200, dtype=np.float32)
    got = ref.copy()
    got[0] = np.roll(got[0], 1)
    p = parity(ref, got)  # 199/200 = 99.5% agreement
    assert agreement_gate(p, policy, "torch").passed
    got[1] = np.roll(got[1], 1)
    got[2] = np.roll(got[2], 1)
    assert not agreement_gate(parity(ref, got), policy, "torch").passed  # 98.5%
    conv = conversion_gates(parity(ref, ref + 1e-5), policy)
    assert all(g.passed for g in conv)
    assert not all(g.passed for g in conversion_gates(p, policy))
