"""The data path's speed-ups keep its results: normalize() image by image on large batches is
still bit-exact with torchvision, and PreparedDataset.batches(prefetch=True) yields exactly what
the plain generator yields, stops cleanly when abandoned, and leaves no thread behind."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from harness.data import DataError, PreparedDataset, normalize
from harness.data.normalization import _NORMALIZE_BLOCK_BYTES
from harness.specs import PreprocessSpec

torch = pytest.importorskip("torch", reason="torch is the reference for normalization parity")
T = pytest.importorskip("torchvision.transforms", reason="torchvision is the normalization reference")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference(batch: np.ndarray) -> np.ndarray:
    return T.Normalize(MEAN, STD)(torch.from_numpy(batch).float().div(255)).numpy()


def test_normalize_large_batches_image_by_image_stays_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = _NORMALIZE_BLOCK_BYTES // (4 * 3 * 224 * 224) + 2  # just past the blocked threshold
    batch = rng.integers(0, 256, (n, 3, 224, 224), dtype=np.uint8)
    batch[0] = np.arange(3 * 224 * 224).reshape(3, 224, 224) % 256  # every value in every channel
    got = normalize(batch, MEAN, STD)
    assert got.nbytes > _NORMALIZE_BLOCK_BYTES
    assert got.dtype == np.float32 and got.shape == batch.shape and got.flags.c_contiguous
    assert np.array_equal(got, reference(batch))
    # From a memmap (the cache), as PreparedDataset.batches feeds it.
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=batch.shape)
    mm[:] = batch
    assert np.array_equal(normalize(mm, MEAN, STD), got)
    small = batch[:3]
    assert np.array_equal(normalize(small, MEAN, STD), got[:3])


def _prepared(count: int, seed: int = 1) -> PreparedDataset:
    images = np.random.default_rng(seed).integers(0, 256, (count, 3, 8, 8), dtype=np.uint8)
    spec = PreprocessSpec(resize=8, crop=8, mean=MEAN, std=STD)
    return PreparedDataset(
        path=Path("."), key="k", images=images, labels=np.zeros(count, dtype=np.int64),
        names=tuple(f"{i}.JPEG" for i in range(count)), spec=spec, listing=None,  # type: ignore[arg-type]
    )


def _normalize_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("normalize")]


@pytest.mark.parametrize("count,bs", [(10, 3), (9, 3), (1, 4), (0, 2), (5, 5)])
def test_prefetch_yields_what_the_plain_generator_yields(count: int, bs: int) -> None:
    prepared = _prepared(count)
    plain = list(prepared.batches(bs))
    ahead = list(prepared.batches(bs, prefetch=True))
    assert [s for s, _ in ahead] == [s for s, _ in plain] == list(range(0, count, bs))
    for (_, a), (_, b) in zip(plain, ahead, strict=True):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    # Each batch is its own array (a consumer may keep them).
    assert len({id(b) for _, b in ahead}) == len(ahead)
    assert not _normalize_threads()


def test_prefetch_stops_cleanly_when_the_consumer_stops_early() -> None:
    prepared = _prepared(40)
    gen = cast(Generator[tuple[int, np.ndarray], None, None], prepared.batches(4, prefetch=True))
    start, first = next(gen)
    assert start == 0 and np.array_equal(first, normalize(prepared.images[:4], MEAN, STD))
    gen.close()
    assert not _normalize_threads()


def test_prefetch_checks_the_batch_size_too() -> None:
    with pytest.raises(DataError, match="batch_size must be positive"):
        next(_prepared(4).batches(0, prefetch=True))


@pytest.mark.parametrize("prefetch", [False, True], ids=["plain", "prefetch"])
@pytest.mark.parametrize("count,bs", [(10, 3), (9, 3), (1, 4), (0, 2), (5, 5), (12, 2)])
def test_reused_buffers_hold_each_batch_until_the_next_is_asked_for(count: int, bs: int, prefetch: bool) -> None:
    """reuse=True: the same values, in two buffers taken in turn; the batch the caller holds is never
    written while it holds it, even with the next batch being normalized in the background."""
    prepared = _prepared(count)
    expected = [b for _, b in prepared.batches(bs)]
    bases = set()
    got = 0
    for i, (start, batch) in enumerate(prepared.batches(bs, reuse=True, prefetch=prefetch)):
        assert start == i * bs and batch.flags.c_contiguous and batch.dtype == np.float32
        threading.Event().wait(0.01)  # the consumer works; a prefetch thread fills the next batch meanwhile
        assert np.array_equal(batch, expected[i])
        bases.add(id(batch.base if batch.base is not None else batch))
        got += 1
    assert got == len(expected) and len(bases) <= 2
    assert not _normalize_threads()


def test_normalize_into_a_wrong_buffer_is_refused() -> None:
    batch = np.zeros((2, 3, 8, 8), np.uint8)
    out = np.empty((2, 3, 8, 8), np.float32)
    assert normalize(batch, MEAN, STD, out=out) is out
    for bad in (np.empty((3, 3, 8, 8), np.float32), np.empty((2, 3, 8, 8), np.float64),
                np.empty((2, 3, 8, 16), np.float32)[..., ::2]):
        with pytest.raises(DataError, match="out must be a C-contiguous float32 array of shape"):
            normalize(batch, MEAN, STD, out=bad)
