"""torch module -> ONNX (named input, dynamic batch, exact opset) -> simplified, checked ONNX.

The TorchScript exporter (``dynamo=False``) is used on purpose: in this torch the dynamo
exporter writes opset 18 whatever opset is asked for, logs its failed down-conversion only as a
warning and writes external data (measured with the torch this suite pins). Every file is
checked with the full ONNX checker and its opset is read back from the file, so a wrong opset
can never reach ATC unnoticed.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from harness.cache import ArtifactCache, file_sha256
from harness.errors import HarnessError
from harness.model.lazy import ModuleOrBuild, resolve
from harness.model.weights import WeightsInfo
from harness.specs import ModelSpec, as_dict
from harness.versions import installed_version

ONNX_FILENAME = "model.onnx"
BATCH_DIM = "batch"
EXPORTER = "torch.onnx.export(dynamo=False)"


class ExportError(HarnessError, RuntimeError):
    """Export, simplification or validation of an ONNX file failed."""


def _version(dist: str) -> str:
    """``dist``'s installed version, or ``"not installed"`` (the string cache keys have always held)."""
    found = installed_version(dist)
    return found[1] if found is not None else "not installed"


def tool_versions() -> dict[str, str]:
    """Versions of every library that decides the exported file (part of the cache key)."""
    return {name: _version(name) for name in ("torch", "torchvision", "timm", "onnx", "onnxslim")}


def _default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.HasField("dim_param") else int(d.dim_value) if d.HasField("dim_value") else "?")
    return dims


def validate_onnx(path: Path, opset: int, input_name: str, output_name: str) -> onnx.ModelProto:
    """Full ONNX check plus what the suite relies on: the opset in the file, names, dynamic batch.

    Returns the loaded model; raises ExportError naming what was expected and what was found.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path} fails the ONNX checker: {str(exc).strip().splitlines()[0]}") from exc
    model = onnx.load(str(path))
    found_opset = _default_opset(model)
    if found_opset != opset:
        raise ExportError(
            f"{path} declares opset {found_opset} but opset {opset} was requested; ATC and the "
            "accuracy baselines need the requested one (is the dynamo exporter in use?)"
        )
    inputs, outputs = _graph_io(model)
    if [i.name for i in inputs] != [input_name] or [o.name for o in outputs] != [output_name]:
        raise ExportError(
            f"{path}: expected input {[input_name]} and output {[output_name]}, found inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in outputs]} "
            "(input_name/output_name in fixtures/models.toml)"
        )
    for value in (inputs[0], outputs[0]):
        dims = _dims(value)
        if not dims or not isinstance(dims[0], str) or dims[0] == "?":
            raise ExportError(f"{path}: {value.name} must have a named dynamic batch dimension, found shape {dims}")
    return model


def export_onnx(
    module: nn.Module, spec: ModelSpec, out_path: Path, opset: int = 11, simplify: bool = True
) -> dict[str, Any]:
    """Export ``module`` to a single, checked ONNX file at ``out_path``; return manifest info.

    The input is named ``spec.input_name`` with shape ``(batch, *spec.input_shape)``, the output
    ``spec.output_name`` with a dynamic batch. With ``simplify`` the graph goes through onnxslim;
    a failing simplifier is an error, not a silent skip, because the simplified graph is what
    certification compiles. ``out_path`` appears atomically, only once it passed every check.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    module = module.eval()
    example = torch.zeros(1, *spec.input_shape, dtype=torch.float32)
    module = static_same_padding(module, example)
    started = time.perf_counter()
    try:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # The TorchScript exporter is deprecated in favour of dynamo, which cannot write opset 11.
                warnings.simplefilter("ignore", category=DeprecationWarning)
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    export_params=True,
                    opset_version=opset,
                    do_constant_folding=True,
                    input_names=[spec.input_name],
                    output_names=[spec.output_name],
                    dynamic_axes={spec.input_name: {0: BATCH_DIM}, spec.output_name: {0: BATCH_DIM}},
                )
        except OSError:
            # The disk, not the exporter (a full cache disk): the cache reports it with the fix.
            raise
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export of {spec.name} ({spec.arch.source}:{spec.arch.name}) at opset "
                f"{opset} failed: {type(exc).__name__}: {exc}"
            ) from exc
        model = onnx.load(str(tmp))
        _check_io(model, spec, tmp)
        nodes_exported = len(model.graph.node)
        simplifier: str | None = None
        if simplify:
            model = _simplify(model, spec)
            simplifier = "onnxslim"
        # One self-contained file (no .onnx.data): ATC and ais_bench take a single path.
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        _fsync(tmp)
        model = validate_onnx(tmp, opset, spec.input_name, spec.output_name)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    inputs, outputs = _graph_io(model)
    return {
        "opset": opset,
        "exporter": EXPORTER,
        "input_name": spec.input_name,
        "output_name": spec.output_name,
        "input_shape": _dims(inputs[0]),
        "output_shape": _dims(outputs[0]),
        "simplifier": simplifier,
        "simplifier_version": _version("onnxslim") if simplifier else None,
        "node_count_exported": nodes_exported,
        "node_count": len(model.graph.node),
        "sha256": file_sha256(out_path),
        "size_bytes": out_path.stat().st_size,
        "export_seconds": round(time.perf_counter() - started, 3),
        "versions": tool_versions(),
    }


