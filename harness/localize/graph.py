"""The reference graph as localisation sees it: one site per node output, in topological order.

A *site* is one tensor a node computes (most nodes compute one). Sites whose value does not depend
on the image (constants and what is computed from them alone) are kept in the list, because the
layer table has one row per node, but marked ``constant``: they are not compared.

A *cut* is a site through which all of the image's data flows: after it, nothing computed before
it is needed except that tensor. Bisection searches over cuts (see :mod:`harness.localize.bisect`),
as msit's accuracy localisation linearises the graph before bisecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from harness.errors import UsageError


class GraphError(UsageError, ValueError):
    """An ONNX file localisation cannot work on (unreadable, several inputs, no nodes)."""


@dataclass(frozen=True)
class Site:
    """One node output of the reference graph."""

    index: int  # position in topological order (of nodes)
    node: str  # the node's name (its first output's name where the node has none)
    op: str
    output: str
    constant: bool  # does not depend on the image: not compared
    cut: bool = False


def load(path: Path) -> onnx.ModelProto:
    """The ONNX file at ``path`` (external data loaded), or a GraphError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise GraphError(f"{path}: not a readable ONNX model: {type(exc).__name__}: {exc}") from exc


def image_input(model: onnx.ModelProto) -> tuple[str, int]:
    """The graph's one non-initializer input: its name and ONNX element type."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise GraphError(f"expected one image input, the graph has {len(inputs)}: {[i.name for i in inputs]}")
    return inputs[0].name, inputs[0].type.tensor_type.elem_type


def final_outputs(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def topological_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes in a topological order, stable (file order where the file is already sorted)."""
    nodes = list(model.graph.node)
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    pending = {i: {produced_by[t] for t in n.input if t in produced_by and produced_by[t] != i}
               for i, n in enumerate(nodes)}
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, deps in pending.items():
        for d in deps:
            consumers[d].append(i)
    ready = sorted(i for i, deps in pending.items() if not deps)
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for c in consumers[i]:
            pending[c].discard(i)
            if not pending[c]:
                ready.append(c)
        ready.sort()
    if len(order) != len(nodes):
        raise GraphError("the graph has a cycle: it is not a valid ONNX model")
    return [nodes[i] for i in order]


def sites(model: onnx.ModelProto) -> list[Site]:
    """Every node output in topological order, with ``constant`` and ``cut`` marked."""
    nodes = topological_nodes(model)
    if not nodes:
        raise GraphError("the graph has no nodes")
    image, _ = image_input(model)
    dynamic = {image}
    for n in nodes:
        if any(t in dynamic for t in n.input):
            dynamic.update(o for o in n.output if o)
    # The last node index that reads each image-dependent tensor (graph outputs: read "at the end").
    last_use = {image: -1}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t in dynamic:
                last_use[t] = i
    for o in final_outputs(model):
        last_use[o] = len(nodes)
    out: list[Site] = []
    live: set[str] = {image}
    for i, n in enumerate(nodes):
        live.update(o for o in n.output if o in dynamic)
        live = {t for t in live if last_use.get(t, -1) > i}  # still needed after node i
        name = n.name or (n.output[0] if n.output else f"{n.op_type}_{i}")
        for o in n.output:
            if not o:
                continue
            cut = o in dynamic and live == {o}
            out.append(Site(index=i, node=name, op=n.op_type, output=o, constant=o not in dynamic, cut=cut))
    return out


# Names for importers that have locals called ``sites`` or ``load``.
load_onnx = load
sites_of = sites
