"""Running a session over a prepared dataset: the one feeding path of accuracy runs and sweeps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness import data as data_mod
from harness.backends.base import Session
from harness.progress import progress


def feed(session: Session, prepared: data_mod.PreparedDataset, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Batches in the session's input dtype: normalized float32, or the cache's uint8 as is."""
    if session.input_dtype == np.uint8:
        for start in range(0, len(prepared), batch_size):
            yield start, np.ascontiguousarray(prepared.images[start : start + batch_size])
    else:
        # Normalize the next batch in a thread while the session runs this one: in series, host
        # normalization costs a quarter of a 4000 images/s device's time (benchmarks/bench_overhead.py).
        # Two reused buffers: run() keeps the outputs, never the batch.
        yield from prepared.batches(batch_size, prefetch=True, reuse=True)


def run_all(session: Session, prepared: data_mod.PreparedDataset, batch_size: int, desc: str) -> np.ndarray:
    """Logits for every image of ``prepared``, in its order (labels are joined by name there)."""
    chunks: list[np.ndarray] = []
    with progress(len(prepared), desc) as bar:
        for _start, batch in feed(session, prepared, batch_size):
            chunks.append(session.infer(batch))
            bar.update(batch.shape[0])
    return np.concatenate(chunks, axis=0)
