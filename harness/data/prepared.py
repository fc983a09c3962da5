"""The prepared dataset: every listed image decoded and resized once into a uint8 cache entry.

:func:`prepare_dataset` preprocesses a :class:`~harness.data.listing.DatasetListing` with a
:class:`~harness.specs.PreprocessSpec` (:mod:`harness.data.transforms`), in parallel over a pool
of worker processes that write rows straight into one raw uint8 NCHW file, inside an
:class:`~harness.cache.ArtifactCache` entry of kind ``dataset`` keyed by
:func:`dataset_cache_inputs`. :class:`PreparedDataset` memory-maps the entry and yields it in
normalized float32 batches (:mod:`harness.data.normalization`). Storing uint8 loses nothing:
after resize and crop the pixels *are* uint8, exactly what PIL produces.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import DEFAULT_CACHE_ENV, ArtifactCache, CacheError, free_bytes
from harness.data.errors import DataError
from harness.data.labels import name_bytes, shown
from harness.data.listing import DatasetListing
from harness.data.normalization import normalize
from harness.data.transforms import DECODE_MODES, preprocess_image
from harness.progress import progress
from harness.specs import PreprocessSpec
from harness.specs.policy import DataPolicy

# Bump when the layout of a "dataset" cache entry or the pixel pipeline changes: old entries then
# stop matching instead of being misread.
CACHE_FORMAT = 2  # 2: keyed by the listed labels, not the label file's bytes
# Small enough that the progress bar moves and a 2-core run stays balanced, large enough that
# per-task overhead (pickling a list of paths) is negligible next to decoding 64 JPEGs.
CHUNK_SIZE = 64


class NoRoomForDataset(DataError, CacheError):
    """The cache's disk cannot hold this dataset, known before any image is decoded.

    The user's to fix (free space, another ``--cache-dir``, a smaller ``--limit``): a
    :class:`DataError`, i.e. a usage error (the message, no traceback). A :class:`CacheError` too,
    like every other "no room in the cache directory", which also keeps the cache from restating
    it as its own disk-full error when the disk is already full.
    """


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """A preprocessed dataset: uint8 NCHW pixels memory-mapped from a cache entry.

    ``eq=False``: equality of numpy fields is elementwise and ambiguous; compare ``key`` instead.
    """

    path: Path
    key: str
    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    spec: PreprocessSpec
    listing: DatasetListing
    decode: str = "exact"  # see DECODE_MODES

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int, prefetch: bool = False, reuse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start index, normalized float32 batch)``; the last batch may be short.

        ``prefetch=True`` normalizes the next batch in a background thread while the caller
        works on this one (numpy releases the GIL). Normalizing costs ~60 us per 224x224 image
        on one core: in series with an accelerator at 4000 images/s (250 us per image) the run
        reaches ~75% of the device's speed, overlapped ~97% (benchmarks/bench_overhead.py).

        ``reuse=True`` writes the batches into two buffers taken in turn, so **a batch is valid
        only until the next one is requested**: for callers that run it and keep the outputs
        (Workbench.run). A new 64 x 224 x 224 float32 batch is 38 MB, above glibc's mmap
        threshold: every new array is fresh, zeroed memory whose page faults cost ~15% of the
        feed (benchmarks/bench_feed.py). Default: every batch is a new array.
        """
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, found {batch_size}")
        starts = range(0, len(self), batch_size)
        buffers: list[np.ndarray] = []
        if reuse:
            shape = (min(batch_size, len(self)), *self.images.shape[1:])
            buffers = [np.empty(shape, np.float32) for _ in range(2 if len(starts) > 1 else 1)]

        def make(i: int) -> np.ndarray:
            start = starts[i]
            out = buffers[i % len(buffers)][: min(batch_size, len(self) - start)] if buffers else None
            return normalize(self.images[start : start + batch_size], self.spec.mean, self.spec.std, out=out)

        if not prefetch:
            for i, start in enumerate(starts):
                yield start, make(i)
            return
        # With reuse, batch i + 2 goes into batch i's buffer only once the caller has asked for
        # batch i + 1, i.e. is done with batch i.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="normalize") as pool:
            ahead = [pool.submit(make, 0)] if starts else []
            for i, start in enumerate(starts):
                batch = ahead.pop().result()
                if i + 1 < len(starts):
                    ahead.append(pool.submit(make, i + 1))
                yield start, batch


