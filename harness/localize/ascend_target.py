"""Ascend (ATC + ais_bench) as a localisation target: compiled prefix sub-graphs only.

Each graph (the full reference for the first pass, then one prefix sub-graph per bisection probe)
is compiled by the suite's :class:`~harness.backends.ascend.AscendBackend` with exactly the ATC
command it certifies with (:func:`harness.backends.ascend_tools.atc.atc_command`: framework, input
shape, soc_version, precision mode), then loaded with ais_bench's ``InferSession``; the program
returns the sub-graph's outputs (ais_bench returns every model output, float16 ones converted).

Why prefixes and not ATC's ``--out_nodes`` (docs/localize.md has the long form): ATC's fusion
passes leave a node unfused when its output must be a model output, so marking every node an
output compiles a different model (the very effect bisection avoids), and one .om with ~100
outputs needs an output buffer per node. A prefix is compiled as the production model is, and
bisection needs about log2(cuts) + block size ATC runs. msit's own accuracy localisation compiles
sub-graphs with ATC the same way. Not verified on an NPU (none here): tested through the doubles
of tests/doubles/, which run the compiled graph on ONNX Runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.base import BackendUnavailable, InferenceError
from harness.errors import UsageError
from harness.localize.graph import final_outputs, image_input
from harness.localize.targets import Program, Target, as_float32
from harness.specs import CompileTarget


class AscendTarget(Target):
    """The reference compiled by ATC at ``precision`` (fp16: ATC's default force_fp16; fp32:
    force_fp32; or the ``precision_mode`` option); ``options`` are the Ascend backend's, plus
    ``device_id``."""

    can_expose = False

    def __init__(self, reference: onnx.ModelProto, precision: str, input_shape: tuple[int, int, int],
                 options: Mapping[str, str] | None = None):
        from harness.backends.ascend import AscendBackend

        options = dict(options or {})
        try:
            self.device_id = int(options.pop("device_id", "0"))
        except ValueError as exc:
            raise UsageError(f"--backend-option device_id: expected an integer, {exc}") from None
        self.backend = AscendBackend(**options)
        reason = self.backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        self.source = reference
        self.input_name, _ = image_input(reference)
        c, h, w = input_shape  # a tuple, also when given a list
        self.input_shape = (c, h, w)
        self.precision = precision
        self.label = f"ascend {self.backend.soc_version} ({self.backend.version()}) {precision}"
        self._tmp = tempfile.TemporaryDirectory(prefix="mzc-localize-atc-")
        self._count = 0
        self._sessions: list[Any] = []

    def _target(self, batch: int) -> CompileTarget:
        return CompileTarget(chip=self.backend.soc_version, batch_size=batch, input_shape=self.input_shape,
                             input_name=self.input_name, precision=self.precision)

    def compile(self, model: onnx.ModelProto, outputs: Sequence[str] | None, batch: int) -> Program:
        if outputs:
            raise UsageError("the ascend target compiles prefix sub-graphs only (method bisect), it exposes no tensors")
        from harness.backends.ascend_tools.infer_session import FINALIZER, load_failure

        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            raise BackendUnavailable(f"ais_bench cannot be imported ({exc})") from exc
        self._count += 1
        work = Path(self._tmp.name) / f"graph{self._count}"
        work.mkdir()
        onnx_path = work / "graph.onnx"
        onnx.save(model, str(onnx_path))
        om = self.backend.compile(onnx_path, self._target(batch), work)
        where = f"{self.label} device {self.device_id} {onnx_path.parent.name} bs{batch}"
        try:
            session = InferSession(self.device_id, str(om))
        except Exception as exc:  # aclruntime raises RuntimeError with the ACL error code
            raise load_failure(where, self.device_id, f"ais_bench could not load the model: {exc}") from exc
        FINALIZER.track(InferSession, session)
        self._sessions.append(session)
        names = final_outputs(model)

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            n = x.shape[0]
            if n < batch:  # static batch: repeat the last image; its outputs are dropped
                x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)], axis=0)
            try:
                values = session.infer([np.ascontiguousarray(x)], mode="static")
            except Exception as exc:
                raise InferenceError(f"{where}: ais_bench inference failed: {type(exc).__name__}: {exc}") from exc
            if len(values) != len(names):
                raise InferenceError(f"{where}: ais_bench returned {len(values)} outputs, the graph has {len(names)}")
            out = {}
            for name, value in zip(names, values, strict=True):
                array = as_float32(value)
                out[name] = array.reshape(batch, -1)[:n]  # flattened per image: metrics need no layout
            return out

        return run

    def describe(self) -> dict[str, Any]:
        return {"target": self.label, **self.backend.describe(), "device_id": self.device_id}

    def close(self) -> None:
        from harness.backends.ascend_tools.infer_session import free_resource

        for session in self._sessions:
            free_resource(session)
        self._sessions.clear()
        self._tmp.cleanup()
