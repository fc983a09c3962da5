"""Scoring a full ImageNet val run: 50,000 x 1000 logits to top-1/top-5."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from benchlib import Board

from harness.judge.metrics import accuracy

IMAGES, CLASSES = 50_000, 1000


@pytest.fixture(scope="module")
def logits_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, IMAGES)
    logits = rng.standard_normal((IMAGES, CLASSES), dtype=np.float32)
    # A model that is right about 3 times in 4, so top-k has real work to agree with.
    logits[np.arange(IMAGES), labels] += rng.choice([0.0, 4.0], IMAGES, p=[0.25, 0.75]).astype(np.float32)
    return logits, labels


def test_score_50000(benchmark: Any, board: Board, logits_and_labels: tuple[np.ndarray, np.ndarray]) -> None:
    """harness.judge.metrics.accuracy on (50000, 1000) float32 logits, as after a full val run."""
    logits, labels = logits_and_labels
    result = benchmark.pedantic(accuracy, args=(logits, labels), rounds=5, warmup_rounds=1)
    # Not timed: the scores agree with a plain argsort.
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    assert result.correct1 == int((top5[:, 0] == labels).sum())
    assert result.correct5 == int((top5 == labels[:, None]).any(axis=1).sum())
    figure = board.record("score", f"scoring {IMAGES:,} x {CLASSES} logits (metrics.accuracy)", benchmark, IMAGES)
    if figure is not None:
        board.facts.append(f"scoring {IMAGES:,} images takes {figure.seconds:.3f} s (target: well under 1 s)")
