"""Where a model runs for localisation: the reference (ONNX Runtime, CPU, fp32) and the candidates.

A :class:`Target` compiles an ONNX graph (the whole model, a copy with every tensor exposed, or a
prefix sub-graph) into a :class:`Program`, which maps a batch of images to float32 arrays by
tensor name. Unlike a :class:`harness.backends.base.Session`, whose output is checked to be
logits, a program returns whatever tensors the graph outputs: that is what comparing layers needs.

- :class:`OrtTarget`: ONNX Runtime on the CPU. The reference (graph optimizations at the basic
  level: constant folding and semantics-preserving rewrites, none of the extended level's fused
  kernels) and ONNX candidates (a ``--candidate`` file, run as ONNX Runtime runs it by default,
  every optimization on).
- :func:`float16_model`: onnxconverter-common's fp16 conversion (``--backend onnxruntime
  --precision fp16``); the backends' candidates are made in :mod:`harness.localize.candidates`.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from harness.backends.base import BackendUnavailable, InferenceError
from harness.errors import UsageError
from harness.localize.expose import expose_onnx
from harness.localize.graph import image_input

# A batch in, float32 arrays by tensor name out; the arrays may be the runtime's buffers, valid
# until the program's next call (copy what you keep).
Program = Callable[[np.ndarray], "dict[str, np.ndarray]"]
FLOAT16_HINT = "pip install onnxconverter-common (the fp16 conversion of the issue's fp16 case)"


class Target(ABC):
    """One runtime and precision. ``source`` is the graph whose tensors it computes: prefix
    sub-graphs for bisection are cut from it. ``can_expose`` is False where the runtime cannot make
    intermediate tensors outputs (then only bisection runs)."""

    label: str
    source: onnx.ModelProto
    can_expose: bool = True

    @abstractmethod
    def compile(self, model: onnx.ModelProto, outputs: Sequence[str] | None, batch: int) -> Program:
        """``model`` compiled for batches of at most ``batch`` images, with ``outputs`` (tensor names)
        exposed besides its own outputs (None: its own outputs only)."""

    def describe(self) -> dict[str, Any]:
        return {"target": self.label}

    def close(self) -> None:
        """Release what the target holds (temporary files, devices)."""
        return None  # the default holds nothing


def as_float32(value: Any) -> np.ndarray:
    """A runtime's output as a float32 array (float16 / bfloat16 / float64 converted)."""
    array = np.asarray(value)
    return array if array.dtype == np.float32 else array.astype(np.float32)


class OrtTarget(Target):
    """ONNX Runtime on the CPU; ``level`` is ``basic`` (the reference) or ``all`` (as ORT runs a model
    by default). Spinning is off, as in the suite's backend."""

    def __init__(self, model: onnx.ModelProto, label: str, level: str = "basic", threads: int | None = None):
        self.source = model
        self.label = label
        self.level = level
        self.threads = threads

    def _session(self, model: onnx.ModelProto) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.level == "all"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT's own exception types
            raise InferenceError(f"{self.label}: onnxruntime cannot load the graph: {exc}") from exc

    def compile(self, model: onnx.ModelProto, outputs: Sequence[str] | None, batch: int) -> Program:
        graph = expose_onnx(model, outputs) if outputs else model
        session = self._session(graph)
        input_name = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        label = self.label

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            try:
                values = session.run(names, {input_name: x})
            except Exception as exc:
                raise InferenceError(f"{label}: onnxruntime failed on a batch of shape {x.shape}: {exc}") from exc
            return {n: as_float32(v) for n, v in zip(names, values, strict=True)}

        return run

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"target": self.label, "runtime": f"onnxruntime {ort.__version__}", "optimization": self.level,
                "threads": self.threads or os.cpu_count()}


def float16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxconverter-common's float16 conversion, inputs and outputs kept float32."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendUnavailable(f"onnxconverter-common is not installed ({exc}); {FLOAT16_HINT}") from exc
    with warnings.catch_warnings():
        # One UserWarning per weight below float16's range (truncated to 1e-7): hundreds of lines.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(model, keep_io_types=True)


def reference_target(model: onnx.ModelProto, threads: int | None = None) -> OrtTarget:
    """The reference: ONNX Runtime, CPU, fp32, basic optimizations."""
    _name, elem = image_input(model)
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8):
        raise UsageError(
            f"the reference's input is {onnx.TensorProto.DataType.Name(elem)}; expected float or uint8 images"
        )
    return OrtTarget(model, "reference: onnxruntime CPU fp32", "basic", threads)
