"""The unpaired gate (harness.judge.unpaired): predicted images the reference was not computed on
are judged against the reference's accuracy on the paired ones, as independent samples."""

from __future__ import annotations

import numpy as np
import pytest

from harness.judge.gates import verdict_fields
from harness.judge.paired import PairedStatsError, unpaired_verdict
from harness.judge.unpaired import unpaired_gates
from harness.specs import load_policy
from harness.specs.policy import AccuracyTolerance


@pytest.mark.parametrize("counts, low, high", [((56, 70, 48, 80), 0.0524, 0.3339), ((9, 10, 3, 10), 0.1705, 0.8090)])
def test_the_interval_is_newcombes_method_10(counts: tuple[int, int, int, int], low: float, high: float) -> None:
    """Newcombe (1998), Statistics in Medicine 17:873-890, Table II, examples (a) and (b)."""
    v = unpaired_verdict(*counts, tolerance_points=1.0)
    assert (round(v.low / 100, 4), round(v.high / 100, 4)) == (low, high)
    assert v.drop == pytest.approx(100 * (counts[0] / counts[1] - counts[2] / counts[3]))


def test_three_way_rule_and_images_needed() -> None:
    assert unpaired_verdict(400, 500, 1, 800, 1.0).verdict == "fail"  # 80% vs ~0%: the broken folder
    same = unpaired_verdict(40_000, 50_000, 80_000, 100_000, 1.0)  # 80% vs 80%: unpaired needs many images
    assert same.verdict == "pass" and same.high < 1.0
    small = unpaired_verdict(400, 500, 640, 800, 1.0)
    assert small.verdict == "inconclusive" and small.low < 1.0 < small.high
    assert small.images_needed is not None and small.images_needed > 1300
    grown = small.images_needed / 1300
    assert unpaired_verdict(round(400 * grown), round(500 * grown), round(640 * grown), round(800 * grown),
                            1.0).verdict != "inconclusive"


def test_counts_outside_their_totals_are_refused() -> None:
    with pytest.raises(PairedStatsError):
        unpaired_verdict(5, 4, 1, 10, 1.0)
    with pytest.raises(PairedStatsError):
        unpaired_verdict(1, 4, 1, 0, 1.0)


def correct(n: int, right: int) -> dict[str, np.ndarray]:
    top1 = np.arange(n) < right
    return {"top1": top1, "top5": np.ones(n, dtype=bool)}


def test_gates_record_the_drop_and_fail_a_partly_random_folder() -> None:
    policy = load_policy()
    gates = unpaired_gates(correct(500, 413), correct(800, 1), policy, AccuracyTolerance())
    assert [(g.name, g.verdict) for g in gates] == [("unpaired_top1", "fail"), ("unpaired_top5", "pass")]
    fields = verdict_fields(gates)
    assert fields["verdict"] == "fail" and fields["unpaired_drop_top1"] == pytest.approx(82.6 - 0.125)
    assert "800 predicted images have no torch reference here" in gates[0].detail


def test_relative_tolerance_is_taken_of_the_reference() -> None:
    policy = load_policy()
    gates = unpaired_gates(
        correct(500, 400), correct(800, 640), policy, AccuracyTolerance(rule="relative", fraction=0.99)
    )
    assert gates[0].threshold == pytest.approx(0.8)  # 1% of the reference's 80%, not of anything else


def test_an_inconclusive_gate_records_the_images_that_would_decide() -> None:
    from dataclasses import replace

    policy = load_policy()
    gates = unpaired_gates(correct(500, 400), correct(800, 640), policy, AccuracyTolerance())
    top1 = gates[0]
    v = unpaired_verdict(400, 500, 640, 800, 1.0)
    assert top1.verdict == "inconclusive" and top1.images_needed == v.images_needed is not None
    assert top1.values["images_needed_top1"] == v.images_needed and "images would decide" in top1.detail
    assert (top1.values["unpaired_drop_top1_low95"], top1.values["unpaired_drop_top1_high95"]) == (v.low, v.high)
    assert "images_needed_top5" not in gates[1].values
    wider = replace(policy, accuracy=replace(policy.accuracy, confidence=0.99))
    assert unpaired_gates(correct(500, 400), correct(800, 640), wider, AccuracyTolerance())[0].values[
        "unpaired_drop_top1_high95"] > v.high  # the policy's confidence, not a default


def test_decided_gates_say_which_way() -> None:
    policy = load_policy()
    fail, passed = unpaired_gates(correct(500, 413), correct(800, 1), policy, AccuracyTolerance())
    assert fail.detail.endswith("fail, the whole interval is above the tolerance")
    assert passed.detail.endswith("pass, the whole interval is below the tolerance")
    assert fail.passed is False and passed.passed is True


def test_edge_counts_are_accepted_and_the_tolerance_recorded() -> None:
    assert unpaired_verdict(0, 1, 0, 1, 1.0).tolerance_points == 1.0
    assert unpaired_verdict(1, 1, 0, 1, 2.5).tolerance_points == 2.5
    with pytest.raises(PairedStatsError, match="finite"):
        unpaired_verdict(1, 2, 1, 2, float("nan"))
    with pytest.raises(PairedStatsError, match="within their totals"):
        unpaired_verdict(-1, 2, 1, 2, 1.0)
