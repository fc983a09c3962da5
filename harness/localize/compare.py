"""Per-tensor comparison of a candidate with the reference, and what the profile of errors says.

Metrics (the reference is the ground truth ``r``, the candidate ``c``, over every element of the
tensor on every compared image, accumulated batch by batch: float32 element-wise, float64 sums):

- cosine similarity of the flattened tensors (1.0 when both are all zeros, as msit has it);
- max abs diff ``max |c - r|``;
- max relative diff ``max |c - r| / |r|`` over the elements where ``|r|`` exceeds float32's
  epsilon (msit's ``max_relative_error``; the others contribute 0);
- RMSE ``sqrt(mean((c - r)^2))``;
- mean relative error: the mean of ``|c - r| / |r|`` over all elements, 0 where ``|r|`` is at most
  float32's epsilon (msit's ``MeanRelativeError``).

A candidate tensor holding NaN or Inf (an fp16 overflow, typically) has cosine NaN and is over
threshold whatever the other numbers say.

Classification of the profile after the first divergent tensor (``classify``): *accumulated* when
some later tensor is ``growth_factor`` times further from the reference (1 - cosine) than the
first divergent one, i.e. the error grows from there; *local* otherwise: it stays at one node's
size or recovers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.localize.thresholds import Thresholds

EPS = float(np.finfo(np.float32).eps)


class ShapeMismatch(HarnessError, ValueError):
    """A candidate tensor has another number of elements than the reference's of the same name."""


@dataclass(frozen=True)
class Metrics:
    """The five numbers of one tensor, and how many elements and non-finite values they cover."""

    cosine: float
    max_abs_diff: float
    max_relative_diff: float
    rmse: float
    mean_relative_error: float
    elements: int
    nonfinite: int = 0


class TensorStats:
    """Running sums from which :class:`Metrics` are computed; fed one batch of images at a time."""

    def __init__(self) -> None:
        self.ref_sq = self.cand_sq = self.diff_sq = self.rel_sum = 0.0
        self.max_abs = self.max_rel = 0.0
        self.elements = self.nonfinite = 0
        self.shape: tuple[int, ...] | None = None

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        # float32 element-wise work, float64 sums: float64 copies of every tensor cost 3x the time,
        # and a float32 dot product (BLAS) loses 1 - cosine in its accumulation.
        r = np.asarray(reference, dtype=np.float32).ravel()
        c = np.asarray(candidate, dtype=np.float32).ravel()
        if r.size != c.size:
            raise ShapeMismatch(f"reference tensor of shape {np.shape(reference)} ({r.size} elements), candidate "
                                f"{np.shape(candidate)} ({c.size}): the same name, not the same tensor")
        if self.shape is None:
            self.shape = tuple(np.shape(reference))[1:]
        if not np.isfinite(c).all():
            finite = np.isfinite(c)
            self.nonfinite += int(c.size - np.count_nonzero(finite))
            c = np.where(finite, c, np.float32(0.0))
        diff = c - r
        absdiff = np.abs(diff)
        absref = np.abs(r)
        # |c - r| / |r| where |r| > eps, else 0 (dividing by inf)
        rel = absdiff / np.where(absref > EPS, absref, np.float32(np.inf))
        self.ref_sq += float(np.square(r).sum(dtype=np.float64))
        self.cand_sq += float(np.square(c).sum(dtype=np.float64))
        self.diff_sq += float(np.square(diff).sum(dtype=np.float64))
        self.rel_sum += float(rel.sum(dtype=np.float64))
        if r.size:
            self.max_abs = max(self.max_abs, float(absdiff.max()))
            self.max_rel = max(self.max_rel, float(rel.max()))
        self.elements += int(r.size)

    def metrics(self) -> Metrics:
        n = max(self.elements, 1)
        if self.nonfinite:
            cosine = math.nan
        elif self.ref_sq == 0.0 and self.cand_sq == 0.0:
            cosine = 1.0
        elif self.ref_sq == 0.0 or self.cand_sq == 0.0:
            cosine = 0.0
        else:
            # r.c = (|r|^2 + |c|^2 - |c - r|^2) / 2: exact where the difference is small, which is
            # where the digits of 1 - cosine matter.
            dot = (self.ref_sq + self.cand_sq - self.diff_sq) / 2.0
            cosine = max(-1.0, min(1.0, dot / math.sqrt(self.ref_sq * self.cand_sq)))
        inf_if_bad = math.inf if self.nonfinite else 0.0
        return Metrics(
            cosine=cosine,
            max_abs_diff=max(self.max_abs, inf_if_bad),
            max_relative_diff=max(self.max_rel, inf_if_bad),
            rmse=math.inf if self.nonfinite else math.sqrt(self.diff_sq / n),
            mean_relative_error=math.inf if self.nonfinite else self.rel_sum / n,
            elements=self.elements,
            nonfinite=self.nonfinite,
        )


def compare(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """The metrics of one pair of arrays (all images at once)."""
    stats = TensorStats()
    stats.update(reference, candidate)
    return stats.metrics()


def over_threshold(m: Metrics, thresholds: Thresholds) -> tuple[str, ...]:
    """Which of ``m``'s metrics are over ``thresholds`` (empty: within); non-finite values always are."""
    reasons = thresholds.over(m.cosine, m.rmse, m.mean_relative_error, m.max_abs_diff, m.max_relative_diff)
    return (("nonfinite",) if m.nonfinite else ()) + reasons


def distance(m: Metrics) -> float:
    """How far a tensor is from the reference, for the profile: 1 - cosine (inf when non-finite)."""
    return math.inf if math.isnan(m.cosine) else 1.0 - m.cosine


def classify(profile: Sequence[tuple[Metrics, bool]], first: int | None, thresholds: Thresholds) -> str:
    """``none``, ``local`` or ``accumulated`` for a profile of (metrics, over threshold) in
    topological order whose first over-threshold entry is ``first`` (None: none is)."""
    if first is None:
        return "none"
    start = distance(profile[first][0])
    after = [distance(m) for m, _ in profile[first + 1:]]
    if not after:
        return "local"
    worst = max(after)
    if math.isinf(worst) and not math.isinf(start):
        return "accumulated"
    # A first divergence of exactly 1 - cosine == 0 (over on another metric): any growth counts.
    return "accumulated" if worst > thresholds.growth_factor * start and worst > 0.0 else "local"
