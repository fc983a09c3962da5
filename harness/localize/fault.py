"""A planted fault: a copy of an ONNX model with one node's weight scaled, for checking localisation.

The localisation of a real conversion bug cannot be checked against a known answer; a planted one
can: the node whose initializer was changed must be the one named. ``python -m harness localize
--candidate`` takes the file :func:`plant_fault` writes (docs/localize.md shows the recipe).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from harness.errors import UsageError


def plant_fault(model: onnx.ModelProto, node: str, scale: float = 1.5, input_index: int = 1) -> onnx.ModelProto:
    """A copy of ``model`` whose node ``node`` reads its input ``input_index`` (an initializer: a
    Conv's or Gemm's weight by default) multiplied by ``scale``. The initializer is copied under a
    new name, so other nodes that share it keep the original."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    target = next((n for n in out.graph.node if n.name == node), None)
    if target is None:
        raise UsageError(f"no node named {node!r} in the model")
    if input_index >= len(target.input):
        raise UsageError(f"node {node!r} has {len(target.input)} inputs, no input {input_index}")
    inits = {i.name: i for i in out.graph.initializer}
    name = target.input[input_index]
    if name not in inits:
        raise UsageError(f"input {input_index} of node {node!r} ({name!r}) is not an initializer")
    values = numpy_helper.to_array(inits[name])
    corrupted = numpy_helper.from_array((values * np.asarray(scale, values.dtype)).astype(values.dtype),
                                        name=f"{name}_planted_fault")
    out.graph.initializer.append(corrupted)
    target.input[input_index] = corrupted.name
    return out
