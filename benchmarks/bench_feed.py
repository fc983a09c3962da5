"""Feeding: the uint8 cache to the batches a session takes, on one core.

Every round opens the cache entry again (not timed), so the memmap's pages are mapped anew, as
in a run that reads each image once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from benchlib import RESNEXT, Board

from harness.cache import ArtifactCache
from harness.data import DatasetListing, PreparedDataset, prepare_dataset


def _reopen(listing: DatasetListing, cache: ArtifactCache) -> PreparedDataset:
    return prepare_dataset(listing, RESNEXT, cache)


@pytest.mark.parametrize("reuse", [True, False], ids=["reused", "new-arrays"])
@pytest.mark.parametrize("bs", [8, 64], ids=["bs8", "bs64"])
def test_feed_normalized(
    benchmark: Any, board: Board, listing_1000: DatasetListing, prepared_1000: PreparedDataset,
    bench_cache: ArtifactCache, bs: int, reuse: bool,
) -> None:
    """PreparedDataset.batches: uint8 memmap -> normalized float32 (N, 3, 224, 224) batches, into
    two reused buffers as Workbench.run takes them, or a new array per batch."""

    def feed(prepared: PreparedDataset) -> int:
        seen = 0
        for _start, batch in prepared.batches(bs, reuse=reuse):
            seen += batch.shape[0]
        return seen

    seen = benchmark.pedantic(
        feed, setup=lambda: ((_reopen(listing_1000, bench_cache),), {}), rounds=15, warmup_rounds=1
    )
    assert seen == len(prepared_1000)
    name, what = (f"feed_f32_bs{bs}", "reused buffers") if reuse else (f"feed_f32_new_bs{bs}", "a new array each")
    board.record(name, f"feed cache -> normalized float32, bs{bs}, {what}", benchmark, len(prepared_1000), "one core")


@pytest.mark.parametrize("bs", [8, 64], ids=["bs8", "bs64"])
def test_feed_uint8(
    benchmark: Any, board: Board, listing_1000: DatasetListing, prepared_1000: PreparedDataset,
    bench_cache: ArtifactCache, bs: int,
) -> None:
    """For uint8-input models: each batch copied out of the memmap (a view would cost nothing here
    and move the page faults into the session)."""

    def feed(prepared: PreparedDataset) -> int:
        seen = 0
        images = prepared.images
        for start in range(0, len(prepared), bs):
            batch = np.array(images[start : start + bs])
            seen += batch.shape[0]
        return seen

    seen = benchmark.pedantic(
        feed, setup=lambda: ((_reopen(listing_1000, bench_cache),), {}), rounds=15, warmup_rounds=1
    )
    assert seen == len(prepared_1000)
    board.record(f"feed_u8_bs{bs}", f"feed cache -> uint8 copy, bs{bs}", benchmark,
                 len(prepared_1000), "one core")
