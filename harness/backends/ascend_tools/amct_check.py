"""AMCT's fake-quant ONNX scored on ONNX Runtime before any device: a guard against a broken quantization.

AMCT writes, beside the deploy model ATC compiles, a fake-quant model in which every quantized layer
quantizes and dequantizes its inputs and weights in float32: the documented way to see the accuracy of
the quantization on ONNX Runtime without an NPU (AMCT user guide, ``save_model``). Here it runs on ONNX
Runtime's CPU provider on the calibration images AMCT was given, beside the float ONNX on the same
runtime, and the share of images whose top-1 class the two agree on is recorded in the quantized
artifact's cache entry (``fake_quant_check.json``). Below fixtures/policy.toml [int8]
``amct_fake_quant_min_top1`` the quantization is refused before ATC compiles it: calibration data in
the wrong layout or normalization, or a wrong skip list, shows here as an agreement far below the
~98% a good INT8 model keeps (issue 26). This is not the certification: the paired gates judge the
compiled model on the scored images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.quantization import QuantizationError

CHECK_FILE = "fake_quant_check.json"
BATCH = 16


def _images(data_dir: Path, chw: Sequence[int]) -> Iterator[np.ndarray]:
    """The calibration .bin files (one float32 image each), in batches."""
    files = sorted(data_dir.glob("*.bin"))
    for start in range(0, len(files), BATCH):
        yield np.stack([np.fromfile(f, dtype=np.float32).reshape(tuple(chw)) for f in files[start:start + BATCH]])


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise QuantizationError(
            f"ONNX Runtime could not load {path.name}: {type(exc).__name__}: {exc}; AMCT documents its fake-quant "
            "model as runnable on ONNX Runtime: check the AMCT and ONNX Runtime versions (AMCT's table)") from exc


def fake_quant_agreement(float_onnx: Path, fake_quant: Path, input_name: str, data_dir: Path,
                         chw: Sequence[int]) -> dict[str, Any]:
    """Top-1 agreement of the fake-quant model with the float model on the images in ``data_dir``."""
    import onnxruntime as ort

    reference, simulated = _session(float_onnx), _session(fake_quant)
    images = agreed = 0
    for batch in _images(data_dir, chw):
        want = np.asarray(reference.run(None, {input_name: batch})[0]).argmax(axis=1)
        got = np.asarray(simulated.run(None, {input_name: batch})[0]).argmax(axis=1)
        images += len(batch)
        agreed += int((want == got).sum())
    return {"images": images, "agreed": agreed, "top1_agreement": round(100.0 * agreed / max(images, 1), 3),
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "against": "the float ONNX on the same runtime and images (AMCT's calibration images)"}


def refuse_below(check: dict[str, Any], min_top1: float, fake_quant: Path) -> None:
    """Refuse a quantization whose fake-quant model agrees with the float model on fewer images than asked."""
    if check["top1_agreement"] < min_top1:
        raise QuantizationError(
            f"AMCT's fake-quant model {fake_quant.name} agrees with the float ONNX on the top-1 of "
            f"{check['agreed']}/{check['images']} calibration images ({check['top1_agreement']:.1f}%), below "
            f"[int8] amct_fake_quant_min_top1 = {min_top1:g}% (fixtures/policy.toml): the quantization is broken "
            "before any device; check the calibration images, or keep the failing layers float (--keep-float)")
