"""Model weights: a module with verified pretrained weights, or seeded random ones, and
:class:`WeightsInfo` saying which.

Pretrained weights are a checkpoint (``harness.model.checkpoint``: located, checksum-verified,
read with ``torch.load(weights_only=True)``) strictly loaded into the architecture. Random
weights are seeded and, when calibration images are given, get real BatchNorm statistics so
that torch-vs-ONNX parity on them means something (``harness.model.calibration``). A request for
pretrained weights never falls back to random ones.

The checkpoint and calibration names are re-exported here: ``harness.model.weights`` is where
callers import them from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.model.architectures import build_module
from harness.model.calibration import (
    CALIBRATION_BATCH,
    calibrate_batchnorm,
    calibration_sha256,
)
from harness.model.checkpoint import (
    DOWNLOAD_TIMEOUT_S,
    WeightsError,
    WeightsNotFound,
    describe_source,
    download_weights,
    load_state_dict,
    locate_weights,
    verify_checksum,
)
from harness.specs import ModelSpec

WEIGHT_MODES = ("pretrained", "random")
_EXAMPLES = 3


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a module carries, seen two ways on purpose.

    - :meth:`export_key_fields`: what decides the weights' *values* (checkpoint SHA-256, or seed
      plus calibration); part of the ONNX export cache key. The file's path is left out, so a
      moved or re-downloaded checkpoint reuses its export, and the key of the torch reference
      logits (``harness.run.reference``: reusable on another machine).
    - :meth:`provenance`: every field, where the weights came from (``source``: path or
      ``package:...``) included; what manifests and result records store.

    ``calibration_sha256`` identifies the images random weights' BatchNorm statistics were
    calibrated on (None: pretrained, or random without calibration): two calibrations on
    different images are different weights even with one seed.
    """

    kind: str
    source: str
    sha256: str | None
    seed: int | None
    calibration_sha256: str | None = None

    def provenance(self) -> dict[str, Any]:
        """Which weights and where they came from, as a JSON-ready dict: every field, ``source`` included.

        Recorded in manifests and result records (a reader wants to know which file ran). Not a
        cache key: see :meth:`export_key_fields`.
        """
        return asdict(self)

    def export_key_fields(self) -> dict[str, Any]:
        """What decides the weights' values, and so the exported ONNX file (its cache key's ``weights``)
        and the torch reference logits.

        The source path does not: the same checkpoint may move. Pretrained: kind and SHA-256;
        random: kind, seed, calibration set and batching. For what is recorded, see :meth:`provenance`.
        """
        if self.kind == "pretrained":
            return {"kind": self.kind, "sha256": self.sha256}
        fields: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "calibration_sha256": self.calibration_sha256}
        if self.calibration_sha256 is not None:
            # Running variances average per-batch variances, so the batching is part of the values.
            fields["calibration_batch"] = CALIBRATION_BATCH
        return fields



def _fit_errors(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:_EXAMPLES])})")
    return problems


def load_pretrained(
    spec: ModelSpec, weights_dir: Path, allow_download: bool = True
) -> tuple[nn.Module, WeightsInfo]:
    """Locate, verify and strictly load the published weights of ``spec`` into its architecture."""
    path, info = _verified(spec, weights_dir, allow_download)
    return _read_into_module(spec, path), info  # read right after the check: verified once


def pretrained_weights(
    spec: ModelSpec, weights_dir: Path, allow_download: bool = True
) -> tuple[WeightsInfo, Callable[[], nn.Module]]:
    """The published weights of ``spec`` located and checksum-verified now, and a function that
    strictly loads them into its architecture (the seconds of building, only where torch runs)."""
    path, info = _verified(spec, weights_dir, allow_download)
    sha = str(info.sha256)  # set for pretrained weights

    def build() -> nn.Module:
        # Read when the module is first needed, maybe long after the check: the file is checked again
        # right before it is read, so that what runs is what was verified (and recorded as ``sha``).
        if verify_checksum(path, spec.weights) != sha:
            raise WeightsError(f"{path} changed after it was verified (SHA-256 {sha[:12]}...): rerun")
        return _read_into_module(spec, path)

    return info, build


def _verified(spec: ModelSpec, weights_dir: Path, allow_download: bool) -> tuple[Path, WeightsInfo]:
    """The checkpoint of ``spec`` located and checksum-verified, and what it is."""
    path = locate_weights(spec, weights_dir, allow_download=allow_download)
    sha = verify_checksum(path, spec.weights)
    return path, WeightsInfo(kind="pretrained", source=describe_source(path, spec), sha256=sha, seed=None)


