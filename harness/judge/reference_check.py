"""Is the torch reference plausible enough to judge? (the reference gate, docs/reference-check.md)

The paired gate compares the compiled model with the torch reference on the same images; a
reference that is itself broken (random or wrong weights, labels off by one or in another class
order, another preprocessing recipe) makes a broken compiled model look fine. So before the
reference may judge, its own top-1/top-5 on the scored images is checked against the published
figure (``reference_top1`` / ``reference_top5``, recorded as ``reference_gate``):

- on the full validation set: within the accuracy tolerance of the published figure, either way
  (a reference far above it is another checkpoint than the one published);
- on anything else (a ``--limit`` subset, a user's folder): the published figure must lie within
  the reference's Wilson interval widened by ``[reference] subset_margin_points`` of
  fixtures/policy.toml on each side (the margin and the measurement behind it: docs/reference-check.md).

A failed reference gate fails the certification with a message that says the reference, not the
compiled model, is wrong, and what the cheap tests below say is the likely cause.
"""

from __future__ import annotations

import numpy as np

from harness.data.coverage import Coverage
from harness.judge.gates import SLACK, Gate
from harness.judge.metrics import Accuracy, topk_predictions, wilson_interval
from harness.judge.paired import z_value
from harness.specs import AccuracyRef, ReferencePolicy
from harness.specs.policy import AccuracyTolerance

# A labelling pattern is named only when it is clear: the shifted labels score at least this
# (percent) and this many times the labels as given.
_SHIFT_MIN_PERCENT, _SHIFT_FACTOR = 25.0, 5.0
# Another class order: same-label image pairs share a top-1 class this often, and this many times
# more often than pairs of different labels, on at least this many same-label pairs.
_ORDER_MIN_SHARE, _ORDER_FACTOR, _ORDER_MIN_PAIRS = 0.3, 10.0, 10
# One class predicted for at least this fraction of the images: untrained or broken weights.
_COLLAPSED_SHARE = 0.2
WRONG_REFERENCE = ("the torch reference itself is wrong (its weights, the labels or the preprocessing recipe), "
                   "not the compiled model: nothing is certified against it")


def _pairs(counts: np.ndarray) -> int:
    return int((counts * (counts - 1) // 2).sum())


def _order_pattern(predicted: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """(share of same-label pairs with one top-1 class, share of other pairs with one, same-label pairs)."""
    same_label = _pairs(np.unique(labels, return_counts=True)[1])
    same_both = _pairs(np.unique(np.stack([labels, predicted]), axis=1, return_counts=True)[1])
    same_pred = _pairs(np.unique(predicted, return_counts=True)[1])
    n = len(labels)
    other_pairs = n * (n - 1) // 2 - same_label
    within = same_both / same_label if same_label else 0.0
    across = (same_pred - same_both) / other_pairs if other_pairs else 0.0
    return within, across, same_label


def likely_cause(logits: np.ndarray, labels: np.ndarray) -> str:
    """What cheap tests on the reference's own predictions say about why it scores as it does:
    labels shifted by one, labels in another class order, one class predicted for most images,
    or none of these (then: another checkpoint or preprocessing recipe)."""
    labels = np.asarray(labels)
    predicted = topk_predictions(np.asarray(logits), 1)[:, 0]
    as_given = 100.0 * float(np.mean(predicted == labels)) if len(labels) else 0.0
    for shift in (-1, 1):
        shifted = 100.0 * float(np.mean(predicted == labels + shift))
        if shifted >= _SHIFT_MIN_PERCENT and shifted >= _SHIFT_FACTOR * as_given:
            higher = "one higher" if shift == -1 else "one lower"
            return (f"the labels look off by one: with every label {shift:+d} the reference scores {shifted:.2f}% "
                    f"instead of {as_given:.2f}%, so the label file's classes are {higher} than the model's "
                    "(a 1-based label file, or one made for 1001 classes with background at 0?)")
    within, across, pairs = _order_pattern(predicted, labels)
    if pairs >= _ORDER_MIN_PAIRS and within >= _ORDER_MIN_SHARE and within >= _ORDER_FACTOR * max(across, 1e-9):
        return (f"the labels look like another class order: the reference gives one class to {within:.0%} of the "
                f"{pairs:,} pairs of images that share a label (and to {across:.2%} of other pairs), yet rarely "
                "the labelled one. This suite and torchvision/timm number classes in sorted-wnid order "
                "(fixtures/imagenet_wnids.txt, the ModelZoo's val_label.txt); convert the label file to it")
    top_class, top_count = np.unique(predicted, return_counts=True)
    if len(top_count) and top_count.max() >= _COLLAPSED_SHARE * len(predicted):
        return (f"the reference predicts class {int(top_class[top_count.argmax()])} for "
                f"{top_count.max() / len(predicted):.0%} of the images: untrained, random or broken weights")
    return ("no labelling pattern found: likely another checkpoint than the published one, or another "
            "preprocessing recipe (interpolation, resize, crop, mean/std: see --preprocess and fixtures/models.toml)")


def reference_gates(reference: Accuracy, published: AccuracyRef, coverage: Coverage, tolerance: AccuracyTolerance,
                    policy: ReferencePolicy, confidence: float = 0.95, cause: str = "") -> list[Gate]:
    """``reference_top1`` (and ``reference_top5`` where a top-5 was published): is the torch
    reference's own accuracy on these images plausible beside the published figure? ``cause``:
    :func:`likely_cause`, added to a failed gate's message."""
    gates = []
    for metric, got, correct, ref in (("top1", reference.top1, reference.correct1, published.top1),
                                      ("top5", reference.top5, reference.correct5, published.top5)):
        if ref is None:
            continue
        values: dict[str, object] = {}
        if coverage.full:
            allowed = tolerance.points_for(ref)
            passed = abs(got - ref) <= allowed + SLACK
            how = (f"on the full validation set, {got - ref:+.3f} points from published {ref:.3f}% "
                   f"({published.source}); allowed {allowed:.3f} points either way ({tolerance.describe()})")
        else:
            low, high = wilson_interval(correct, reference.count, z_value(confidence))
            margin = policy.subset_margin_points
            passed = low - margin - SLACK <= ref <= high + margin + SLACK
            values = {f"reference_{metric}_low95": low, f"reference_{metric}_high95": high}
            how = (f"{confidence:.0%} Wilson interval [{low:.3f}, {high:.3f}]% on {reference.count:,} images "
                   f"({coverage.describe()}); the published {ref:.3f}% ({published.source}) must lie within it "
                   f"widened by {margin:g} points each side ([reference] subset_margin_points, fixtures/policy.toml)")
        verdict = "pass" if passed else "fail"
        detail = f"the torch reference scores {metric} {got:.3f}%: {how}: {verdict}"
        if not passed:
            detail += f". {WRONG_REFERENCE}" + (f". Likely cause: {cause}" if cause else "")
        gates.append(Gate(name=f"reference_{metric}", measured=got, threshold=ref, passed=passed, verdict=verdict,
                          values=values, detail=detail))
    return gates
