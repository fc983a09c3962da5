"""Nodes kept in float read float activations, not ONNX Runtime's fake-quantized ones.

ONNX Runtime's ``nodes_to_exclude`` (onnxruntime/quantization/base_quantizer.py
``should_quantize_node``) only stops the quantizer from quantizing the excluded node itself: its
weights stay float, but a tensor that another node marks for quantization (every quantized Conv marks
its own output, qdq_quantizer.py ``QDQConv.quantize``) gets one QuantizeLinear/DequantizeLinear pair
that *all* its consumers read (``_add_qdq_pair_for_activation``: ``replace_input_of_all_nodes``),
the excluded node included. Worse, a Clip/Relu between a quantized Conv and the excluded node is
removed (``QDQRemovableActivation``): the Conv writes the activation's tensor and the Q's range does
the clipping. Measured on efficientnet_lite0: a depthwise conv kept in float read
``DQ(Q(conv_pw output))``, the ReLU6 before it folded away.

:func:`float_inputs` rewires each kept node's activation inputs to the float tensors the Q pairs
quantize, re-inserts (from the float source) an activation ORT folded, and deletes the Q/DQ pairs
nobody reads any more. A kept node then computes in float from float inputs, as in the source
model; what it writes is quantized only where an int8 consumer reads it (that consumer's input).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

FOLDABLE = ("Clip", "Relu")


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _float_tensor(model: onnx.ModelProto, source: onnx.ModelProto, tensor: str, wanted: str,
                  added: list[onnx.NodeProto]) -> str | None:
    """The float tensor behind ``tensor`` when it is the output of a DequantizeLinear of an activation
    (None otherwise); ``wanted`` is the tensor the source model's node reads there."""
    made = _producers(model)
    dq = made.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = made.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None  # a weight's DQ (its initializer is int8): not an activation
    x = q.input[0]
    source_made = _producers(source)
    folded = source_made.get(wanted)
    if x != wanted or folded is None or folded.op_type not in FOLDABLE:
        return x
    if made.get(x) is not None and made[x].op_type == folded.op_type:
        return x  # the activation is still there
    # ORT folded the activation into the Q's range: compute it again, in float, from what feeds it
    copy = onnx.NodeProto()
    copy.CopyFrom(folded)
    copy.name = f"{folded.name}_keep_float"
    copy.input[0] = x
    copy.output[0] = f"{wanted}_keep_float"
    if not any(n.output[0] == copy.output[0] for n in added):
        added.append(copy)
    return copy.output[0]


def _initializers_used_by(node: onnx.NodeProto, source: onnx.ModelProto) -> list[onnx.TensorProto]:
    inits = {i.name: i for i in source.graph.initializer}
    return [inits[i] for i in node.input if i in inits]


def _prune(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads (repeatedly), then unread initializers."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    read = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)


def float_inputs(model: onnx.ModelProto, source: onnx.ModelProto, nodes: Iterable[str]) -> list[str]:
    """Make each node of ``nodes`` read float activations in the QDQ ``model`` (changed in place);
    ``source`` is the float model it was quantized from. Returns the inputs rewired, as
    ``node:input`` strings."""
    wanted = {n.name: n for n in source.graph.node}
    by_name = {n.name: n for n in model.graph.node}
    added: list[onnx.NodeProto] = []
    rewired = []
    for name in nodes:
        node, original = by_name.get(name), wanted.get(name)
        if node is None or original is None:
            continue
        for k, tensor in enumerate(node.input):
            if k >= len(original.input):
                break
            found = _float_tensor(model, source, tensor, original.input[k], added)
            if found is not None and found != tensor:
                node.input[k] = found
                rewired.append(f"{name}:{original.input[k]}")
    have = {i.name for i in model.graph.initializer}
    for extra in added:
        for init in _initializers_used_by(extra, source):
            if init.name not in have:
                model.graph.initializer.append(init)
                have.add(init.name)
    if added:  # keep the graph topologically sorted: each copy right before its first reader
        order = list(model.graph.node)
        for extra in added:
            first = next(i for i, n in enumerate(order) if extra.output[0] in n.input)
            order.insert(first, extra)
        del model.graph.node[:]
        model.graph.node.extend(order)
    _prune(model)
    return rewired


def activation_inputs_quantized(model: onnx.ModelProto, nodes: Iterable[str]) -> dict[str, list[str]]:
    """For each node of ``nodes``: the inputs it reads through a DequantizeLinear (a fake-quantized
    activation or a quantized weight). Empty lists: the node computes in float from float tensors."""
    made = _producers(model)
    by_name = {n.name: n for n in model.graph.node}
    return {name: [i for i in by_name[name].input if i in made and made[i].op_type == "DequantizeLinear"]
            for name in nodes if name in by_name}
