"""Normalization: uint8 pixel batches to the float32 a model takes, as torchvision does it.

:func:`normalize` is ``ToTensor()`` + ``Normalize(mean, std)`` bit for bit, on a whole
``(N, 3, H, W)`` uint8 batch (a prepared dataset's rows), optionally into a reused buffer.
(Not named ``normalize``, so that ``harness.data.normalize`` is the function, never this module.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.data.errors import DataError

# normalize() works image by image on float32 batches larger than this (see there).
_NORMALIZE_BLOCK_BYTES = 32 << 20


def normalize(
    batch: np.ndarray, mean: Sequence[float], std: Sequence[float], out: np.ndarray | None = None
) -> np.ndarray:
    """(N, 3, H, W) uint8 -> float32, bit-exact with torchvision ``ToTensor()`` + ``Normalize``.

    Same operations in the same order and precision: divide by 255 in float32, then subtract
    the float32 mean and divide by the float32 std per channel. ``out``: a float32 array of the
    batch's shape to write into (returned), instead of a new one.
    """
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        raise DataError(f"normalize expects an (N, 3, H, W) uint8 batch, found {batch.dtype} {batch.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    if out is None:
        x = np.empty(batch.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != batch.shape or not out.flags.c_contiguous:
        raise DataError(f"normalize: out must be a C-contiguous float32 array of shape {batch.shape}, "
                        f"found {out.dtype} {out.shape}")
    else:
        x = out
    # Above glibc's largest mmap threshold (32 MiB, e.g. 64 images at 224) every batch is fresh,
    # zeroed memory; image by image, the three passes then run over pages still in the CPU
    # cache (~10% faster there, measured; smaller batches are fastest whole).
    blocks = zip(np.asarray(batch), x, strict=True) if x.nbytes > _NORMALIZE_BLOCK_BYTES else ((batch, x),)
    for src, dst in blocks:
        np.divide(src, np.float32(255), out=dst, dtype=np.float32)
        dst -= m
        dst /= s
    return x
