"""Paired comparison of a compiled model with its framework reference on the same images.

In plain words, for a certificate reader: both models see the same N images. On most images they
are both right or both wrong; those images say nothing about which model is better. What decides
is the two kinds of *discordant* image: ``b`` images only the reference gets right and ``c``
images only the compiled model gets right. The accuracy drop is ``100 * (b - c) / N`` points.
Because both models saw the same images, this difference is far more precise than comparing two
accuracies measured separately: the image-to-image difficulty cancels out.

The drop comes with a 95% confidence interval: the range of true drops consistent with what was
seen. The verdict is ``pass`` when even the top of that range is below the allowed drop,
``fail`` when even its bottom is above it, and ``inconclusive`` when the range straddles the
allowed drop: the data cannot tell, and more images are needed (an estimate of how many is given).
Each of ``pass`` and ``fail`` is therefore wrong in at most about 2.5% of runs.

The interval methods (both handle small counts and zero discordant images):

- Tango, T. (1998). Equivalence test and confidence interval for the difference in proportions
  for the paired-sample design. Statistics in Medicine 17:891-908. The asymptotic *score*
  interval: every drop delta whose score statistic, with the variance evaluated at the maximum
  likelihood estimate restricted to that delta, lies within +-z. Found here by bisection.
- Newcombe, R.G. (1998). Improved confidence intervals for the difference between binomial
  proportions based on paired data. Statistics in Medicine 17:2635-2650, method 10: the
  "hybrid score" (square-and-add) interval built from the Wilson score intervals of the two
  marginal accuracies, with the phi correlation correction for the pairing. Closed form.

The default is Tango's. It is the inversion of one score test, so ``pass`` is exactly Tango's
one-sided score test of non-inferiority at the tolerance (the use his paper was written for); its
coverage is documented for this very parameter (Tango 1998; Fagerland, Lydersen & Laake 2014,
Statistics in Medicine 33:2850-2875, whose comparison recommends it), and tests/judge/test_paired.py
enumerates it exactly at 200 images (94-95%, each tail under 3%); with no discordant image it is
+-z^2/(N+z^2), never zero-width. Newcombe's needs no root finding and is kept as a cross-check:
the two differ by a few hundredths of a point at 1,000 images, a few tenths at 100. The formulas
below are those of the papers as reproduced by the implementations the tests cite; their
equation numbers were not checked against the (paywalled) papers themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from harness.errors import UsageError
from harness.judge.metrics import wilson_interval

Method = Literal["tango", "newcombe"]
DEFAULT_METHOD: Method = "tango"
MAX_IMAGES = 10_000_000  # the images-needed search gives up here (ImageNet val has 50,000)


class PairedStatsError(UsageError, ValueError):
    """Inputs the paired statistics cannot use (unequal or empty vectors, a bad confidence)."""


@dataclass(frozen=True)
class Discordance:
    """The paired 2x2 table: reference right/wrong against candidate right/wrong, per image."""

    both_right: int  # a
    reference_only: int  # b: only the reference is right
    candidate_only: int  # c: only the candidate (compiled model) is right
    both_wrong: int  # d

    def __post_init__(self) -> None:
        counts = (self.both_right, self.reference_only, self.candidate_only, self.both_wrong)
        if any(not isinstance(x, (int, np.integer)) or x < 0 for x in counts) or sum(counts) == 0:
            raise PairedStatsError(f"paired counts must be non-negative integers, not all zero: {counts}")

    @property
    def n(self) -> int:
        return self.both_right + self.reference_only + self.candidate_only + self.both_wrong

    @property
    def reference_accuracy(self) -> float:
        return 100.0 * (self.both_right + self.reference_only) / self.n

    @property
    def candidate_accuracy(self) -> float:
        return 100.0 * (self.both_right + self.candidate_only) / self.n

    @property
    def drop(self) -> float:
        """Reference accuracy minus candidate accuracy, in points: 100 * (b - c) / n."""
        return 100.0 * (self.reference_only - self.candidate_only) / self.n

    def scaled(self, n: int) -> Discordance:
        """The table ``n`` images would give at the same four rates (largest-remainder rounding)."""
        if n < 1:
            raise PairedStatsError(f"cannot scale the paired table to {n} images")
        counts = (self.both_right, self.reference_only, self.candidate_only, self.both_wrong)
        exact = [x * n / self.n for x in counts]
        whole = [math.floor(x) for x in exact]
        for i in sorted(range(4), key=lambda i: whole[i] - exact[i])[: n - sum(whole)]:
            whole[i] += 1
        return Discordance(*whole)


def discordance(reference_correct: ArrayLike, candidate_correct: ArrayLike) -> Discordance:
    """Count the paired table from two per-image correctness vectors (same images, same order)."""
    ref = np.asarray(reference_correct).astype(bool).ravel()
    got = np.asarray(candidate_correct).astype(bool).ravel()
    if ref.shape != got.shape:
        raise PairedStatsError(f"correctness vectors differ in length: reference {ref.size}, candidate {got.size}")
    if ref.size == 0:
        raise PairedStatsError("no images to compare: both correctness vectors are empty")
    return Discordance(
        int((ref & got).sum()), int((ref & ~got).sum()), int((~ref & got).sum()), int((~ref & ~got).sum())
    )


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level (0.95 -> 1.95996...)."""
    if not 0.0 < confidence < 1.0:
        raise PairedStatsError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """metrics.wilson_interval in percent, with the bound at 0 or 100 exact when k is 0 or n
    (its floating-point upper bound at k == n can fall a hair short of 100)."""
    low, high = wilson_interval(successes, n, z)
    return (0.0 if successes == 0 else low), (100.0 if successes == n else high)


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """A root of decreasing ``f`` on [lo, hi] with f(lo) >= 0 >= f(hi), to 1e-12."""
    for _ in range(200):
        if hi - lo < 1e-12:
            break
        mid = (lo + hi) / 2.0
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def tango_interval(t: Discordance, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's (1998) score interval for the drop, in points.

    For a hypothesised drop delta (a proportion) the score statistic is
    Z(delta) = (b - c - n*delta) / sqrt(n * (2*q + delta*(1 - delta))), where q is the maximum
    likelihood estimate of P(only the candidate right) restricted to drop = delta, the root of
    2n q^2 + W q - c delta (1 - delta) = 0 with W = -b - c + (2n - b + c) delta, i.e.
    q = (-W + sqrt(W^2 + 8 n c delta (1 - delta))) / (4n) (Tango 1998's statistic and restricted
    estimate, as restated by Fagerland, Lydersen & Laake 2014). Z decreases in delta; the limits
    solve Z = +z (lower) and Z = -z (upper), found by bisection on [-1, 1] to 1e-12.
    """
    z = z_value(confidence)
    n, b, c = t.n, t.reference_only, t.candidate_only

    def score(delta: float) -> float:
        w = -b - c + (2 * n - b + c) * delta
        q = (-w + math.sqrt(max(0.0, w * w + 8 * n * c * delta * (1 - delta)))) / (4 * n)
        variance = n * (2 * q + delta * (1 - delta))
        numerator = b - c - n * delta
        if variance <= 0:
            return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
        return numerator / math.sqrt(variance)

    estimate = (b - c) / n
    low = -1.0 if score(-1.0) <= z else _bisect(lambda d: score(d) - z, -1.0, estimate)
    high = 1.0 if score(1.0) >= -z else _bisect(lambda d: score(d) + z, estimate, 1.0)
    return 100.0 * low, 100.0 * high


def newcombe_interval(t: Discordance, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for the drop, in points (closed form).

    With p1, p2 the reference's and candidate's accuracies and (l1, u1), (l2, u2) their Wilson
    score intervals, theta = p1 - p2 and
    lower = theta - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2),
    upper = theta + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2),
    where phi = C / sqrt((a+b)(c+d)(a+c)(b+d)) with C = ad - bc - n/2 if ad - bc > n/2,
    0 if 0 <= ad - bc <= n/2, ad - bc if negative, and phi = 0 when a margin is empty.
    """
    z = z_value(confidence)
    a, b, c, d, n = t.both_right, t.reference_only, t.candidate_only, t.both_wrong, t.n
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = (x / 100.0 for x in _wilson(a + b, n, z))
    l2, u2 = (x / 100.0 for x in _wilson(a + c, n, z))
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    theta = p1 - p2
    low = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = theta + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return 100.0 * max(-1.0, low), 100.0 * min(1.0, high)


def as_method(name: str) -> Method:
    """``name`` (the policy's ``paired_method``, a string) as an interval :data:`Method`."""
    if name == "tango":
        return "tango"
    if name == "newcombe":
        return "newcombe"
    raise PairedStatsError(f"unknown interval method {name!r}: use 'tango' or 'newcombe'")


def drop_interval(t: Discordance, confidence: float = 0.95, method: Method = DEFAULT_METHOD) -> tuple[float, float]:
    """The confidence interval of the drop in points by ``method`` ("tango" or "newcombe")."""
    if method == "tango":
        return tango_interval(t, confidence)
    if method == "newcombe":
        return newcombe_interval(t, confidence)
    raise PairedStatsError(f"unknown interval method {method!r}: use 'tango' or 'newcombe'")


def _images_needed(decides: Callable[[int], bool], n: int, limit: int = MAX_IMAGES) -> int | None:
    """Smallest m > n (doubling, then bisection) with ``decides(m)``; None if not by ``limit``."""
    lo, hi = n, 2 * n
    while not decides(hi):
        if hi >= limit:
            return None
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decides(mid):
            hi = mid
        else:
            lo = mid
    return hi


Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class PairedVerdict:
    """The paired gate's decision; drops and bounds in points (reference minus candidate)."""

    verdict: Verdict
    drop: float
    low: float
    high: float
    tolerance_points: float
    confidence: float
    method: Method
    discordance: Discordance
    images_needed: int | None = None  # inconclusive only: estimated images that would decide


def paired_verdict(t: Discordance, tolerance_points: float, confidence: float = 0.95,
                   method: Method = DEFAULT_METHOD) -> PairedVerdict:
    """pass / fail / inconclusive for "the drop is at most ``tolerance_points``".

    pass: the upper bound is strictly below the tolerance; fail: the lower bound is strictly
    above it; inconclusive otherwise (a bound exactly on the tolerance decides nothing). With a
    95% two-sided interval each decisive verdict is a one-sided test at 2.5%. For inconclusive,
    ``images_needed`` *estimates* how many images would decide, assuming the four observed rates
    (both right, only reference, only candidate, both wrong) stay the same as n grows: the
    smallest n found by doubling then bisection at which the same rule decides. Real data will
    vary, so it is a planning figure, not a promise; None when even 10 million images would not
    decide (the observed drop sits on the tolerance).
    """
    if not math.isfinite(tolerance_points):
        raise PairedStatsError(f"tolerance must be a finite number of points, got {tolerance_points}")

    def judge(table: Discordance) -> tuple[Verdict, float, float]:
        low, high = drop_interval(table, confidence, method)
        verdict: Verdict = "pass" if high < tolerance_points else "fail" if low > tolerance_points else "inconclusive"
        return verdict, low, high

    verdict, low, high = judge(t)
    needed = None
    if verdict == "inconclusive":
        needed = _images_needed(lambda m: judge(t.scaled(m))[0] != "inconclusive", t.n)
    return PairedVerdict(verdict, t.drop, low, high, float(tolerance_points), confidence, method, t, needed)


@dataclass(frozen=True)
class AgreementVerdict:
    """Top-1 agreement with the reference against a minimum, in percent (Wilson interval)."""

    verdict: Verdict
    agreement: float
    low: float
    high: float
    min_percent: float
    confidence: float
    images: int
    images_needed: int | None = None


def agreement_verdict(agree_count: int, n: int, min_percent: float, confidence: float = 0.95) -> AgreementVerdict:
    """pass when the Wilson lower bound >= ``min_percent``, fail when the upper bound is below it.

    Inconclusive otherwise, with the estimated images that would decide at the same agreement
    rate (same search as :func:`paired_verdict`; None when the rate sits on the minimum, e.g.
    100% agreement against a 100% minimum, whose lower bound never reaches 100).
    """
    if n <= 0 or not 0 <= agree_count <= n or int(agree_count) != agree_count:
        raise PairedStatsError(f"agreement needs 0 <= agree_count <= n and n > 0, got {agree_count} of {n}")
    z = z_value(confidence)

    def judge(k: int, m: int) -> tuple[Verdict, float, float]:
        low, high = _wilson(k, m, z)
        verdict: Verdict = "pass" if low >= min_percent else "fail" if high < min_percent else "inconclusive"
        return verdict, low, high

    verdict, low, high = judge(agree_count, n)
    needed = None
    if verdict == "inconclusive":
        needed = _images_needed(lambda m: judge(round(agree_count * m / n), m)[0] != "inconclusive", n)
    return AgreementVerdict(verdict, 100.0 * agree_count / n, low, high, float(min_percent), confidence, n, needed)


@dataclass(frozen=True)
class UnpairedVerdict:
    """A reference's accuracy on some images against a candidate's on other images (independent
    samples), in points: ``drop`` = reference - candidate, its interval, and the verdict."""

    verdict: Verdict
    drop: float
    low: float
    high: float
    tolerance_points: float
    images_needed: int | None = None  # inconclusive only: both groups grown in proportion


def unpaired_verdict(reference_correct: int, reference_n: int, candidate_correct: int, candidate_n: int,
                     tolerance_points: float, confidence: float = 0.95) -> UnpairedVerdict:
    """pass / fail / inconclusive for "the drop is at most ``tolerance_points``" between two
    independent samples, with Newcombe's hybrid score interval for independent proportions
    (Newcombe 1998, Statistics in Medicine 17:873-890, method 10: square-and-add of the two Wilson
    intervals). Same decision rule as :func:`paired_verdict`; without the pairing the images'
    difficulty does not cancel, so it needs far more images to decide."""
    if min(reference_n, candidate_n) <= 0 or not (0 <= reference_correct <= reference_n
                                                  and 0 <= candidate_correct <= candidate_n):
        raise PairedStatsError(f"unpaired comparison needs counts within their totals, got {reference_correct} of "
                               f"{reference_n} and {candidate_correct} of {candidate_n}")
    if not math.isfinite(tolerance_points):
        raise PairedStatsError(f"tolerance must be a finite number of points, got {tolerance_points}")
    z = z_value(confidence)
    total = reference_n + candidate_n

    def judge(scale: float) -> tuple[Verdict, float, float, float]:
        k1, n1 = round(reference_correct * scale), max(1, round(reference_n * scale))
        k2, n2 = round(candidate_correct * scale), max(1, round(candidate_n * scale))
        p1, p2 = 100.0 * k1 / n1, 100.0 * k2 / n2
        (l1, u1), (l2, u2) = _wilson(k1, n1, z), _wilson(k2, n2, z)
        drop = p1 - p2
        low, high = drop - math.hypot(p1 - l1, u2 - p2), drop + math.hypot(u1 - p1, p2 - l2)
        verdict: Verdict = "pass" if high < tolerance_points else "fail" if low > tolerance_points else "inconclusive"
        return verdict, drop, low, high

    verdict, drop, low, high = judge(1.0)
    needed = None
    if verdict == "inconclusive":
        needed = _images_needed(lambda m: judge(m / total)[0] != "inconclusive", total)
    return UnpairedVerdict(verdict, drop, low, high, float(tolerance_points), needed)
