"""OpenVINO as a localisation target: the reference ONNX, converted and compiled at a precision.

The suite's :class:`~harness.backends.openvino.OpenVinoBackend` decides what may run: its
availability check, the device's ``OPTIMIZATION_CAPABILITIES`` (a bf16 or f16 run on a CPU that
lacks them is refused as :class:`~harness.backends.base.BackendUnavailable`, a skip, before
anything is compiled), and the compile properties (``config``: the explicit
``INFERENCE_PRECISION_HINT``, the performance hint, threads). The precision the compiled model
reports is read back and a silent swap refused, as the backend's ``open`` does. What differs from
the backend: the graph is read straight from ONNX (a prefix sub-graph or the full model), its batch
fixed to the program's, and any of its tensors can be made outputs
(:func:`harness.localize.expose.expose_openvino`); the program returns every output by tensor name.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.base import BackendUnavailable, InferenceError
from harness.localize.expose import expose_openvino
from harness.localize.graph import image_input
from harness.localize.targets import Program, Target, as_float32

# OPTIMIZATION_CAPABILITIES a CPU must list to run the reduced precisions natively.
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
_NUMPY: dict[int, type[np.generic]] = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.UINT8: np.uint8}


class OpenVinoTarget(Target):
    """The reference on OpenVINO at ``precision`` (fp32, bf16, fp16); ``options`` are the backend's
    (``device``, ``performance_hint``, ``allow_precision_fallback``)."""

    def __init__(self, reference: onnx.ModelProto, precision: str, input_shape: tuple[int, int, int],
                 threads: int | None = None, **options: Any):
        from harness.backends.openvino import OpenVinoBackend, precision_hint

        self.backend = OpenVinoBackend(threads=threads, **options)
        reason = self.backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"openvino backend unavailable: {reason}")
        self.precision = precision
        self.hint = precision_hint(precision)
        needed = _CAPABILITY.get(self.hint)
        capabilities = self.backend.capabilities()
        if needed and needed not in capabilities and not self.backend.allow_precision_fallback:
            raise BackendUnavailable(
                f"openvino {self.backend.device} cannot run {precision} natively: its OPTIMIZATION_CAPABILITIES are "
                f"{', '.join(capabilities)}, no {needed}; localise another --precision, or pass "
                "--backend-option allow_precision_fallback=true to run what OpenVINO picks"
            )
        self.source = reference
        self.input_name, elem = image_input(reference)
        self.dtype = np.dtype(_NUMPY.get(elem, np.float32))
        self.input_shape = tuple(input_shape)
        self.label = f"openvino {self.backend.version()} {self.backend.device} {precision}"
        self._tmp = tempfile.TemporaryDirectory(prefix="mzc-localize-ov-")
        self._count = 0
        self.used_precision: str | None = None

    def compile(self, model: onnx.ModelProto, outputs: Sequence[str] | None, batch: int) -> Program:
        core = self.backend.core()
        self._count += 1
        path = Path(self._tmp.name) / f"graph{self._count}.onnx"
        onnx.save(model, str(path))
        try:
            ov_model = core.read_model(str(path))
            ov_model.reshape({self.input_name: [batch, *self.input_shape]})
            if outputs:
                expose_openvino(ov_model, outputs)
            config = self.backend.config(self.precision)
            compiled = core.compile_model(ov_model, self.backend.device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses without a stable type
            raise InferenceError(f"{self.label}: cannot compile the graph: {type(exc).__name__}: {exc}") from exc
        finally:
            path.unlink(missing_ok=True)
        used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.used_precision = used
        if used != self.hint and not self.backend.allow_precision_fallback:
            raise BackendUnavailable(
                f"openvino {self.backend.device} was asked for {self.hint} ({self.precision}) but compiled {used}; "
                "pass --backend-option allow_precision_fallback=true to localise what it runs"
            )
        request = compiled.create_infer_request()
        ports = list(compiled.outputs)
        shape, dtype, label = (batch, *self.input_shape), self.dtype, self.label

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            n = x.shape[0]
            if n < batch:  # static batch: zero padding, its rows dropped
                padded = np.zeros(shape, dtype)
                padded[:n] = x
                x = padded
            try:
                result = request.infer({0: np.ascontiguousarray(x, dtype=dtype)})
            except Exception as exc:
                raise InferenceError(f"{label}: inference failed on a batch of shape {x.shape}: {exc}") from exc
            out: dict[str, np.ndarray] = {}
            for port in ports:
                value = as_float32(result[port])[:n]  # OpenVINO's buffer: valid until the next call
                for name in port.get_names():
                    out[name] = value
            return out

        return run

    def describe(self) -> dict[str, Any]:
        return {"target": self.label, "runtime": f"openvino {self.backend.version()}", "device": self.backend.device,
                "requested_precision": self.hint, "inference_precision": self.used_precision,
                "capabilities": self.backend.capabilities(), "threads": self.backend.threads}

    def close(self) -> None:
        self._tmp.cleanup()
