"""Issue 14's proof of the paired statistics by seeded simulation.

Each trial is one certification run: ``n`` images scored by a reference (right on ~77%, a
realistic ImageNet top-1) and a compiled model that differs from it on a few percent of the images
(1.5% only the compiled model gets right, 1.5% + the true drop only the reference gets right).
The paired table of each trial is drawn from that multinomial with numpy's seeded Generator, and
judged as the paired gate judges it, with the shipped policy's method and confidence and a
tolerance of 1 point:

- a true drop of 0 must ``fail`` in at most 2.5% of trials, a true drop of 2 points must ``pass``
  in at most 2.5% (each decisive verdict is a one-sided 2.5% test);
- the 95% interval must contain the true drop in 94-96% of trials, for 200, 1,000 and 5,000 images;
- at a true drop exactly on the tolerance, the hardest case, both decisive errors stay near 2.5%.
  Enumerated exactly over every table (not simulated), Tango's fail / pass rates there are
  3.3% / 2.6% at 200 images (the discreteness of a handful of discordant images), 2.5% / 2.4% at
  1,000 and 2.55% / 2.47% at 5,000; so that case allows 3.5% at 200 images and 2.5% plus three
  Monte Carlo standard errors above.

Tango's interval depends on the table only through (b, c, n), so each distinct (b, c) is judged
once and the verdicts are scattered back to the trials (np.unique): 40,000 trials per case cost
under half a second. Newcombe's interval (the cross-check method) is conservative at 200 images
(coverage ~97.5%), so only its decisive error rates are checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.judge.gates import paired_accuracy_gates
from harness.judge.paired import Discordance, drop_interval
from harness.specs import load_policy

SEED = 14  # the number; each case derives its own stream from it
TRIALS = 40_000
REFERENCE_ACCURACY = 0.77
ONLY_COMPILED = 0.015  # c / n: images only the compiled model gets right
TOLERANCE = 1.0  # points
SIZES = (200, 1000, 5000)
POLICY = load_policy()
CONFIDENCE, METHOD = POLICY.accuracy.confidence, POLICY.accuracy.paired_method
# Monte Carlo slack: three standard errors of a 2.5% rate estimated from TRIALS trials.
SLACK = 3 * np.sqrt(0.025 * 0.975 / TRIALS)


def simulate(n: int, drop_points: float, method: str = METHOD, trials: int = TRIALS) -> np.ndarray:
    """(trials, 4) paired tables (a, b, c, d) of ``n`` images at a true drop of ``drop_points``."""
    rng = np.random.default_rng([SEED, n, round(drop_points * 100), ("tango", "newcombe").index(method)])
    b = ONLY_COMPILED + drop_points / 100.0
    probabilities = [REFERENCE_ACCURACY - b, b, ONLY_COMPILED, 1.0 - REFERENCE_ACCURACY - ONLY_COMPILED]
    return rng.multinomial(n, probabilities, size=trials)


def intervals(tables: np.ndarray, method: str = METHOD) -> tuple[np.ndarray, np.ndarray]:
    """Each table's interval of the drop in points, by ``method``, judged once per distinct table."""
    columns = [1, 2] if method == "tango" else [0, 1, 2, 3]  # Tango needs only b, c (and n)
    n = int(tables[0].sum())
    keys, inverse = np.unique(tables[:, columns], axis=0, return_inverse=True)
    bounds = []
    for key in keys:
        if method == "tango":
            b, c = int(key[0]), int(key[1])
            table = Discordance(n - b - c, b, c, 0)
        else:
            table = Discordance(*(int(x) for x in key))
        bounds.append(drop_interval(table, CONFIDENCE, method))  # type: ignore[arg-type]
    per_trial = np.asarray(bounds)[inverse.ravel()]
    return per_trial[:, 0], per_trial[:, 1]


def verdict_rates(n: int, drop_points: float, method: str = METHOD) -> tuple[float, float]:
    """The fractions of trials judged ``fail`` and ``pass`` against the 1-point tolerance."""
    low, high = intervals(simulate(n, drop_points, method), method)
    return float((low > TOLERANCE).mean()), float((high < TOLERANCE).mean())


@pytest.mark.parametrize("method", ["tango", "newcombe"])
@pytest.mark.parametrize("n", SIZES)
def test_no_drop_fails_in_at_most_2_5_percent_of_runs(n: int, method: str) -> None:
    fail, _ = verdict_rates(n, 0.0, method)
    assert fail <= 0.025, f"{method}, {n} images, true drop 0: fail in {fail:.2%} of {TRIALS} trials"


@pytest.mark.parametrize("method", ["tango", "newcombe"])
@pytest.mark.parametrize("n", SIZES)
def test_a_two_point_drop_passes_in_at_most_2_5_percent_of_runs(n: int, method: str) -> None:
    _, passed = verdict_rates(n, 2.0, method)
    assert passed <= 0.025, f"{method}, {n} images, true drop 2 points: pass in {passed:.2%} of {TRIALS} trials"


@pytest.mark.parametrize("n", SIZES)
def test_a_drop_exactly_on_the_tolerance_is_misjudged_rarely_either_way(n: int) -> None:
    fail, passed = verdict_rates(n, TOLERANCE)
    limit = 0.035 if n == 200 else 0.025 + SLACK
    assert fail <= limit and passed <= limit, f"{n} images, true drop 1 point: fail {fail:.2%}, pass {passed:.2%}"
    assert fail > 0.01 and passed > 0.01  # not conservative to the point of never deciding


@pytest.mark.parametrize("drop_points", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("n", SIZES)
def test_the_interval_covers_the_true_drop_95_percent_of_the_time(n: int, drop_points: float) -> None:
    low, high = intervals(simulate(n, drop_points))
    coverage = float(((low <= drop_points) & (drop_points <= high)).mean())
    assert abs(coverage - 0.95) <= 0.01, f"{METHOD}, {n} images, true drop {drop_points}: coverage {coverage:.2%}"


def test_the_gate_reaches_the_simulated_verdicts() -> None:
    """The rule simulated above is the paired gate's: on simulated runs it decides the same."""
    tables = np.concatenate([simulate(1000, drop, trials=15) for drop in (0.0, 1.0, 2.0)])
    low, high = intervals(tables)
    expected = np.where(high < TOLERANCE, "pass", np.where(low > TOLERANCE, "fail", "inconclusive"))
    assert set(expected) == {"pass", "fail", "inconclusive"}
    for (a, b, c, d), want in zip(tables, expected, strict=True):
        ref = np.repeat([True, True, False, False], [a, b, c, d])
        got = np.repeat([True, False, True, False], [a, b, c, d])
        (gate,) = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY)
        assert gate.verdict == want
