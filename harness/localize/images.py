"""The images localisation runs on: preprocessed uint8 pixels, normalized per batch as the suite does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data import normalize
from harness.errors import UsageError


@dataclass(frozen=True, eq=False)
class Images:
    """``pixels``: (N, 3, H, W) uint8 (a memmap is fine: only the batches asked for are read), or
    float32 already normalized (then ``mean``/``std`` are unused); ``names`` label them in the summary."""

    pixels: np.ndarray
    names: tuple[str, ...]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_prepared(cls, prepared: Any) -> Images:
        """From a :class:`harness.data.PreparedDataset` (its uint8 cache and its recipe's mean/std)."""
        return cls(pixels=prepared.images, names=tuple(prepared.names), mean=tuple(prepared.spec.mean),
                   std=tuple(prepared.spec.std))

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(v) for v in self.pixels.shape[1:])
        return (c, h, w)

    def batch(self, indices: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """The images at ``indices`` as the model takes them: raw uint8, or normalized float32."""
        raw = np.asarray(self.pixels[np.asarray(indices, dtype=np.int64)])
        if np.dtype(dtype) == np.uint8:
            if raw.dtype != np.uint8:
                raise UsageError("a uint8-input model needs uint8 pixels, these images are already normalized")
            return np.ascontiguousarray(raw)
        if raw.dtype == np.uint8:
            return normalize(raw, self.mean, self.std)
        return np.ascontiguousarray(raw, dtype=np.float32)