def _names_sha256(names: Sequence[str]) -> str:
    # NUL cannot occur in a file name, so the joined form is unambiguous. A name that is not UTF-8
    # is hashed as its bytes on disk (the same bytes as before for every UTF-8 name). Computed
    # before anything is built: a name the names file cannot hold is refused here.
    broken = [shown(n) for n in names if "\n" in n]
    if broken:
        raise DataError(f"image name(s) {', '.join(broken[:5])} hold a newline; a dataset cache entry "
                        f"stores one name per line: rename those files")
    return hashlib.sha256(b"\0".join(name_bytes(n) for n in names)).hexdigest()


NAMES_FILE = "names.txt"


def _names_file_bytes(names: Sequence[str]) -> bytes:
    """``names.txt``: each name's bytes on disk and a newline. Only ``\\n`` separates names (read
    back by :func:`_read_names`, never ``splitlines``), so any other character round-trips; a name
    holding a newline was refused by :func:`_names_sha256` (and by the listing before)."""
    return b"".join(name_bytes(n) + b"\n" for n in names)


def _read_names(path: Path) -> tuple[str, ...]:
    """The names :func:`_names_file_bytes` wrote, exactly (bytes, not text mode: no newline
    translation of ``\\r``; surrogateescape: names that are not UTF-8 come back as listed)."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return tuple(text.split("\n")[:-1]) if text else ()


def dataset_cache_inputs(listing: DatasetListing, spec: PreprocessSpec, decode: str = "exact") -> dict[str, Any]:
    """Everything that decides a prepared dataset's bytes: the cache key is a hash of this."""
    inputs = {
        "format": CACHE_FORMAT,
        "preprocess": spec.cache_fields(),
        "dataset": listing.fingerprint(),
        "names": _names_sha256(listing.names),
    }
    # Only a non-default decode joins the key: "exact" entries built before the option existed
    # hold exactly those bytes and stay valid.
    if decode != "exact":
        inputs["decode"] = decode
    return inputs


def _preprocess_chunk(
    paths: Sequence[str], first_row: int, out_file: str, spec: PreprocessSpec, decode: str = "exact",
    decode_memory_mb: int = DataPolicy.decode_memory_mb,
) -> int:
    """Preprocess ``paths`` into rows ``first_row...`` of ``out_file``; returns the row count.

    Runs in pool workers: rows go straight into the shared file with ``pwrite``, so no pixel
    data is pickled back to the parent. ``decode_memory_mb``: each image's decoding budget.
    """
    row_bytes = 3 * spec.crop * spec.crop
    fd = os.open(out_file, os.O_WRONLY)
    try:
        for i, image in enumerate(paths):
            row = preprocess_image(Path(image), spec, decode, decode_memory_mb)
            data = row.tobytes()
            offset = (first_row + i) * row_bytes
            written = os.pwrite(fd, data, offset)
            while written < len(data):
                written += os.pwrite(fd, data[written:], offset + written)
    finally:
        os.close(fd)
    return len(paths)


