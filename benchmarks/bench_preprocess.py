"""Preprocessing: the harness's cold build against the ModelZoo-style baseline, the warm rerun,
and the opt-in draft decode. All on imagenet-sample-1000 (1000 full-resolution JPEGs).

Cold builds start from an empty cache every round (made and removed outside the timed region);
the images are read once beforehand, so every contender reads them from the page cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchlib import RESNEXT, Board
from modelzoo_baseline import MEAN, STD, modelzoo_preprocess, read_bin
from PIL import Image

from harness.cache import ArtifactCache
from harness.data import (
    DatasetListing,
    PreparedDataset,
    list_dataset,
    normalize,
    prepare_dataset,
    preprocess_image,
)

torch = pytest.importorskip("torch", reason="the ModelZoo baseline runs torchvision's transforms")


def _image_paths(listing: DatasetListing) -> list[Path]:
    return [listing.image_dir / n for n in listing.names]


def _baseline(benchmark: Any, board: Board, listing: DatasetListing, fresh_dirs: Any, key: str, label: str,
              threads: int | None, rounds: int) -> Path:
    """Time the baseline; returns the directory of its last round (kept for the pixel check)."""
    paths = _image_paths(listing)
    kept: list[Path] = []

    def setup() -> tuple[tuple[Path], dict[str, Any]]:
        for old in kept:
            shutil.rmtree(old, ignore_errors=True)
        kept.clear()
        kept.append(fresh_dirs.new("modelzoo"))
        return (kept[0],), {}

    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        benchmark.pedantic(lambda out: modelzoo_preprocess(paths, out), setup=setup, rounds=rounds)
    finally:
        torch.set_num_threads(before)
    note = f"torch threads {threads or before}; writes {sum(p.stat().st_size for p in kept[0].iterdir()) / 1e6:.0f} MB"
    board.record(key, label, benchmark, len(paths), note)
    return kept[0]


def test_modelzoo_baseline_as_written(
    benchmark: Any, board: Board, listing_1000: DatasetListing, fresh_dirs: Any
) -> None:
    """The seed script as it runs: torch's default thread count (all cores for its tensor ops)."""
    _baseline(benchmark, board, listing_1000, fresh_dirs, "mz_script", "ModelZoo baseline (script as written)",
              threads=None, rounds=1)


def test_modelzoo_baseline_one_thread(
    benchmark: Any, board: Board, listing_1000: DatasetListing, prepared_1000: PreparedDataset, fresh_dirs: Any
) -> None:
    """The same script on one core (its fastest single-process form), then the pixel check."""
    out = _baseline(benchmark, board, listing_1000, fresh_dirs, "mz_1thread", "ModelZoo baseline (1 torch thread)",
                    threads=1, rounds=3)
    # Not timed: the baseline's float32 files equal normalize() of the harness's uint8 cache, bit for bit.
    for i, path in enumerate(_image_paths(listing_1000)):
        ours = normalize(np.asarray(prepared_1000.images[i : i + 1]), MEAN, STD)[0]
        theirs = read_bin(out, path)
        assert np.array_equal(ours, theirs), f"{path.name}: max |diff| {np.abs(ours - theirs).max()}"
    board.facts.append(
        f"pixels: the ModelZoo baseline's {len(listing_1000)} float32 .bin files equal normalize(uint8 cache) "
        "bit for bit"
    )


