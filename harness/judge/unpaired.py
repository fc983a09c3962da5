"""Predictions the torch reference was not computed on are judged too: the unpaired gate.

A ``--predictions`` folder may hold images that ``--imagenet`` does not (one device folder of a
multi-device run, a folder holding part of the predicted set): the paired gate decides only the
images it pairs. Every scored prediction must be judged, so the others get the ``unpaired`` gate:
the reference's accuracy on the paired images against the predictions' accuracy on the unpaired
ones, two independent samples (harness.judge.paired.unpaired_verdict), with the same tolerance
and three-way rule as the paired gate. Where the predictions cover the full validation set the
published gate decides every image and this gate is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness.judge.gates import Gate, drop_gate
from harness.judge.paired import unpaired_verdict
from harness.specs import Policy
from harness.specs.policy import AccuracyTolerance


def unpaired_gates(reference_correct: Mapping[str, np.ndarray], unpaired_correct: Mapping[str, np.ndarray],
                   policy: Policy, tolerance: AccuracyTolerance) -> list[Gate]:
    """``unpaired_top1`` / ``unpaired_top5``: per-image correctness of the reference on the paired
    images against the predictions' on the unpaired images (per metric, as from topk_correct)."""
    gates = []
    confidence = policy.accuracy.confidence
    for metric, ref in reference_correct.items():
        ref, got = np.asarray(ref), np.asarray(unpaired_correct[metric])
        ref_acc = 100.0 * float(ref.mean()) if ref.size else 0.0
        allowed = tolerance.points_for(ref_acc)
        v = unpaired_verdict(int(ref.sum()), ref.size, int(got.sum()), got.size, allowed, confidence)
        values = {f"unpaired_drop_{metric}": v.drop, f"unpaired_drop_{metric}_low95": v.low,
                  f"unpaired_drop_{metric}_high95": v.high}
        gates.append(drop_gate(
            f"unpaired_{metric}", metric, v, values, ref.size + got.size, policy,
            detail=(f"{got.size:,} predicted images have no torch reference here (not among --imagenet's images): "
                    f"their {metric} {100.0 * float(got.mean()):.3f}% against the reference's {ref_acc:.3f}% on the "
                    f"{ref.size:,} paired images, drop {v.drop:.3f} points, {confidence:.0%} interval "
                    f"[{v.low:.3f}, {v.high:.3f}] (Newcombe hybrid score, independent samples), tolerance "
                    f"{allowed:.3f} points ({tolerance.describe()})")))
    return gates
