"""Models that take raw uint8 pixels: normalization folded into the ONNX graph.

The exported classifier takes ``(N, 3, H, W)`` float32 images already normalized with the
model's mean and std. :func:`uint8_input_model` returns the same classifier with a ``(N, 3, H, W)``
uint8 input (same name, same dynamic batch dimension) and the normalization as its first nodes::

    Cast(to=float) -> Div(255) -> Sub(mean) -> Div(std) -> the original graph

These are the very float32 operations, in the same order, that :func:`harness.data.normalize`
performs (torchvision's ``ToTensor()`` + ``Normalize``), so the graph sees bit-identical inputs.
Division is kept, not replaced by multiplication with a reciprocal, because ``x * (1/255)`` is not
always the correctly rounded ``x / 255``; the two extra nodes cost nothing next to the first
convolution.

Why: the host feeds the pixels the uint8 cache already holds, with no per-batch normalization on
the host, and the host-to-device traffic per image drops 4x (1 byte per value instead of 4:
150,528 bytes instead of 602,112 at 224x224), which matters to accelerators fed over PCIe
(Ascend's AIPP does the same inside the .om). Every backend that compiles ONNX takes the result
unchanged; sessions then expect uint8 batches (``input_dtype``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.cache import ArtifactCache, file_sha256
from harness.errors import HarnessError

UINT8_ONNX_FILENAME = "model.u8.onnx"
# Bump when the inserted nodes change: cached uint8 models then stop matching.
FORMAT = 1
METADATA_KEY = "modelzoo_cert.uint8_input"


class Uint8InputError(HarnessError, ValueError):
    """The model cannot be given a uint8 input: the message says what was expected and found."""


def _float32_list(values: Sequence[float]) -> list[float]:
    """``values`` as the float32 numbers the graph holds, for keys and metadata."""
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


def _channel_constant(values: Sequence[float], name: str, what: str) -> onnx.TensorProto:
    arr = np.asarray(values, dtype=np.float32)
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise Uint8InputError(f"{what}: expected 3 finite numbers (one per RGB channel), found {list(values)}")
    if what == "std" and (arr <= 0).any():
        raise Uint8InputError(f"std: expected 3 positive numbers, found {list(values)}")
    return numpy_helper.from_array(arr.reshape(1, 3, 1, 1), name)


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _graph_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def uint8_input_model(model: onnx.ModelProto, mean: Sequence[float], std: Sequence[float]) -> onnx.ModelProto:
    """A copy of ``model`` whose one image input is uint8 NCHW, normalization folded in.

    ``model`` must have exactly one non-initializer input, float32 of rank 4 with 3 channels;
    its name and its dimensions (the dynamic batch among them) are kept. ``mean``/``std`` are
    the model's normalization (``PreprocessSpec.mean`` / ``.std``). Raises
    :class:`Uint8InputError` otherwise.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise Uint8InputError(
            f"expected one image input, found {len(inputs)}: {[i.name for i in inputs]}"
        )
    image = inputs[0]
    tensor_type = image.type.tensor_type
    dims = list(tensor_type.shape.dim)
    found = f"{TensorProto.DataType.Name(tensor_type.elem_type)} with {len(dims)} dims"
    if tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4:
        raise Uint8InputError(f"input {image.name!r}: expected a FLOAT (N, 3, H, W) tensor, found {found}")
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise Uint8InputError(f"input {image.name!r}: expected 3 channels, found {dims[1].dim_value}")

    taken = _graph_names(graph)
    normalized = _unique(f"{image.name}_normalized", taken)
    # Every consumer of the float input now reads the normalized tensor instead.
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == image.name:
                node.input[k] = normalized
    for output in graph.output:
        if output.name == image.name:
            raise Uint8InputError(f"input {image.name!r} is also a graph output; expected a classifier")
    kept_info = [v for v in graph.value_info if v.name != image.name]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)

    as_float = _unique(f"{image.name}_float", taken)
    scaled = _unique(f"{image.name}_scaled", taken)
    centered = _unique(f"{image.name}_centered", taken)
    c255, c_mean, c_std = (_unique(f"{image.name}_{n}", taken) for n in ("255", "mean", "std"))
    constants = [
        numpy_helper.from_array(np.array(255, dtype=np.float32), c255),
        _channel_constant(mean, c_mean, "mean"),
        _channel_constant(std, c_std, "std"),
    ]
    nodes = [
        helper.make_node(
            "Cast", [image.name], [as_float], name=_unique("uint8_input_cast", taken), to=TensorProto.FLOAT
        ),
        helper.make_node("Div", [as_float, c255], [scaled], name=_unique("uint8_input_div255", taken)),
        helper.make_node("Sub", [scaled, c_mean], [centered], name=_unique("uint8_input_sub_mean", taken)),
        helper.make_node("Div", [centered, c_std], [normalized], name=_unique("uint8_input_div_std", taken)),
    ]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.initializer.extend(constants)
    tensor_type.elem_type = TensorProto.UINT8

    meta = {p.key: p.value for p in out.metadata_props}
    meta[METADATA_KEY] = (
        f"uint8 NCHW input; normalized in-graph as (x / 255 - mean) / std in float32, "
        f"mean={_float32_list(mean)} std={_float32_list(std)}"
    )
    helper.set_model_props(out, meta)
    try:
        onnx.checker.check_model(out, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Uint8InputError(
            f"the uint8-input model fails the ONNX checker: {str(exc).strip().splitlines()[0]}"
        ) from exc
    return out


def make_uint8_input(
    onnx_path: Path, out_path: Path, mean: Sequence[float], std: Sequence[float]
) -> Path:
    """Write the uint8-input version of ``onnx_path`` to ``out_path`` (one file, checked); return it.

    The file appears atomically: a failed conversion leaves nothing at ``out_path``.
    """
    model = onnx.load(str(onnx_path))
    converted = uint8_input_model(model, mean, std)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        onnx.save_model(converted, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def cached_uint8_onnx(
    cache: ArtifactCache, onnx_path: Path, mean: Sequence[float], std: Sequence[float]
) -> Path:
    """The uint8-input version of ``onnx_path`` from ``cache``, made once per (ONNX, mean, std)."""
    inputs: Mapping[str, Any] = {
        "onnx_sha256": file_sha256(Path(onnx_path)),
        "mean": _float32_list(mean),
        "std": _float32_list(std),
        "format": FORMAT,
        "onnx": onnx.__version__,
    }

    def build(tmp: Path) -> Mapping[str, Any]:
        path = make_uint8_input(Path(onnx_path), tmp / UINT8_ONNX_FILENAME, mean, std)
        return {"source_onnx": str(onnx_path), "sha256": file_sha256(path), "input": "uint8 NCHW"}

    entry = cache.get_or_build("onnx-uint8", inputs, build)
    return entry.path / UINT8_ONNX_FILENAME
