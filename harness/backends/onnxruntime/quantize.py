"""ONNX Runtime's static INT8 quantization: a QDQ model from the suite's float ONNX.

Facts measured on efficientnet_lite0 (issue 26) that shape this module:

- per-channel weight scales need ``DequantizeLinear``'s ``axis`` (opset 13): ORT's quantizer writes
  it into an opset-11 file anyway, and the model then fails only when it is loaded. The source is
  therefore converted to opset 13 first (``onnx.version_converter``), for every scheme, so the two
  schemes differ only in the scales;
- the QDQ model quantizes the logits too (~250 distinct values, the top-1 of 7-9 in 1000 images
  tied) unless the last layer is excluded: ``logits = "float"`` excludes the node that writes the
  graph's output;
- U8S8 (uint8 activations, int8 weights) ran ~2.2x fp32 on a VNNI CPU, S8S8 (ORT's default) ~1.0x:
  the types are policy data (fixtures/policy.toml [int8]).

Calibration is MinMax over the images given; the tensor ranges can be kept in a JSON file
(``calibration_cache``) so that re-quantizing the same model with other nodes kept in float (the way
back to float, harness.run.keep_float) does not calibrate again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.onnxruntime.float_inputs import float_inputs
from harness.backends.quantization import (
    ORT_SCHEMES,
    PER_CHANNEL,
    QuantizationError,
    QuantizationInfo,
    QuantizationSettings,
    Quantizer,
    check_settings,
    logits_node,
    opset_of,
)

QDQ_OPSET = 13
SOURCE_NAME = "source.opset13.onnx"
ARTIFACT_NAME = "model.int8.onnx"


def at_opset13(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` converted to opset 13 (unchanged when already there or newer)."""
    if opset_of(model) >= QDQ_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, QDQ_OPSET)
    except Exception as exc:  # the converter raises its own C++ exception types
        raise QuantizationError(f"onnx could not convert the model from opset {opset_of(model)} to "
                                f"{QDQ_OPSET} for per-channel QDQ quantization: {exc}") from exc
    onnx.checker.check_model(converted)
    return converted


def node_names(model: onnx.ModelProto) -> set[str]:
    return {n.name for n in model.graph.node}


def check_nodes(model: onnx.ModelProto, nodes: Iterable[str]) -> None:
    """Refuse a --keep-float name the model has no node of (a typo would quietly change nothing)."""
    unknown = sorted(set(nodes) - node_names(model))
    if unknown:
        sample = ", ".join(sorted(n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))[:6])
        raise QuantizationError(f"--keep-float names {', '.join(unknown)}, which the model has no node of; "
                                f"expected node names of the exported ONNX, like {sample}")


class _Reader:
    """ORT's CalibrationDataReader protocol over the suite's calibration batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._input = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input: np.ascontiguousarray(batch)}


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


class OrtQuantizer(Quantizer):
    """``onnxruntime.quantization.quantize_static``: QDQ, MinMax calibration, per-channel or per-tensor."""

    tool = "onnxruntime.quantization"

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def fields(self, settings: QuantizationSettings) -> dict[str, Any]:
        return {"format": "QDQ", "calibrate_method": "MinMax", "opset": QDQ_OPSET, "scheme": settings.scheme,
                "activation_type": settings.activation_type, "weight_type": settings.weight_type,
                "logits": settings.logits, "keep_float": sorted(settings.keep_float),
                **({"keep_float_inputs": "float"} if settings.keep_float else {})}

    def excluded(self, model: onnx.ModelProto, settings: QuantizationSettings) -> tuple[str, ...]:
        """The nodes left in float: the logits layer (``logits = "float"``) and ``keep_float``."""
        check_nodes(model, settings.keep_float)
        names = set(settings.keep_float) | ({logits_node(model)} if settings.logits == "float" else set())
        order = [n.name for n in model.graph.node]
        return tuple(sorted(names, key=order.index))

    def quantize(self, source: Path, calibration: Iterable[np.ndarray], settings: QuantizationSettings,
                 out_dir: Path, calibration_cache: Path | None = None) -> tuple[Path, QuantizationInfo]:
        check_settings(settings, ORT_SCHEMES, self.tool)
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        started = time.perf_counter()
        model = at_opset13(onnx.load(str(source)))
        excluded = self.excluded(model, settings)
        out_dir = Path(out_dir)
        converted = out_dir / SOURCE_NAME
        onnx.save(model, str(converted))
        artifact = out_dir / ARTIFACT_NAME
        per_channel = settings.scheme == PER_CHANNEL
        try:
            quantize_static(
                str(converted), str(artifact), _Reader(model.graph.input[0].name, calibration),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=_quant_type(settings.activation_type), weight_type=_quant_type(settings.weight_type),
                nodes_to_exclude=list(excluded), calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            )
        except QuantizationError:
            raise
        except Exception as exc:  # ORT's quantizer raises plain Python and C++ exceptions
            raise QuantizationError(f"onnxruntime could not quantize {source}: {type(exc).__name__}: {exc}") from exc
        converted.unlink()
        if not artifact.is_file():
            raise QuantizationError(f"onnxruntime did not write the quantized model {artifact}")
        if settings.keep_float:  # excluded nodes still read fake-quantized activations: float_inputs.py
            quantized = onnx.load(str(artifact))
            float_inputs(quantized, model, settings.keep_float)
            onnx.save(quantized, str(artifact))
        info = QuantizationInfo(tool=self.tool, version=self.version(), scheme=settings.scheme,
                                activation_type=settings.activation_type, weight_type=settings.weight_type,
                                per_channel=per_channel, excluded_nodes=excluded,
                                seconds=time.perf_counter() - started)
        return artifact, info