def _read_into_module(spec: ModelSpec, path: Path) -> nn.Module:
    """The verified checkpoint at ``path`` strictly loaded into ``spec``'s architecture."""
    module = build_module(spec)
    state = load_state_dict(path, spec, target=module.state_dict())
    problems = _fit_errors(module, state)
    if problems:
        raise WeightsError(
            f"{path}: this checkpoint does not fit architecture {spec.arch.source}:{spec.arch.name}: "
            f"{'; '.join(problems)}; check arch.name and weights.key_mapping of "
            f"[models.{spec.name}] in fixtures/models.toml"
        )
    module.load_state_dict(state, strict=True)
    return module.eval()


# --------------------------------------------------------------------------------------------
# Random weights


def _check_calibration(spec: ModelSpec, images: np.ndarray) -> None:
    expected = f"(N >= 2, {', '.join(map(str, spec.input_shape))}) float32, already normalized"
    if not isinstance(images, np.ndarray) or images.dtype != np.float32:
        raise WeightsError(
            f"calibration images for {spec.name!r}: expected {expected}, found "
            f"{getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.input_shape or images.shape[0] < 2:
        raise WeightsError(f"calibration images for {spec.name!r}: expected {expected}, found shape {images.shape}")
    if not np.isfinite(images).all():
        raise WeightsError(f"calibration images for {spec.name!r}: expected finite values, found NaN or inf")


def random_model(
    spec: ModelSpec, seed: int, calibration: np.ndarray | None
) -> tuple[nn.Module, WeightsInfo]:
    """``spec``'s architecture with seeded random weights, BatchNorm-calibrated if images are given.

    The module is built with ``spec.arch.random_init_kwargs`` (timm's ``zero_init_last=False``
    where the constructor has it) so no residual branch starts as zeros. The global torch RNG is
    left as it was.
    """
    info, build = random_weights(spec, seed, calibration)
    return build(), info


def random_weights(
    spec: ModelSpec, seed: int, calibration: np.ndarray | None
) -> tuple[WeightsInfo, Callable[[], nn.Module]]:
    """The seeded random weights' identity now (seed, calibration images' hash), and the function
    that builds them (:func:`random_model`)."""
    if calibration is not None:
        _check_calibration(spec, calibration)
    info = WeightsInfo(
        kind="random", source=f"random(seed={seed})", sha256=None, seed=seed,
        calibration_sha256=None if calibration is None else calibration_sha256(calibration),
    )

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build_module(spec, random_init=True)
        if calibration is not None:
            calibrate_batchnorm(module, calibration)
        return module.eval()

    return info, build


def load_model(
    spec: ModelSpec,
    weights: str,
    weights_dir: Path,
    seed: int,
    calibration: np.ndarray | None,
    allow_download: bool = True,
) -> tuple[nn.Module, WeightsInfo]:
    """``pretrained`` (verified checkpoint, errors if unavailable) or ``random`` (seeded) weights."""
    info, build = describe_model(spec, weights, weights_dir, seed, calibration, allow_download)
    return build(), info


def describe_model(
    spec: ModelSpec,
    weights: str,
    weights_dir: Path,
    seed: int,
    calibration: np.ndarray | None,
    allow_download: bool = True,
) -> tuple[WeightsInfo, Callable[[], nn.Module]]:
    """:func:`load_model` in two steps: which weights (checked now: a missing or corrupt checkpoint
    fails here), and the function that builds the module carrying them. What is keyed by the weights
    (an ONNX export, the torch reference) and already cached needs only the first."""
    if weights == "pretrained":
        return pretrained_weights(spec, weights_dir, allow_download=allow_download)
    if weights == "random":
        return random_weights(spec, seed, calibration)
    raise WeightsError(f"unknown weights mode {weights!r}; expected one of: {', '.join(WEIGHT_MODES)} (--weights)")


__all__ = [
    "CALIBRATION_BATCH",
    "DOWNLOAD_TIMEOUT_S",
    "WEIGHT_MODES",
    "WeightsError",
    "WeightsInfo",
    "WeightsNotFound",
    "calibrate_batchnorm",
    "calibration_sha256",
    "download_weights",
    "describe_model",
    "load_model",
    "load_pretrained",
    "load_state_dict",
    "locate_weights",
    "random_model",
    "verify_checksum",
]
