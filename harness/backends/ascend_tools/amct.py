"""INT8 on Ascend: AMCT's command line (``amct_onnx calibration``) quantizes the float ONNX, ATC compiles
the deploy model it writes.

No AMCT, CANN or NPU exists where this was written: everything here follows AMCT's documented
contract and is tested against the test double ``tests/doubles/bin/amct_onnx`` (tests/doubles/README.md).

Sources read (CANN AMCT user guide, the "AMCT (ONNX)" chapters, pages under
https://www.hiascend.com/document/detail/{zh,en}/; CANN commercial 6.0.1 / 7.0.0 / 8.0.0 / 8.5.0 / 9.0.0
and community 8.0.RC3 / 8.1.RC1: the options below are the same in all of them):

- command line overview: ``canncommercial/700/devtools/auxiliarydevtool/atlasamctonnx_16_0032.html``
  and ``canncommercial/850/devaids/amct/atlasamct_16_0336.html``: ``amct_onnx calibration`` takes
  ``--model`` (.onnx) and ``--save_path`` (required), ``--input_shape`` / ``--data_dir`` /
  ``--data_types`` (required without ``--evaluator``, not with it), ``--calibration_config``,
  ``--batch_num``; written ``--name=value`` or ``--name value``;
- ``--input_shape`` ``"name:n,c,h,w"`` (``;`` between inputs), ``--data_dir`` a directory of raw .bin
  files per input, taken in ascending name order, each holding exactly one array of the
  ``--input_shape``; ``--data_types`` ``"float32"`` (``;`` between inputs); paths of letters, digits,
  ``_``, ``-``, ``.`` only (``atlasamct_16_0083.html`` ModelEvaluator, ``atlasamct_16_0349/0350.html``);
- ``--batch_num``: default 1, not together with ``--calibration_config`` (``atlasamct_16_0347.html``),
  so the batch count goes into the config file; ``--calibration_config``: the simplified config, text
  protobuf of ``amct_onnx/proto/calibration_config_onnx.proto``: ``batch_num``, ``activation_offset``,
  ``skip_layers`` (layer names kept float), ``common_config { arq_quantize { channel_wise } }``
  (``atlasamct_16_0348.html``, ``atlasamct_16_0163.html``);
- what it writes (``save_model``, ``atlasamct_16_0088.html``; ``atlasamctonnx_16_0061.html``):
  ``<save_path>_fake_quant_model.onnx``, the quantize-dequantize simulation that runs on ONNX Runtime,
  and ``<save_path>_deploy_model.onnx`` (AscendQuant / AscendDequant, int8 weights) that only ATC takes;
- the ONNX it accepts: opset 8 to 14 of the ai.onnx domain, float32 input (AMCT (ONNX)
  installation: version table, ``atlasamct_16_0017.html``); installed as the ``amct_onnx`` wheel
  (``amct_onnx-{version}.dist-info``: its version is read from that metadata, ``atlasamct_16_0030.html``).

Repositories read: github.com/Ascend/samples ``python/level1_single_api/9_amct/amct_onnx/cmd/``
(``README_CN.md``: ``--save_path output`` writes ``output_deploy_model.onnx``,
``output_fake_quant_model.onnx``, ``output_quant.json``; ``scripts/run_calibration.sh``,
``src/process_data.py``: one float32 NCHW normalized batch per .bin; ``resnet-101/src/nuq_conf/nuq_quant.cfg``:
the config syntax), and github.com/Ascend/ModelZoo-PyTorch
``ACL_PyTorch/built-in/cv/Resnet18_for_PyTorch/README.md`` (CANN 5.0.3): the deploy model is compiled
with the same ATC command as the float ONNX, no ``--precision_mode``.

What we write: one normalized float32 image per .bin file (C order, NCHW, ``--input_shape
<input>:1,c,h,w``) and ``batch_num`` = the number of calibration images, so any count of images fits
(AMCT needs every file to hold exactly ``--input_shape``'s array; the suite's calibration count is
policy data and need not be a multiple of a batch). AMCT calibrates the float ONNX, whose input is
normalized float32: ``--input uint8`` (normalization folded into ATC's AIPP) hands the quantizer uint8
pixels, which AMCT cannot calibrate this model with, and is refused. The logits layer (``logits =
"float"``) and ``--keep-float`` nodes are AMCT ``skip_layers``. All paths are relative to a working
directory, so AMCT's path-character rule holds wherever the cache lives.

The fake-quant ONNX is kept in the cache entry and checked before any device sees the deploy model
(:mod:`harness.backends.ascend_tools.amct_check`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.ascend_tools import amct_check
from harness.backends.ascend_tools.tools import ToolError, ToolNotFound, find_tool, run_tool
from harness.backends.quantization import (
    QuantizationError,
    QuantizationInfo,
    QuantizationSettings,
    Quantizer,
    logits_node,
    opset_of,
)
from harness.versions import installed_version

TOOL = "amct_onnx"
INSTALL_HINT = (
    "install AMCT for ONNX from the CANN toolkit's Ascend-cann-amct package: "
    "`pip3 install amct_onnx-<version>-py3-none-linux_<arch>.whl` (and its amct_onnx_op custom operators), "
    "so that `amct_onnx` is on PATH"
)
DISTRIBUTIONS = ("amct_onnx", "amct-onnx")
OPSETS = (8, 14)  # the ai.onnx opsets AMCT (ONNX) quantizes
SCHEME = "amct-ptq"  # AMCT's post-training quantization: ARQ weights, IFMR activations
WORK = "amct_work"  # under the quantizer's out_dir, removed once AMCT's models are taken out
DATA_DIR = "calibration_data"
CONFIG_FILE = "calibration.cfg"
MODEL_FILE = "float.onnx"
SAVE_PATH = "result/model"
DEPLOY_SUFFIX = "_deploy_model.onnx"
FAKE_QUANT_SUFFIX = "_fake_quant_model.onnx"
DEPLOY_NAME = "model" + DEPLOY_SUFFIX
FAKE_QUANT_NAME = "model" + FAKE_QUANT_SUFFIX
COMMAND_FILE = "amct_command.json"
KEPT = ("model_quant.json", "amct_log")  # AMCT's fusion record and log, kept beside the models when written


def model_input(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """The model's one input: its name and its static ``(c, h, w)`` (the batch may be dynamic).
    Refuses what AMCT does not take: another opset than 8-14, a non-float32 input."""
    opset = opset_of(model)
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise QuantizationError(f"AMCT quantizes ONNX opsets {OPSETS[0]}-{OPSETS[1]}, the model is opset {opset}; "
                                "export with --opset 11 (ATC's opset)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise QuantizationError(f"the AMCT quantizer takes a one-input model, this one has {len(inputs)}")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise QuantizationError(f"AMCT calibrates float32 inputs; {inputs[0].name!r} is "
                                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise QuantizationError(f"AMCT's --input_shape needs a static NCHW input; {inputs[0].name!r} is {dims}")
    return inputs[0].name, tuple(dims[1:])


def write_calibration(batches: Iterable[np.ndarray], data_dir: Path, chw: Sequence[int]) -> int:
    """One .bin file per image (``000000.bin``, ... in order), each exactly the float32 C-order bytes
    of a ``1 x c x h x w`` array, as AMCT reads ``--data_dir``; the number of files written."""
    data_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for batch in batches:
        batch = np.asarray(batch)
        if batch.dtype != np.float32:
            raise QuantizationError(
                f"AMCT calibrates the float ONNX on normalized float32 images, the calibration batches are "
                f"{batch.dtype}: --input uint8 (ATC's AIPP) with --precision int8 is not built on Ascend; "
                "run int8 with --input float32")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(chw):
            raise QuantizationError(f"calibration batch of shape {batch.shape}; the model takes (n, "
                                    f"{', '.join(map(str, chw))})")
        for image in batch:
            np.ascontiguousarray(image[None]).tofile(data_dir / f"{count:06d}.bin")
            count += 1
    if count == 0:
        raise QuantizationError("no calibration images: AMCT needs at least one")
    return count


def _quoted(name: str) -> str:
    if any(c in name for c in '"\\\n'):
        raise QuantizationError(f"node name {name!r} cannot be written into AMCT's config "
                                "(a quote, backslash or newline)")
    return f'"{name}"'


def config_text(batch_num: int, skip_layers: Sequence[str]) -> str:
    """AMCT's simplified calibration config (text protobuf, calibration_config_onnx.proto)."""
    lines = ["# AMCT simplified post-training quantization config, written by harness.backends.ascend_tools.amct",
             f"batch_num : {batch_num}", "activation_offset : true"]
    lines += [f"skip_layers : {_quoted(n)}" for n in skip_layers]
    lines += ["common_config : {", "    arq_quantize : {", "        channel_wise : true", "    }", "}"]
    return "\n".join(lines) + "\n"


