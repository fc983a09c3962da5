"""The first pass: the images on which the candidate's final outputs differ most from the reference's.

Layer comparison is expensive (every tensor of every image), and an accuracy loss lives on the
images whose answer changed. So localisation compares layers on the ``count`` images (16 by
default) that rank first by:

1. top-1 disagreement (the reference's class is not the candidate's) first, then
2. the relative distance of the outputs, ``||c - r|| / ||r||`` per image, largest first;

ties broken by image order, so the selection is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.localize.compare import ShapeMismatch


@dataclass(frozen=True)
class Selection:
    """The chosen images (indices into the dataset, most divergent first) and every image's score."""

    indices: tuple[int, ...]
    disagree: np.ndarray  # bool per image: top-1 differs
    distance: np.ndarray  # relative L2 distance per image

    @property
    def disagreements(self) -> int:
        return int(self.disagree.sum())


def per_image(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 disagreement and relative distance, per image, of two (N, ...) output arrays."""
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    c = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if r.shape != c.shape:
        raise ShapeMismatch(f"reference outputs {r.shape} and candidate outputs {c.shape} differ in shape")
    disagree = r.argmax(axis=1) != np.where(np.isfinite(c), c, -np.inf).argmax(axis=1)
    norm = np.linalg.norm(r, axis=1)
    diff = np.linalg.norm(np.where(np.isfinite(c), c - r, np.inf), axis=1)
    distance = diff / np.where(norm > 0, norm, 1.0)
    return disagree, distance


def select(reference: np.ndarray, candidate: np.ndarray, count: int) -> Selection:
    """The ``count`` most divergent images of ``reference`` vs ``candidate`` final outputs."""
    disagree, distance = per_image(reference, candidate)
    # lexsort sorts by the last key first: disagreement, then distance (both descending), then index.
    order = np.lexsort((np.arange(len(distance)), -distance, ~disagree))
    return Selection(indices=tuple(int(i) for i in order[:count]), disagree=disagree, distance=distance)
