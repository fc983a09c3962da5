"""ONNX Runtime on the host CPU: the compiled artifact is the graph ORT optimized offline."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from harness.backends.base import BackendUnavailable, InferenceError, check_batch, check_logits
from harness.specs import CompileTarget

ARTIFACT_NAME = "model.ort.onnx"
INSTALL_HINT = "pip install 'onnxruntime>=1.16'"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX Runtime is not installed ({exc}); {INSTALL_HINT}") from exc
    return onnxruntime


class OnnxRuntimeSession:
    """One ORT InferenceSession; ``infer`` takes (N<=batch_size, 3, H, W) float32."""

    def __init__(self, session: Any, target: CompileTarget, num_classes: int):
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self.batch_size = target.batch_size
        self._shape = target.input_shape
        self._num_classes = num_classes

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.batch_size, self._shape, "onnxruntime")
        try:
            (out,) = self._session.run([self._output], {self._input: batch})
        except Exception as exc:  # ORT raises its own exception types per failure kind
            raise InferenceError(f"onnxruntime failed on a batch of shape {batch.shape}: {exc}") from exc
        return check_logits(out, batch.shape[0], self._num_classes, "onnxruntime")


class OnnxRuntimeBackend:
    """ONNX Runtime, CPU execution provider.

    ``compile`` runs ORT's offline graph optimizations (extended level, the portable one) and
    saves the optimized model; ``open`` loads it with spinning disabled so that timings stay
    stable when anything else runs on the host.
    """

    name: ClassVar[str] = "onnxruntime"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def unavailable_reason(self) -> str | None:
        try:
            _ort()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def version(self) -> str:
        return str(_ort().__version__)

    def compile_fields(self) -> Mapping[str, str]:
        return {"onnxruntime": self.version(), "optimization": "extended", "provider": "CPUExecutionProvider"}

    def _options(self, ort: Any) -> Any:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        if target.precision != "fp32":
            raise BackendUnavailable(
                f"the onnxruntime CPU backend compiles fp32 only, asked for {target.precision}; "
                "use --precision fp32 (fp16 gives no speed-up on CPU EPs)"
            )
        ort = _ort()
        opts = self._options(ort)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        artifact = out_dir / ARTIFACT_NAME
        opts.optimized_model_filepath = str(artifact)
        ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        if not artifact.is_file():
            raise InferenceError(f"onnxruntime did not write the optimized model {artifact}")
        return artifact

    @contextmanager
    def open(self, artifact: Path, target: CompileTarget, device_id: int = 0, num_classes: int = 1000) -> Iterator[OnnxRuntimeSession]:
        ort = _ort()
        opts = self._options(ort)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(artifact), sess_options=opts, providers=["CPUExecutionProvider"])
        try:
            yield OnnxRuntimeSession(session, target, num_classes)
        finally:
            del session

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self.version(),
            "provider": "CPUExecutionProvider",
            "threads": self.threads or os.cpu_count(),
        }
