"""BatchNorm calibration of random weights: real running statistics from real images.

Seeded random weights with BatchNorm's initial statistics (mean 0, variance 1) give logits that
torch and ONNX agree on trivially or not at all; calibrated on real images they behave like a
trained network's (uncalibrated, a random-weight parity test can lie both ways).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

# Calibration batches: small enough for two cores, and never of size 1, because BatchNorm in
# training mode cannot normalise one value per channel (ResNeSt's split-attention BN sees 1x1 maps).
CALIBRATION_BATCH = 8


def calibration_sha256(images: np.ndarray) -> str:
    """Identity of a calibration set: dtype, shape and bytes."""
    arr = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _batches(n: int, size: int) -> list[slice]:
    starts = list(range(0, n, size))
    out = [slice(s, min(s + size, n)) for s in starts]
    if len(out) > 1 and out[-1].stop - out[-1].start == 1:
        out[-2:] = [slice(out[-2].start, n)]
    return out


def calibrate_batchnorm(module: nn.Module, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> int:
    """Replace every BatchNorm's running statistics by their average over ``images``.

    Deterministic: statistics are reset, accumulated as a cumulative average (momentum None)
    over fixed batches, and only the BatchNorm layers run in training mode, so dropout and
    drop-path stay off. Returns the number of BatchNorm layers calibrated.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    module.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for part in _batches(images.shape[0], batch_size):
                module(torch.from_numpy(np.ascontiguousarray(images[part])))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        module.eval()
    return len(norms)