class _StaticPadConv(nn.Conv2d):
    """A convolution after a constant ``ZeroPad2d``: timm's ``Conv2dSame`` at one input size, same parameters."""

    def __init__(self, conv: nn.Conv2d, pad: list[int]):
        k, s, d = conv.kernel_size, conv.stride, conv.dilation
        super().__init__(conv.in_channels, conv.out_channels, (k[0], k[1]), (s[0], s[1]), 0, (d[0], d[1]),
                         conv.groups, conv.bias is not None)
        self.load_state_dict(conv.state_dict())
        self.pad = nn.ZeroPad2d((pad[0], pad[1], pad[2], pad[3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


def static_same_padding(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``module``, or a copy of it whose TF "SAME" padding is fixed for ``example``'s size.

    timm's ``Conv2dSame`` (its ``tf_*`` models) pads by the input's size at run time, so the export
    carries a Shape -> Cast -> Div -> Ceil chain per strided convolution, which onnxslim's symbolic
    shape inference folds as a floor division (ceil(15 / 2) becomes 7): at an odd size the
    convolution loses a row and a column of padding (tf_efficientnet_lite1 at 240 agreed with torch
    on 95% of top-1, max |logit diff| 3.7). Only the batch is dynamic, so the padding is a constant,
    computed by timm's own ``pad_same_arg`` from the size each convolution sees.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[str, list[int]] = {}

    def seen(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:  # None: the input goes on unchanged
            sizes[name] = list(args[0].shape[-2:])
        return hook

    hooks = [m.register_forward_pre_hook(seen(name)) for name, m in module.named_modules() if isinstance(m, Conv2dSame)]
    if not hooks:
        return module
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    module = copy.deepcopy(module)
    for name, size in sizes.items():
        conv = module.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        pad = pad_same_arg(size, list(conv.weight.shape[-2:]), list(conv.stride), list(conv.dilation))
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, _StaticPadConv(conv, [int(p) for p in pad]).eval())
    return module


def _graph_io(model: onnx.ModelProto) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers], list(model.graph.output)


def _io_shapes(model: onnx.ModelProto) -> list[list[int | str]]:
    inputs, outputs = _graph_io(model)
    return [_dims(v) for v in (*inputs, *outputs)]


def _check_io(model: onnx.ModelProto, spec: ModelSpec, path: Path) -> None:
    inputs, outputs = _graph_io(model)
    if [i.name for i in inputs] != [spec.input_name] or [o.name for o in outputs] != [spec.output_name]:
        # The tracer drops an input the computation does not depend on (e.g. a forward that goes
        # through numpy), leaving a constant graph: that is never a usable classifier.
        raise ExportError(
            f"{path}: expected input {[spec.input_name]} and output {[spec.output_name]}, found inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in outputs]} "
            "(input_name/output_name in fixtures/models.toml; an input missing from the graph means "
            "the output does not depend on it)"
        )


def _simplify(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    import onnxslim

    before = _io_shapes(model)
    try:
        # No input_shapes: onnxslim then keeps the symbolic batch dimension as it is.
        slimmed = onnxslim.slim(model)
    except Exception as exc:
        raise ExportError(
            f"onnxslim {_version('onnxslim')} failed to simplify {spec.name}: {type(exc).__name__}: "
            f"{exc}; rerun with simplification disabled to get the raw export, and report it"
        ) from exc
    if not isinstance(slimmed, onnx.ModelProto):
        raise ExportError(f"onnxslim {_version('onnxslim')} returned no model for {spec.name} (it found a problem)")
    after = _io_shapes(slimmed)
    if after != before:
        raise ExportError(
            f"onnxslim changed the model's input/output shapes of {spec.name} from {before} to {after}; "
            "the dynamic batch must survive simplification"
        )
    return slimmed


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def onnx_cache_inputs(
    spec: ModelSpec, weights: WeightsInfo, opset: int = 11, simplify: bool = True
) -> dict[str, Any]:
    """Every input that decides the exported file: the ONNX cache key is the hash of this."""
    return {
        "arch": as_dict(spec.arch),
        "input_name": spec.input_name,
        "output_name": spec.output_name,
        "num_classes": spec.num_classes,
        "input_shape": list(spec.input_shape),
        "weights": weights.export_key_fields(),
        "opset": opset,
        "simplify": simplify,
        "exporter": EXPORTER,
        # timm's run-time TF "SAME" padding is exported as a constant (static_same_padding).
        "same_padding": "static",
        "versions": tool_versions(),
    }


def cached_onnx(
    cache: ArtifactCache,
    spec: ModelSpec,
    module: ModuleOrBuild,
    weights: WeightsInfo,
    opset: int = 11,
    simplify: bool = True,
) -> Path:
    """The exported ONNX of ``module`` from ``cache``, exporting it only if no entry exists
    (``module``: the torch module, or the function building it, called only then).

    The key covers the architecture, names, shapes, ``weights.export_key_fields()`` (checkpoint
    SHA-256, or seed plus calibration-set hash; not its path), opset, simplification and tool
    versions. The caller guarantees that ``module`` carries the weights ``weights`` describes.
    """
    inputs = onnx_cache_inputs(spec, weights, opset, simplify)

    def build(tmp_dir: Path) -> dict[str, Any]:
        info = export_onnx(resolve(module), spec, tmp_dir / ONNX_FILENAME, opset=opset, simplify=simplify)
        return {"model": spec.name, "weights_record": weights.provenance(), "export": info}

    entry = cache.get_or_build("onnx", inputs, build)
    path = entry.path / ONNX_FILENAME
    if not path.is_file():
        raise ExportError(f"cache entry {entry.path} has no {ONNX_FILENAME}; delete that directory and rerun")
    return path


def onnx_input_output(path: Path) -> tuple[str, str, list[int | str]]:
    """(input name, output name, input shape) of an ONNX file; a symbolic dim is its name."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError: any failure here is about the file
        raise ExportError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); expected an ONNX "
            "file: export it again, or delete the cache entry holding it and rerun"
        ) from exc
    inputs, _ = _graph_io(model)
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ExportError(
            f"{path}: expected one input and one output, found inputs {[i.name for i in inputs]} "
            f"and outputs {[o.name for o in model.graph.output]}"
        )
    return inputs[0].name, model.graph.output[0].name, _dims(inputs[0])
