"""OpenVINO INT8: NNCF post-training quantization of the IR (``nncf.quantize``, performance preset).

The float ONNX is converted (``openvino.convert_model``, dynamic batch as exported), quantized by
NNCF on the calibration images one at a time (its statistics are per sample; batched samples
change them), and saved as an IR with float32 weights where they stay float
(``compress_to_fp16=False``). The OpenVINO backend's ``compile`` then reads that IR, fixes its batch
and runs it; the CPU plugin executes the FakeQuantize-wrapped convolutions in int8.

NNCF quantizes weights per channel and symmetrically, activations per tensor (the performance
preset: symmetric too, unsigned where a tensor is never negative), so the scheme is NNCF's own and
[int8] ``scheme`` / ``activation_type`` / ``weight_type`` of fixtures/policy.toml (ONNX Runtime's
choices) do not apply: the record says what NNCF did. One exception: ``scheme = qdq-per-tensor``
asks NNCF for per-tensor weight scales (the deliberately bad quantization the way back to float
is measured on). Nodes kept in float (the logits layer,
``--keep-float``: ONNX node names) become NNCF's ignored scope, matched to the IR's operations by the
tensor names the ONNX node writes.

The way back to float on OpenVINO is NNCF's own accuracy-controlled quantization
(:meth:`NncfQuantizer.quantize_with_accuracy_control`, driven by harness.localize.keep_float_run):
the layers NNCF reverts to float are read back from the IR and named as ONNX nodes, a
``--keep-float`` setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.quantization import (
    PER_TENSOR,
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
    """The operations writing ``tensor_names``, and the weighted operation under a bias ``Add``: the
    ONNX frontend splits a Conv with bias into ``Convolution`` (no tensor name) + ``Add`` (the name)."""
    found = []
    for op in model.get_ordered_ops():
        if any(tensor_names & set(out.get_names()) for out in op.outputs()):
            above = op.inputs()[0].get_source_output().get_node() if op.get_type_name() == "Add" else None
            if above is not None and above.get_type_name() in _WEIGHTED:
                found.append(above.get_friendly_name())
            found.append(op.get_friendly_name())
    return found


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
                "keep_float": sorted(settings.keep_float), "ir": "compress_to_fp16=False",
                **({"keep_float_ops": "weighted op and its bias Add"} if settings.keep_float else {}),
                **({"weights": "per-tensor"} if settings.scheme == PER_TENSOR else {})}

    @staticmethod
    def _restorer(max_iterations: int | None) -> Any:
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        return AdvancedAccuracyRestorerParameters(**({"max_num_iterations": max_iterations} if max_iterations else {}))

    @staticmethod
    def _advanced(nncf: Any, settings: QuantizationSettings) -> Any:
        """NNCF's advanced parameters: per-tensor weights for ``scheme = qdq-per-tensor``, else its defaults."""
        if settings.scheme != PER_TENSOR:
            return None
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

        return AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=False))

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
        per_tensor = settings.scheme == PER_TENSOR
        return QuantizationInfo(tool=self.tool, version=self.version(), scheme=f"nncf-{method}-{settings.nncf_preset}",
                                activation_type="int8/uint8 by sign (symmetric, per-tensor)",
                                weight_type=f"int8 (symmetric, {'per-tensor' if per_tensor else 'per-channel'})",
                                per_channel=not per_tensor,
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
                                      subset_size=len(samples), ignored_scope=nncf.IgnoredScope(names=ignored),
                                      advanced_parameters=self._advanced(nncf, settings))
        except Exception as exc:  # NNCF raises its own and OpenVINO's exception types
            raise QuantizationError(f"nncf could not quantize {source}: {type(exc).__name__}: {exc}") from exc
        return self._save(quantized, out_dir), self._info(settings, ignored, started)

    def quantize_with_accuracy_control(
        self, source: Path, calibration: Iterable[np.ndarray], validation: Sequence[tuple[np.ndarray, int]],
        settings: QuantizationSettings, out_dir: Path, max_drop_points: float,
        validate: Callable[[Any, Iterable[tuple[np.ndarray, int]]], tuple[float, list[float]]],
        max_iterations: int | None = None,
    ) -> tuple[Path, QuantizationInfo]:
        """NNCF's way back to float: quantize, then revert to float the quantizers that cost the most
        on ``validation`` ((image batch of one, label) pairs) until ``validate`` (a fraction, higher
        is better, with its per-item values) is at most ``max_drop_points`` below the float model's, in
        at most ``max_iterations`` reverts. The record's excluded nodes are the IR operations left
        float (:func:`float_weighted_ops`)."""
        nncf = nncf_module()
        started = time.perf_counter()
        model = self._convert(source)
        ignored = ignored_ops(model, source, settings)
        samples = self._samples(calibration)
        try:
            quantized = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(samples), nncf.Dataset(list(validation), lambda item: item[0]), validate,
                max_drop=max_drop_points / 100.0, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(samples),
                preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=nncf.IgnoredScope(names=ignored),
                advanced_quantization_parameters=self._advanced(nncf, settings),
                advanced_accuracy_restorer_parameters=self._restorer(max_iterations))
        except Exception as exc:  # NNCF raises its own and OpenVINO's exception types
            raise QuantizationError(f"nncf could not quantize {source} with accuracy control: "
                                    f"{type(exc).__name__}: {exc}") from exc
        kept = list(ignored) + sorted(float_weighted_ops(quantized) - set(ignored))
        return self._save(quantized, out_dir), self._info(settings, kept, started, "accuracy-control")


def float_weighted_ops(model: Any) -> set[str]:
    """The weighted operations of a quantized IR whose weights are not quantized (a plain Constant,
    perhaps through a Convert, feeds them, no FakeQuantize or dequantizing Multiply): the layers
    NNCF left or reverted to float."""
    found = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _WEIGHTED:
            continue
        weight = op.inputs()[1].get_source_output().get_node()
        while weight.get_type_name() in ("Convert", "Reshape"):
            weight = weight.inputs()[0].get_source_output().get_node()
        if weight.get_type_name() == "Constant":
            found.add(op.get_friendly_name())
    return found


def onnx_nodes_of(model: Any, ops: Iterable[str], onnx_source: Path) -> list[str]:
    """The ONNX nodes whose output tensors the IR operations ``ops`` write: the ``--keep-float``
    setting that makes :func:`ignored_ops` ignore those operations again."""
    import onnx

    graph = onnx.load(str(onnx_source), load_external_data=False).graph
    writes = {o: n.name for n in graph.node for o in n.output}
    wanted = set(ops)
    found: list[str] = []
    for op in model.get_ordered_ops():
        if op.get_friendly_name() in wanted:
            bias = [i.get_node() for i in op.output(0).get_target_inputs() if i.get_node().get_type_name() == "Add"]
            for name in (writes[t] for o in [op, *bias] for out in o.outputs() for t in out.get_names() if t in writes):
                if name not in found:
                    found.append(name)
    return found