def calibration_command(input_name: str, chw: Sequence[int]) -> list[str]:
    """The ``amct_onnx calibration`` argument list, every path relative to the working directory."""
    c, h, w = chw
    return [TOOL, "calibration", f"--model={MODEL_FILE}", f"--save_path={SAVE_PATH}",
            f"--input_shape={input_name}:1,{c},{h},{w}", f"--data_dir={DATA_DIR}", "--data_types=float32",
            f"--calibration_config={CONFIG_FILE}"]


def _outputs(result_dir: Path) -> tuple[Path, Path]:
    deploy, fake = result_dir / DEPLOY_NAME, result_dir / FAKE_QUANT_NAME
    missing = [p.name for p in (deploy, fake) if not p.is_file()]
    if missing:
        found = sorted(p.name for p in result_dir.iterdir()) if result_dir.is_dir() else []
        raise QuantizationError(
            f"amct_onnx reported success but did not write {', '.join(missing)} in {result_dir} (found: "
            f"{found or 'nothing'}); expected <save_path>{DEPLOY_SUFFIX} and <save_path>{FAKE_QUANT_SUFFIX} "
            "(AMCT's save_model naming): check the AMCT version and amct_log/amct_onnx.log")
    return deploy, fake


class AmctQuantizer(Quantizer):
    """``amct_onnx calibration``: AMCT's post-training quantization (ARQ per-channel int8 weights, IFMR
    int8 activations with offset). The artifact is AMCT's deploy ONNX, which ATC compiles; its
    fake-quant ONNX stays beside it, checked on ONNX Runtime (the settings' ``fake_quant_min_top1``,
    fixtures/policy.toml [int8] ``amct_fake_quant_min_top1``). ``timeout``: seconds before a hung AMCT
    is killed."""

    tool = TOOL

    def __init__(self, timeout: float = 3600.0):
        self.timeout = timeout

    def version(self) -> str:
        """The installed amct_onnx wheel's version; without its metadata here, the tool's path."""
        found = installed_version(*DISTRIBUTIONS)
        if found:
            return found[1]
        try:
            return f"unknown (no amct_onnx wheel metadata; `amct_onnx` is {find_tool(TOOL, INSTALL_HINT)})"
        except ToolNotFound as exc:
            raise QuantizationError(str(exc)) from exc

    def fields(self, settings: QuantizationSettings) -> dict[str, Any]:
        """AMCT's own scheme: [int8] scheme / activation_type / weight_type (ONNX Runtime's) do not apply."""
        return {"command": "amct_onnx calibration", "calibration_bin": "float32 NCHW, one image per file",
                "activation_offset": True, "channel_wise": True, "logits": settings.logits,
                "keep_float": sorted(settings.keep_float), "fake_quant_min_top1": settings.fake_quant_min_top1}

    @staticmethod
    def excluded(model: onnx.ModelProto, settings: QuantizationSettings) -> tuple[str, ...]:
        """AMCT's skip_layers: the logits layer (``logits = "float"``) and ``keep_float``, in graph order."""
        order = [n.name for n in model.graph.node]
        unknown = sorted(set(settings.keep_float) - set(order))
        if unknown:
            raise QuantizationError(f"--keep-float names {', '.join(unknown)}, which the model has no node of")
        names = set(settings.keep_float) | ({logits_node(model)} if settings.logits == "float" else set())
        return tuple(sorted(names, key=order.index))

    def quantize(self, source: Path, calibration: Iterable[np.ndarray], settings: QuantizationSettings,
                 out_dir: Path) -> tuple[Path, QuantizationInfo]:
        started = time.perf_counter()
        out_dir, source = Path(out_dir), Path(source)
        model = onnx.load(str(source), load_external_data=False)
        input_name, chw = model_input(model)
        excluded = self.excluded(model, settings)
        work = out_dir / WORK
        count = write_calibration(calibration, work / DATA_DIR, chw)
        shutil.copyfile(source, work / MODEL_FILE)
        config = config_text(count, excluded)
        (work / CONFIG_FILE).write_text(config)
        (work / SAVE_PATH).parent.mkdir(parents=True, exist_ok=True)
        command = calibration_command(input_name, chw)
        try:
            ran = run_tool(command, timeout=self.timeout, hint=INSTALL_HINT, cwd=work,
                           what=f"AMCT calibration of {source.name} on {count} images")
        except ToolNotFound as exc:
            raise QuantizationError(str(exc)) from exc
        except ToolError as exc:
            raise QuantizationError(f"{exc}\n  AMCT's own log: amct_log/amct_onnx.log in its working directory "
                                    f"{work}; fix what it names, or keep the layer float (--keep-float)") from exc
        deploy, fake = _outputs((work / SAVE_PATH).parent)
        artifact, fake_quant = Path(shutil.move(deploy, out_dir / DEPLOY_NAME)), Path(
            shutil.move(fake, out_dir / FAKE_QUANT_NAME))
        for name in KEPT:
            for found in (work / SAVE_PATH).parent / name, work / name:
                if found.exists():
                    shutil.move(found, out_dir / name)
                    break
        check = amct_check.fake_quant_agreement(source, fake_quant, input_name, work / DATA_DIR, chw)
        (out_dir / amct_check.CHECK_FILE).write_text(json.dumps({**check, "min_top1": settings.fake_quant_min_top1},
                                                                indent=1))
        amct_check.refuse_below(check, settings.fake_quant_min_top1, fake_quant)
        shutil.rmtree(work)
        (out_dir / COMMAND_FILE).write_text(json.dumps({"command": command, "calibration_config": config,
                                                        "seconds": round(ran.seconds, 3)}, indent=1))
        info = QuantizationInfo(tool=self.tool, version=self.version(), scheme=SCHEME,
                                activation_type="int8 with offset (IFMR, activation_offset true)",
                                weight_type="int8 symmetric (ARQ, channel_wise true)", per_channel=True,
                                excluded_nodes=excluded, seconds=time.perf_counter() - started)
        return artifact, info
