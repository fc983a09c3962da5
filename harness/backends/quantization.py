"""INT8 post-training quantization: what decides a quantized model, what a quantizer reports, and the
interface every backend's quantizer implements (:class:`Quantizer`).

A quantizer turns the suite's float ONNX export into a model whose convolutions and matrix products
run in 8 bits, calibrated on images kept apart from the scored ones (harness.run.int8 picks them).
Each backend with an INT8 path has one (:meth:`harness.backends.base.Backend.quantizer`): ONNX
Runtime's static QDQ quantizer (:mod:`harness.backends.onnxruntime.quantize`), NNCF's post-training
quantization of an OpenVINO IR (:mod:`harness.backends.openvino_quantize`); Ascend (AMCT) and TensorRT
(an INT8 calibrator) would add theirs behind the same interface. The artifact a quantizer writes is
what the backend's ``compile`` then takes in place of the float ONNX.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import HarnessError
from harness.specs.policy import Int8Policy

if TYPE_CHECKING:  # the functions read a model they are given: importing onnx is the caller's (~0.7 s)
    import onnx

INT8 = "int8"
# Element types a quantizer may be asked for (fixtures/policy.toml [int8]).
QUANT_TYPES = ("uint8", "int8")
# ONNX Runtime's schemes: QDQ with per-channel weight scales (what depthwise convolutions need), or one
# scale per weight tensor (the "opset 11 style" that loses 2.4 points on efficientnet_lite0: issue 26).
PER_CHANNEL, PER_TENSOR = "qdq-per-channel", "qdq-per-tensor"
ORT_SCHEMES = (PER_CHANNEL, PER_TENSOR)


class QuantizationError(HarnessError, RuntimeError):
    """A quantizer failed, or was asked for something it cannot do (the message says what to change)."""


# The defaults are fixtures/policy.toml [int8]'s declared ones (harness/specs/policy.py), not copies: a run
# fills every field from its own policy (harness.run.int8.settings_of); code and tests that build settings
# themselves start from the declarations.
_DECLARED = Int8Policy()


@dataclass(frozen=True)
class QuantizationSettings:
    """Everything besides the source model and the calibration images that decides a quantized model.

    ``keep_float``: node names left in float (``--keep-float``, the way back to float); ``logits``:
    ``float`` keeps the last layer (the logits) unquantized, ``quantized`` quantizes it too (the ORT
    default, which ties the top-1 of ~1% of images: issue 26); ``tensorrt_calibration`` (TensorRT's
    table, harness.backends.onnxruntime.trt_int8) and ``fake_quant_min_top1`` (AMCT's check,
    harness.backends.ascend_tools.amct) are [int8] ``tensorrt_calibration`` and ``amct_fake_quant_min_top1``."""

    scheme: str = _DECLARED.scheme
    activation_type: str = _DECLARED.activation_type
    weight_type: str = _DECLARED.weight_type
    logits: str = _DECLARED.logits
    keep_float: tuple[str, ...] = ()
    nncf_preset: str = _DECLARED.nncf_preset
    tensorrt_calibration: str = _DECLARED.tensorrt_calibration
    fake_quant_min_top1: float = _DECLARED.amct_fake_quant_min_top1


@dataclass(frozen=True)
class QuantizationInfo:
    """What a quantizer did, for the records: the tool and its version, the scheme, the element types,
    per-channel or not, the nodes left in float (the logits layer and ``--keep-float``), and the
    wall seconds calibration and quantization took."""

    tool: str
    version: str
    scheme: str
    activation_type: str
    weight_type: str
    per_channel: bool
    excluded_nodes: tuple[str, ...]
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "version": self.version, "scheme": self.scheme,
                "activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "excluded_nodes": list(self.excluded_nodes),
                "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantizationInfo:
        return cls(tool=str(data["tool"]), version=str(data["version"]), scheme=str(data["scheme"]),
                   activation_type=str(data["activation_type"]), weight_type=str(data["weight_type"]),
                   per_channel=bool(data["per_channel"]), excluded_nodes=tuple(map(str, data["excluded_nodes"])),
                   seconds=float(data.get("seconds", 0.0)))


class Quantizer(ABC):
    """One backend's post-training quantizer.

    ``fields`` and ``version`` go into the quantized artifact's cache key beside the source model's
    and the calibration images' digests (harness.run.int8); ``quantize`` writes the artifact into
    ``out_dir`` from ``calibration`` (normalized float32 batches, or uint8 for a uint8-input model)
    and says what it did."""

    tool: str

    @abstractmethod
    def version(self) -> str:
        """The quantization tool's version (part of the cache key and the record)."""

    @abstractmethod
    def fields(self, settings: QuantizationSettings) -> dict[str, Any]:
        """What decides the artifact besides the source model and the calibration images."""

    @abstractmethod
    def quantize(self, source: Path, calibration: Iterable[np.ndarray], settings: QuantizationSettings,
                 out_dir: Path) -> tuple[Path, QuantizationInfo]:
        """Write the quantized model of ``source`` into ``out_dir``; its path and what was done."""


def check_settings(settings: QuantizationSettings, schemes: tuple[str, ...], tool: str) -> None:
    """Refuse a scheme or element type the tool does not take."""
    if settings.scheme not in schemes:
        raise QuantizationError(f"{tool} quantizes with scheme {' or '.join(schemes)}, not {settings.scheme!r}; "
                                "set [int8] scheme in fixtures/policy.toml")
    for what, value in (("activation_type", settings.activation_type), ("weight_type", settings.weight_type)):
        if value not in QUANT_TYPES:
            raise QuantizationError(f"[int8] {what} must be one of {', '.join(QUANT_TYPES)}, not {value!r}")


def opset_of(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def logits_node(model: onnx.ModelProto) -> str:
    """The name of the node that writes the graph's (first) output: the layer computing the logits,
    which ``logits = "float"`` keeps out of every quantizer."""
    output = model.graph.output[0].name
    node = next((n for n in model.graph.node if output in n.output), None)
    if node is None:
        raise QuantizationError(f"no node writes the graph output {output!r}")
    if not node.name:
        raise QuantizationError(f"the node writing {output!r} has no name; name the ONNX's nodes")
    return node.name