def _exit_with_parent() -> None:
    """Pool initializer: end this worker as soon as the process that started the pool dies.

    A run killed with SIGKILL (a CI timeout, the OOM killer) runs no cleanup, and its idle or
    busy workers would otherwise live on, re-parented, for as long as the machine is up (and
    keep the run's stdout pipe open, so whoever waits for it never sees EOF).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _default_workers() -> int:
    # The CPUs this process may actually use (taskset / cpuset), not the machine's total.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_chunks(
    listing: DatasetListing, spec: PreprocessSpec, out_file: Path, workers: int, decode: str = "exact",
    decode_memory_mb: int = DataPolicy.decode_memory_mb,
) -> None:
    paths = [str(p) for p in listing.image_paths()]
    count = len(paths)
    # Small datasets are split evenly so both cores still get work; large ones use CHUNK_SIZE.
    chunk = max(1, min(CHUNK_SIZE, -(-count // workers)))
    chunks = [(start, paths[start : start + chunk]) for start in range(0, count, chunk)]
    workers = min(workers, len(chunks))
    desc = f"preprocessing {listing.image_dir.name} ({spec.method} {spec.resize}/{spec.crop} {spec.interpolation})"
    if decode != "exact":
        desc = f"{desc[:-1]}, {decode} decode)"
    with progress(count, desc) as bar:
        if workers == 1:
            # In-process on purpose: a debugger or a traceback sees the real failing frame.
            for start, part in chunks:
                bar.update(_preprocess_chunk(part, start, str(out_file), spec, decode, decode_memory_mb))
            return
        # forkserver, not fork: the parent may hold torch's thread pools, and forking a process
        # with live threads can deadlock the child.
        context = multiprocessing.get_context("forkserver")
        # The server (started by the process's first pool; later calls here change nothing)
        # imports this module once, and every worker of every pool forks with numpy and PIL
        # already loaded instead of importing them itself (~0.2 s per worker, per pool).
        context.set_forkserver_preload([__name__])
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_exit_with_parent
        )
        try:
            futures = {
                executor.submit(_preprocess_chunk, part, start, str(out_file), spec, decode, decode_memory_mb): part[0]
                for start, part in chunks
            }
            for future in concurrent.futures.as_completed(futures):
                try:
                    bar.update(future.result())
                except (DataError, OSError):
                    # DataError names the bad image; OSError here is the cache's disk (e.g. full),
                    # which the cache turns into its own error with the fix.
                    raise
                except BrokenProcessPool as exc:
                    raise DataError(
                        f"a preprocessing worker process died ({exc}); its own error, if it "
                        f"printed one, is on stderr above. Usual "
                        f"causes: out of memory (use fewer workers), or a __main__ module that "
                        f"worker processes cannot re-import (run from a file guarded by "
                        f"'if __name__ == \"__main__\":', not from stdin); workers=1 runs in-process"
                    ) from exc
                except Exception as exc:
                    raise DataError(
                        f"preprocessing worker failed on the chunk starting at {futures[future]}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        finally:
            # On failure, do not wait for the remaining chunks: nothing will be published.
            executor.shutdown(wait=True, cancel_futures=True)


def _check_free_space(
    tmp: Path, cache: ArtifactCache, count: int, spec: PreprocessSpec, listing: DatasetListing
) -> None:
    """Fail before decoding anything when the entry cannot fit: its size is known in advance."""
    # Pixels, int64 labels, names with newlines, and a generous allowance for the manifest.
    names_bytes = sum(len(name_bytes(n)) + 1 for n in listing.names)
    needed = count * 3 * spec.crop * spec.crop + 8 * count + names_bytes + 65536
    free = free_bytes(tmp)
    if needed > free:
        raise NoRoomForDataset(
            f"preprocessing {count} images to {spec.crop}x{spec.crop} needs {needed / 1e6:.1f} MB "
            f"at {cache.root}, {free / 1e6:.1f} MB free; free space there or pass --cache-dir "
            f"DIR (or set ${DEFAULT_CACHE_ENV}) to a disk with room"
        )


def prepare_dataset(
    listing: DatasetListing,
    spec: PreprocessSpec,
    cache: ArtifactCache,
    workers: int | None = None,
    decode: str = "exact",
    decode_memory_mb: int = DataPolicy.decode_memory_mb,
) -> PreparedDataset:
    """Preprocess every listed image once into the cache and memory-map the result.

    The entry (``images.u8`` raw uint8 NCHW, ``labels.npy``, ``names.txt``) is keyed by
    :func:`dataset_cache_inputs`: preprocessing fields, the labels (see
    :meth:`DatasetListing.fingerprint`), every image's (name, size, mtime), and the name list.
    ``workers`` defaults to the usable CPUs; ``1`` runs in-process. A failing image raises
    :class:`DataError` and publishes nothing. A cache disk without room for the entry is a
    :class:`NoRoomForDataset` before any image is decoded (the size is known in advance); a warm
    entry is reused however full the disk is. ``decode="draft"``
    (opt-in, see :data:`DECODE_MODES`) is faster on large JPEGs but changes pixels; it is part of
    the key and recorded in the manifest. ``decode_memory_mb`` (fixtures/policy.toml [data],
    ``Policy.data``) bounds what decoding one image may allocate: an image over it is a
    :class:`DataError` naming it, before it is decoded; it refuses, never changes pixels, so it is
    not part of the key.
    """
    if decode not in DECODE_MODES:
        raise DataError(f"unknown decode mode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    if workers is not None and workers <= 0:
        raise DataError(f"workers must be positive, found {workers}; omit it to use every core")
    count = len(listing.names)
    if count == 0:
        raise DataError(f"listing of {listing.image_dir} has no images; nothing to prepare")
    shape = (count, 3, spec.crop, spec.crop)
    inputs = dataset_cache_inputs(listing, spec, decode)

    def build(tmp: Path) -> dict[str, Any]:
        started = time.monotonic()
        _check_free_space(tmp, cache, count, spec, listing)
        out_file = tmp / "images.u8"
        with out_file.open("wb") as fh:
            fh.truncate(int(np.prod(shape)))
        used_workers = workers or _default_workers()
        _run_chunks(listing, spec, out_file, used_workers, decode, decode_memory_mb)
        # No fsync here: the cache flushes every file of the entry to disk before publishing it.
        with (tmp / "labels.npy").open("wb") as fh:
            np.save(fh, np.asarray(listing.labels, dtype=np.int64), allow_pickle=False)
        (tmp / NAMES_FILE).write_bytes(_names_file_bytes(listing.names))
        return {
            "shape": list(shape),
            "dtype": "uint8",
            "layout": "NCHW",
            "preprocess": spec.describe(),
            "decode": decode,
            "image_dir": str(listing.image_dir),
            "label_file": None if listing.label_file is None else str(listing.label_file),
            "label_source": listing.label_source,
            "skipped_unlabeled": listing.skipped_unlabeled,
            "skipped_missing": listing.skipped_missing,
            "workers": used_workers,
            "build_seconds": round(time.monotonic() - started, 3),
        }

    entry = cache.get_or_build("dataset", inputs, build)
    prepared = _open_entry(entry.path, entry.key, entry.manifest, spec, listing)
    return replace(prepared, decode=decode)


def _open_entry(
    path: Path, key: str, manifest: Mapping[str, Any], spec: PreprocessSpec, listing: DatasetListing
) -> PreparedDataset:
    fix = "delete that directory and rerun to rebuild it"
    try:
        shape = tuple(int(d) for d in manifest["shape"])
        dtype = np.dtype(manifest["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheError(f"cache entry {path}: manifest lacks a valid shape/dtype ({exc!r}); {fix}") from exc
    images_file = path / "images.u8"
    expected_bytes = int(np.prod(shape)) * dtype.itemsize
    try:
        actual_bytes = images_file.stat().st_size
        names = _read_names(path / NAMES_FILE)
        labels = np.load(path / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache entry {path} is incomplete or unreadable ({exc}); {fix}") from exc
    if (
        len(shape) != 4
        or actual_bytes != expected_bytes
        or len(names) != shape[0]
        or labels.shape != (shape[0],)
        or shape[1:] != (3, spec.crop, spec.crop)
    ):
        raise CacheError(
            f"cache entry {path} is inconsistent: manifest shape {list(shape)}, images.u8 "
            f"{actual_bytes} bytes (expected {expected_bytes}), {len(names)} names, labels "
            f"{labels.shape}; {fix}"
        )
    images = np.memmap(images_file, mode="r", dtype=dtype, shape=shape)
    return PreparedDataset(
        path=path, key=key, images=images, labels=labels, names=names, spec=spec, listing=listing
    )
