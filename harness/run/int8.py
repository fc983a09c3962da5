"""The INT8 step of a run: calibration images apart from the scored ones, the quantized model cached.

``Workbench.compile`` at precision ``int8`` quantizes the float ONNX with the backend's quantizer
(:meth:`harness.backends.base.Backend.quantizer`) on the calibration images
(:mod:`harness.run.calibration_split`: ``--calibration DIR`` or a split of the data), and compiles the
quantized model as it would the ONNX. ``Workbench.evaluate`` then scores only the other images. The
quantized artifact is a cache entry (``quantized-<backend>``) keyed by everything that decides it:
the source model's digest, the calibration images' digest and preprocessing, the tool and its
version, the scheme, the element types and the nodes kept in float.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harness import data as data_mod
from harness.backends.base import Backend
from harness.backends.quantization import QuantizationInfo, QuantizationSettings
from harness.cache import ArtifactCache, file_sha256
from harness.run.calibration_split import CalibrationSplit, apart, split
from harness.run.stages import StageClock
from harness.specs import ModelSpec, Policy

CALIBRATION_BATCH = 16


class Workbench(Protocol):
    """What this step uses of :class:`harness.run.workbench.Workbench` (which imports this module)."""

    cfg: Any  # harness.run.workbench.RunConfig
    policy: Policy
    cache: ArtifactCache
    clock: StageClock
    int8_memo: dict[tuple[Any, ...], Any]

    def listing(self, source: str) -> data_mod.DatasetListing: ...


@dataclass(frozen=True)
class Quantized:
    """A quantized model and what made it: the artifact the backend compiles, the quantizer's report,
    the calibration split."""

    path: Path
    info: QuantizationInfo
    split: CalibrationSplit

    def record(self) -> dict[str, Any]:
        """The record's calibration and quantization fields (harness.records.parts.Quantization)."""
        return {**self.split.record(), "quantization": self.info.as_dict()}


def settings_of(policy: Policy, keep_float: tuple[str, ...] = ()) -> QuantizationSettings:
    """The quantization fixtures/policy.toml [int8] asks for, with ``--keep-float`` nodes."""
    p = policy.int8
    return QuantizationSettings(scheme=p.scheme, activation_type=p.activation_type, weight_type=p.weight_type,
                                logits=p.logits, keep_float=tuple(keep_float), nncf_preset=p.nncf_preset,
                                tensorrt_calibration=p.tensorrt_calibration,
                                fake_quant_min_top1=p.amct_fake_quant_min_top1)


def source_digest(path: Path) -> str:
    """The SHA-256 of a model file; of an OpenVINO IR, of its ``.xml`` and ``.bin`` together (the
    ``.xml`` alone does not change with the weights)."""
    path = Path(path)
    if path.suffix != ".xml":
        return file_sha256(path)
    return f"{file_sha256(path)}+{file_sha256(path.with_suffix('.bin'))}"


def logit_ties(logits: np.ndarray) -> int:
    """Images whose largest logit is shared by two or more classes (quantized logits tie)."""
    top = logits.max(axis=1, keepdims=True)
    return int(((logits == top).sum(axis=1) > 1).sum())


def calibration_split(bench: Workbench, source: str) -> CalibrationSplit:
    """``--calibration DIR`` against ``source``'s images, or a split of them (memoized per source)."""
    memo = ("split", source)
    if memo not in bench.int8_memo:
        listing = bench.listing(source)
        with bench.clock.stage("listing"):
            if bench.cfg.calibration is not None:
                given = data_mod.list_dataset(bench.cfg.calibration, on_mismatch=bench.cfg.on_label_mismatch)
                bench.int8_memo[memo] = apart(given, listing)
            else:
                bench.int8_memo[memo] = split(listing, bench.policy.int8.calibration_images)
    found: CalibrationSplit = bench.int8_memo[memo]
    return found


def prepared_listing(bench: Workbench, spec: ModelSpec, listing: data_mod.DatasetListing) -> data_mod.PreparedDataset:
    with bench.clock.stage("preprocessing"):
        return data_mod.prepare_dataset(listing, spec.preprocess_for(bench.cfg.preprocess_variant), bench.cache,
                                        workers=bench.cfg.workers, decode=bench.cfg.decode,
                                        decode_memory_mb=bench.policy.data.decode_memory_mb)


def scored_dataset(bench: Workbench, spec: ModelSpec, source: str) -> data_mod.PreparedDataset:
    """The images an int8 run scores: ``source``'s, without the calibration images."""
    memo = ("scored", source, spec.preprocess_for(bench.cfg.preprocess_variant))
    if memo not in bench.int8_memo:
        bench.int8_memo[memo] = prepared_listing(bench, spec, calibration_split(bench, source).scored)
    found: data_mod.PreparedDataset = bench.int8_memo[memo]
    return found


def calibration_batches(prepared: data_mod.PreparedDataset, uint8: bool) -> Iterator[np.ndarray]:
    pre = prepared.spec
    for start in range(0, len(prepared), CALIBRATION_BATCH):
        images = np.asarray(prepared.images[start:start + CALIBRATION_BATCH])
        yield images if uint8 else data_mod.normalize(images, pre.mean, pre.std)


def quantize(bench: Workbench, backend: Backend, spec: ModelSpec, onnx_path: Path, source: str,
             settings: QuantizationSettings | None = None) -> Quantized:
    """The quantized model of ``onnx_path`` for ``backend``, from the cache or made now (the
    ``compile`` stage), calibrated on ``source``'s calibration images."""
    quantizer = backend.quantizer()
    settings = settings or settings_of(bench.policy, bench.cfg.keep_float)
    found = calibration_split(bench, source)
    calibration = prepared_listing(bench, spec, found.calibration)
    uint8 = bench.cfg.input_dtype == "uint8"
    with bench.clock.stage("compile"):
        inputs: dict[str, Any] = {
            "source_sha256": source_digest(onnx_path),
            "calibration_digest": found.digest,
            "calibration_images": len(found.calibration),
            "preprocess": calibration.spec.describe(),
            "decode": calibration.decode,
            "input_dtype": bench.cfg.input_dtype,
            "tool": quantizer.tool,
            "tool_version": quantizer.version(),
            "fields": quantizer.fields(settings),
        }

        def build(tmp: Path) -> Mapping[str, Any]:
            artifact, info = quantizer.quantize(onnx_path, calibration_batches(calibration, uint8), settings, tmp)
            return {"artifact": artifact.name, "quantization": info.as_dict()}

        entry = bench.cache.get_or_build(f"quantized-{backend.name}", inputs, build)
    info = QuantizationInfo.from_dict(entry.manifest["quantization"])
    quantized = Quantized(path=entry.path / str(entry.manifest["artifact"]), info=info, split=found)
    backend.quantization = quantized.record()
    return quantized

