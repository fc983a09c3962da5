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
    n, classes = logits.shape
    k = min(k, classes)
    if n == 0 or k == 0:
        return np.zeros((n, k), dtype=np.intp)
    # Ties go to the lower index, as argmax breaks them (parity() uses argmax): the result equals
    # ``np.argsort(-logits, axis=1, kind="stable")[:, :k]``. argpartition alone would pick an
    # arbitrary subset of the classes tied at the k-th place (quantized or saturated outputs
    # tie), so it only finds the k-th largest value; the classes above it, and the lowest-index
    # ones equal to it, are the top k, ordered by a stable sort of k values per row (a full sort
    # of 50,000 x 1000 logits took ~2.4 s here).
    values = np.asarray(logits)
    if not np.isfinite(values).all():  # NaN has no place in an order: numpy's sort puts it last
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    kth = np.partition(values, classes - k, axis=1)[:, classes - k][:, None]
    at_least = values >= kth
    columns = np.empty((n, k), dtype=np.intp)
    plain = at_least.sum(axis=1) == k  # no tie across the k-th place: the top k are these
    columns[plain] = np.nonzero(at_least[plain])[1].reshape(-1, k)  # ascending class index per row
    if not plain.all():  # ties at the k-th place: the lowest-index tied classes fill the rest
        rows = values[~plain]
        edge = kth[~plain]
        tied = rows == edge
        room = k - (rows > edge).sum(axis=1, keepdims=True)
        columns[~plain] = np.nonzero((rows > edge) | (tied & (np.cumsum(tied, axis=1) <= room)))[1].reshape(-1, k)
    order = np.argsort(-np.take_along_axis(values, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


@dataclass(frozen=True)
class Accuracy:
    """Top-k accuracies in percent over ``count`` images."""

    count: int
    top1: float
    top5: float
    correct1: int
    correct5: int


def check_scorable(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` as an array, once it pairs up with ``logits`` row by row and every label is a class."""
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise MetricsError(f"logits {logits.shape} and labels {labels.shape} do not pair up")
    if logits.shape[0] == 0:
        raise MetricsError("no images to score")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise MetricsError(f"labels out of range [0, {logits.shape[1]}): min {labels.min()}, max {labels.max()}")
    return labels


def accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    labels = check_scorable(logits, labels)
    top = topk_predictions(logits, 5)
    hit = top == labels[:, None]
    c1 = int(hit[:, 0].sum())
    c5 = int(hit.any(axis=1).sum())
    n = int(labels.shape[0])
    return Accuracy(count=n, top1=100.0 * c1 / n, top5=100.0 * c5 / n, correct1=c1, correct5=c5)


def accuracy_of(correct: dict[str, np.ndarray]) -> Accuracy:
    """The :class:`Accuracy` of per-image correctness ``{"top1": bool (N,), "top5": ...}``
    (:func:`harness.judge.gates.topk_correct`), without ranking the logits again."""
    top1, top5 = np.asarray(correct["top1"]), np.asarray(correct["top5"])
    n = int(top1.shape[0])
    if n == 0:
        raise MetricsError("no images to score")
    c1, c5 = int(top1.sum()), int(top5.sum())
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
