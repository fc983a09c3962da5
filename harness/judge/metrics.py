"""Top-k accuracy, paired agreement between two models, and numerical parity of logits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError


class MetricsError(HarnessError, ValueError):
    """Logits and labels do not fit together."""


def topk_predictions(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """(N, C) logits -> (N, k) class indices, best first (ties broken by lower index)."""
    if logits.ndim != 2:
        raise MetricsError(f"expected (N, classes) logits, got shape {logits.shape}")
    k = min(k, logits.shape[1])
    # A stable sort of the negated logits: equal logits keep their class order, so ties go to the
    # lower index, as argmax breaks them (parity() uses argmax). argpartition would pick an
    # arbitrary subset of the classes tied at the k-th place (quantized or saturated outputs tie).
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


@dataclass(frozen=True)
class Accuracy:
    """Top-k accuracies in percent over ``count`` images."""

    count: int
    top1: float
    top5: float
    correct1: int
    correct5: int


def accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise MetricsError(f"logits {logits.shape} and labels {labels.shape} do not pair up")
    if logits.shape[0] == 0:
        raise MetricsError("no images to score")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise MetricsError(f"labels out of range [0, {logits.shape[1]}): min {labels.min()}, max {labels.max()}")
    top = topk_predictions(logits, 5)
    hit = top == labels[:, None]
    c1 = int(hit[:, 0].sum())
    c5 = int(hit.any(axis=1).sum())
    n = int(labels.shape[0])
    return Accuracy(count=n, top1=100.0 * c1 / n, top5=100.0 * c5 / n, correct1=c1, correct5=c5)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 100.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


@dataclass(frozen=True)
class Parity:
    """How closely two models' logits on the same inputs agree."""

    count: int
    max_abs_diff: float
    mean_abs_diff: float
    min_cosine: float
    top1_agreement: float  # percent of images with the same top-1 class
    # max over images of max|diff| / max|reference logit| of that image: the error relative to
    # the logits' own scale (random weights can make logits in the hundreds).
    max_rel_diff: float = 0.0

    def as_record(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "min_cosine": self.min_cosine,
            "top1_agreement": self.top1_agreement,
        }


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Compare ``candidate`` logits with ``reference`` logits row by row."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise MetricsError(f"cannot compare logits of shapes {reference.shape} and {candidate.shape}")
    ref = reference.astype(np.float64)
    got = candidate.astype(np.float64)
    diff = np.abs(ref - got)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = (ref * got).sum(axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(diff.max(axis=1) == 0, 1.0, 0.0))
    agree = (ref.argmax(axis=1) == got.argmax(axis=1)).mean()
    scale = np.abs(ref).max(axis=1)
    row_diff = diff.max(axis=1)
    rel = np.where(scale > 0, row_diff / np.where(scale > 0, scale, 1.0), np.where(row_diff == 0, 0.0, np.inf))
    return Parity(
        count=int(ref.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        min_cosine=float(cos.min()),
        top1_agreement=100.0 * float(agree),
        max_rel_diff=float(rel.max()),
    )
