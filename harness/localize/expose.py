"""The *expose* method: every intermediate tensor made an output of the model, so one run shows all.

ONNX (ONNX Runtime): the tensors are appended to the graph's outputs (:func:`expose_onnx`), as
Polygraphy's ``--onnx-outputs mark all`` and msit's ``new_<model>.onnx`` do. OpenVINO: the
converted model's ``add_outputs`` with the ONNX tensor names, which its ONNX front end keeps on the
tensors it converts (:func:`openvino_names`); tensors it folds or fuses away while converting have
no name left and cannot be exposed (their rows say "not compared").

Exposing a tensor stops a runtime from fusing the node that computes it with the next one (the
tensor must exist in memory, in the precision the runtime stores it in). Where that changes the
candidate's numbers, the exposed run no longer shows the error being localised; the orchestrator
(:mod:`harness.localize.pipeline`) measures that and bisects instead (:mod:`harness.localize.bisect`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import onnx


def expose_onnx(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are its own plus every tensor of ``names`` it computes.

    The added outputs carry no type: ONNX Runtime takes the type its own inference gives them, so
    a float16 model's tensors come out as float16 (the caller converts for comparison).
    """
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o for n in model.graph.node for o in n.output if o}
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name in present and name not in have:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return exposed


def openvino_names(model: Any) -> set[str]:
    """Every tensor name an ``openvino.Model``'s operations output (what ``add_outputs`` accepts)."""
    names: set[str] = set()
    for op in model.get_ops():
        if op.get_type_name() in ("Parameter", "Result", "Constant"):
            continue
        for port in op.outputs():
            names |= set(port.get_names())
    return names


def expose_openvino(model: Any, names: Iterable[str]) -> list[str]:
    """Add every tensor of ``names`` the ``openvino.Model`` has as an output; the names added."""
    available = openvino_names(model)
    have = {n for out in model.outputs for n in out.get_names()}
    wanted = [n for n in dict.fromkeys(names) if n in available and n not in have]
    if wanted:
        model.add_outputs(wanted)
    return wanted
