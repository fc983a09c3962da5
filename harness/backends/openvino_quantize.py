"""OpenVINO INT8: NNCF post-training quantization of the IR (``nncf.quantize``, performance preset).

The float ONNX is converted (``openvino.convert_model``, dynamic batch as exported), quantized by
NNCF on the calibration images one at a time (its statistics are per sample; batched samples
change them), and saved as an IR with float32 weights where they stay float
(``compress_to_fp16=False``). The OpenVINO backend's ``compile`` then reads that IR, fixes its batch
and runs it; the CPU plugin executes the FakeQuantize-wrapped convolutions in int8.

NNCF quantizes weights per channel and symmetrically, activations per tensor (the performance
preset: symmetric too, unsigned where a tensor is never negative), so the scheme is NNCF's own and
[int8] ``scheme`` / ``activation_type`` / ``weight_type`` of fixtures/policy.toml (ONNX Runtime's
choices) do not apply: the record says what NNCF did. Nodes kept in float (the logits layer,
``--keep-float``: ONNX node names) become NNCF's ignored scope, matched to the IR's operations by the
tensor names the ONNX node writes.

The way back to float on OpenVINO (NNCF's ``quantize_with_accuracy_control``) is not built yet
(docs/int8.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.quantization import (
    QuantizationError,
    QuantizationInfo,
    QuantizationSettings,
    Quantizer,
)

ARTIFACT_NAME = "model.int8.xml"
INSTALL_HINT = "pip install 'nncf>=2.12' (or: pip install -e '.[int8]')"
_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def nncf_module() -> Any:
    try:
        import nncf
    except ImportError as exc:
        from harness.backends.base import BackendUnavailable

        raise BackendUnavailable(f"OpenVINO INT8 needs NNCF, which is not installed ({exc}); {INSTALL_HINT}") from exc
    return nncf


def _ops_writing(model: Any, tensor_names: set[str]) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if any(tensor_names & set(out.get_names()) for out in op.outputs())]


def logits_ops(model: Any) -> list[str]:
    """The weighted operation nearest the model's output (the classifier's MatMul), walking up from it."""
    node = model.outputs[0].get_node()
    seen = 0
    while node is not None and seen < 16:
        if node.get_type_name() in _WEIGHTED:
            return [node.get_friendly_name()]
        inputs = [i.get_source_output().get_node() for i in node.inputs()]
        node = next((n for n in inputs if n.get_type_name() not in ("Constant", "Parameter")), None)
        seen += 1
    raise QuantizationError("openvino: no MatMul or Convolution found above the model's output (the logits layer)")


def ignored_ops(model: Any, onnx_source: Path, settings: QuantizationSettings) -> list[str]:
    """The IR operations to keep in float: the logits layer and every ``keep_float`` ONNX node's."""
    names = list(logits_ops(model)) if settings.logits == "float" else []
    if settings.keep_float:
        import onnx

        graph = onnx.load(str(onnx_source), load_external_data=False).graph
        outputs = {n.name: set(n.output) for n in graph.node}
        unknown = sorted(set(settings.keep_float) - set(outputs))
        if unknown:
            raise QuantizationError(f"--keep-float names {', '.join(unknown)}, which {onnx_source} has no node of")
        for node in settings.keep_float:
            found = _ops_writing(model, outputs[node])
            names += [f for f in found if f not in names]
    return names


class NncfQuantizer(Quantizer):
    """``nncf.quantize`` of the IR converted from the ONNX."""

    tool = "nncf"

    def version(self) -> str:
        import openvino

        return f"{nncf_module().__version__} (openvino {openvino.get_version()})"

    def fields(self, settings: QuantizationSettings) -> dict[str, Any]:
        return {"method": "nncf.quantize", "preset": settings.nncf_preset, "logits": settings.logits,
                "keep_float": sorted(settings.keep_float), "ir": "compress_to_fp16=False"}

    def _convert(self, source: Path) -> Any:
        import openvino as ov

        try:
            return ov.convert_model(str(source))
        except Exception as exc:  # the frontends raise their own exception types
            raise QuantizationError(f"openvino could not convert {source}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _samples(batches: Iterable[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(b[i:i + 1]) for b in batches for i in range(len(b))]

    def _info(self, settings: QuantizationSettings, ignored: Sequence[str], started: float,
              method: str = "ptq") -> QuantizationInfo:
        return QuantizationInfo(tool=self.tool, version=self.version(), scheme=f"nncf-{method}-{settings.nncf_preset}",
                                activation_type="int8/uint8 by sign (symmetric, per-tensor)",
                                weight_type="int8 (symmetric, per-channel)", per_channel=True,
                                excluded_nodes=tuple(ignored), seconds=time.perf_counter() - started)

    def _save(self, model: Any, out_dir: Path) -> Path:
        import openvino as ov

        artifact = Path(out_dir) / ARTIFACT_NAME
        ov.save_model(model, str(artifact), compress_to_fp16=False)
        return artifact

    def quantize(self, source: Path, calibration: Iterable[np.ndarray], settings: QuantizationSettings,
                 out_dir: Path) -> tuple[Path, QuantizationInfo]:
        nncf = nncf_module()
        started = time.perf_counter()
        model = self._convert(source)
        ignored = ignored_ops(model, source, settings)
        samples = self._samples(calibration)
        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
        try:
            quantized = nncf.quantize(model, nncf.Dataset(samples), preset=preset[settings.nncf_preset],
                                      subset_size=len(samples), ignored_scope=nncf.IgnoredScope(names=ignored))
        except Exception as exc:  # NNCF raises its own and OpenVINO's exception types
            raise QuantizationError(f"nncf could not quantize {source}: {type(exc).__name__}: {exc}") from exc
        return self._save(quantized, out_dir), self._info(settings, ignored, started)
