"""What the opt-in draft decode does to accuracy: efficientnet_lite0 (real weights) on the images
draft changes, exact against draft.

Timed: building the draft cache of imagenet-val-1300 (all cores). Not timed: which images draft
changed there and in imagenet-sample-1000 (full resolution), and the model's top-1 on those
images both ways. imagenet-val-1300 holds real validation images with real labels, but they were
pre-squashed to 227x227 by their publisher, so draft (which only engages on files whose shorter
side is at least twice the resize target, 512 here) cannot change any of them: the effect there
is zero by construction, which the check below confirms byte for byte. imagenet-sample-1000 is
full resolution and shows the effect, but holds train images: its top-1 is for the exact-vs-draft
difference only, never an accuracy claim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from benchlib import MODEL_BATCH, Board

from harness.cache import ArtifactCache
from harness.data import (
    DatasetListing,
    PreparedDataset,
    list_dataset,
    normalize,
    prepare_dataset,
)
from harness.run.workbench import Compiled
from harness.specs import load_models

SPEC = load_models()["efficientnet_lite0"].preprocess


def _changed(exact: PreparedDataset, draft: PreparedDataset) -> np.ndarray:
    a = np.asarray(exact.images).reshape(len(exact), -1)
    b = np.asarray(draft.images).reshape(len(draft), -1)
    return np.flatnonzero((a != b).any(axis=1))


def _top1(effnet: Compiled, images: np.ndarray) -> np.ndarray:
    with effnet.open() as session:
        out = [session.infer(normalize(images[s : s + MODEL_BATCH], SPEC.mean, SPEC.std))
               for s in range(0, len(images), MODEL_BATCH)]
    return np.concatenate(out).argmax(axis=1) if out else np.zeros(0, dtype=np.int64)


def _effect(effnet: Compiled, exact: PreparedDataset, draft: PreparedDataset, name: str) -> str:
    changed = _changed(exact, draft)
    total = len(exact)
    if len(changed) == 0:
        return f"{name}: draft changed 0 of {total} images (byte-identical cache): top-1 effect exactly 0"
    labels = exact.labels[changed]
    top_exact = _top1(effnet, np.asarray(exact.images[changed]))
    top_draft = _top1(effnet, np.asarray(draft.images[changed]))
    right_exact, right_draft = int((top_exact == labels).sum()), int((top_draft == labels).sum())
    agree = int((top_exact == top_draft).sum())
    return (
        f"{name}: draft changed {len(changed)} of {total} images; on them efficientnet_lite0 top-1 "
        f"exact {right_exact}/{len(changed)}, draft {right_draft}/{len(changed)} (same prediction on "
        f"{agree}); top-1 over all {total} images moves {100 * (right_draft - right_exact) / total:+.2f} points"
    )


def test_draft_top1_effect(
    benchmark: Any, board: Board, val_1300: Path, listing_1000: DatasetListing, prepared_effnet: PreparedDataset,
    bench_cache: ArtifactCache, effnet: Compiled, tmp_path: Path,
) -> None:
    val = list_dataset(val_1300)
    val_exact = prepare_dataset(val, SPEC, bench_cache)
    val_draft = benchmark.pedantic(
        lambda cache: prepare_dataset(val, SPEC, cache, decode="draft"),
        setup=lambda: ((ArtifactCache(tmp_path / f"draft-{len(list(tmp_path.iterdir()))}"),), {}),
        rounds=1,
    )
    board.record("draft_val1300", "preprocess cold build, draft decode, imagenet-val-1300, 2 workers",
                 benchmark, len(val), "227x227 files: draft never engages")
    sample_draft = prepare_dataset(listing_1000, SPEC, bench_cache, decode="draft")
    effects = [
        _effect(effnet, val_exact, val_draft, "imagenet-val-1300 (real val, 227x227)"),
        _effect(effnet, prepared_effnet, sample_draft, "imagenet-sample-1000 (full-resolution train images)"),
    ]
    benchmark.extra_info["effects"] = effects
    board.facts.extend(effects)