class Rounds:
    """One empty cache per round, made in the untimed setup; the previous round's is removed then,
    so the last round's stays for the checks after the benchmark (also when timing is disabled)."""

    def __init__(self, fresh_dirs: Any, prefix: str):
        self.fresh_dirs, self.prefix = fresh_dirs, prefix
        self.last: ArtifactCache | None = None

    def setup(self) -> tuple[tuple[ArtifactCache], dict[str, Any]]:
        if self.last is not None:
            shutil.rmtree(self.last.root, ignore_errors=True)
        self.last = ArtifactCache(self.fresh_dirs.new(self.prefix))
        return (self.last,), {}


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
def test_prepare_cold(
    benchmark: Any, board: Board, listing_1000: DatasetListing, prepared_1000: PreparedDataset, fresh_dirs: Any,
    workers: int,
) -> None:
    """prepare_dataset from an empty cache: decode, resize, crop, uint8 memmap, fsync, publish."""
    rounds = Rounds(fresh_dirs, f"cold-w{workers}")
    built = benchmark.pedantic(
        lambda cache: prepare_dataset(listing_1000, RESNEXT, cache, workers=workers), setup=rounds.setup, rounds=3,
    )
    board.record(f"pre_w{workers}", f"preprocess cold build, {workers} worker{'s' if workers > 1 else ''}",
                 benchmark, len(listing_1000), "uint8 memmap cache, 150 MB")
    # Not timed: the cache bytes do not depend on the worker count.
    assert np.array_equal(np.asarray(built.images), np.asarray(prepared_1000.images)), f"workers={workers}"


def test_prepare_warm_rerun(
    benchmark: Any, board: Board, sample_1000: Path, prepared_1000: PreparedDataset, bench_cache: ArtifactCache
) -> None:
    """A second run's whole data stage: list the directory, join labels, stat every image, open the entry."""

    def data_stage() -> PreparedDataset:
        listing = list_dataset(sample_1000 / "images", sample_1000 / "labels.txt")
        return prepare_dataset(listing, RESNEXT, bench_cache)

    warm = benchmark.pedantic(data_stage, rounds=20, warmup_rounds=1)
    assert warm.key == prepared_1000.key
    board.record("warm_rerun", "warm rerun: list + cache check", benchmark, len(prepared_1000))


def test_draft_decode_speed_and_pixels(
    benchmark: Any, board: Board, listing_1000: DatasetListing, prepared_1000: PreparedDataset, fresh_dirs: Any
) -> None:
    """The opt-in draft decode, one worker, against the exact decode's cache bytes."""
    rounds = Rounds(fresh_dirs, "draft")
    built = benchmark.pedantic(
        lambda cache: prepare_dataset(listing_1000, RESNEXT, cache, workers=1, decode="draft"),
        setup=rounds.setup, rounds=3,
    )
    board.record("draft_w1", "preprocess cold build, draft decode, 1 worker", benchmark, len(listing_1000))

    # Not timed from here on: which images changed, by how much, and the speed-up on those.
    sizes = {}
    for name in listing_1000.names:
        with Image.open(listing_1000.image_dir / name) as img:
            sizes[name] = min(img.size)
    large = [n for n, s in sizes.items() if s >= 2 * RESNEXT.resize]
    diff = np.abs(np.asarray(built.images).astype(np.int16) - np.asarray(prepared_1000.images).astype(np.int16))
    changed = [listing_1000.names[i] for i in np.flatnonzero(diff.reshape(len(diff), -1).max(axis=1))]
    assert set(changed) <= set(large), "draft changed an image whose shorter side is < 2 x resize"
    best = {}
    for decode in ("exact", "draft"):
        seconds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for name in large:
                preprocess_image(listing_1000.image_dir / name, RESNEXT, decode)
            seconds.append(time.perf_counter() - t0)
        best[decode] = min(seconds)
    changed_diff = diff[[listing_1000.names.index(n) for n in changed]] if changed else diff[:0]
    found = {
        "changed": len(changed),
        "large": len(large),
        "max_abs_diff": int(diff.max()),
        "mean_abs_diff_changed": float(changed_diff.mean()) if changed else 0.0,
        "speedup_on_large": best["exact"] / best["draft"] if large else float("nan"),
    }
    benchmark.extra_info.update(found)
    board.facts.append(
        f"draft decode changed {found['changed']} of {len(listing_1000)} images (of the {found['large']} whose "
        f"shorter side >= {2 * RESNEXT.resize}); max |diff| {found['max_abs_diff']}/255, mean |diff| on changed "
        f"images {found['mean_abs_diff_changed']:.2f}/255; on those files draft preprocesses "
        f"{found['speedup_on_large']:.1f}x faster"
    )
