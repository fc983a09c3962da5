"""ATC, the Ascend Tensor Compiler: the exact command line and the static AIPP configuration.

The command is the seeds' (``atc --framework=5 --model=x.onnx --output=x_bs16 --input_format=NCHW
--input_shape="image:16,3,224,224" --log=info --soc_version=Ascend310P3``), built as an argument
list: the input name, batch and shape come from the registry and the target, never from text a
shell would read. ``precision_mode`` and ``insert_op_conf`` are added only when asked for.

AIPP (``--insert_op_conf``) moves normalization onto the chip: the compiled model takes uint8
RGB pixels, packed NHWC (``RGB888_U8``), and computes ``(x - mean_chn - min_chn) * var_reci_chn``
per channel (CANN ATC guide, "AIPP configuration"). We write ``min_chn = 255 * mean`` and
``var_reci_chn = 1 / (255 * std)``, the torchvision normalization on 0..255 pixels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from harness.specs import CompileTarget

LOG_LEVELS = ("debug", "info", "warning", "error", "null")
# ATC --precision_mode values (CANN ATC guide). None: ATC's default, fp16 on Ascend 310 / 310P.
PRECISION_MODES = (
    "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_fp32_to_fp16", "must_keep_origin_dtype",
    "allow_mix_precision", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
    "force_lowerprecision",
)
# What our precision names ask of ATC when the chip does not set precision_mode itself.
PRECISION_TO_MODE: dict[str, str | None] = {"fp16": None, "fp32": "force_fp32"}
INSTALL_HINT = (
    "install the CANN toolkit (Ascend-cann-toolkit) and run `source /usr/local/Ascend/ascend-toolkit/set_env.sh` "
    "so that `atc` is on PATH"
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_SOC = re.compile(r"^Ascend[0-9A-Za-z]+$")


class AtcConfigError(ValueError):
    """An ATC option cannot be expressed (unsafe input name, unknown soc, unsupported precision)."""


def precision_mode_for(precision: str, explicit: str | None = None) -> str | None:
    """The ``--precision_mode`` for a target precision; ``explicit`` (from chips.toml) wins."""
    if explicit:
        if explicit not in PRECISION_MODES:
            raise AtcConfigError(f"unknown ATC precision_mode {explicit!r}; ATC accepts {', '.join(PRECISION_MODES)}")
        return explicit
    if precision not in PRECISION_TO_MODE:
        raise AtcConfigError(
            f"precision {precision!r} is not available on Ascend 310/310P through ATC; use fp16 (ATC's default) "
            "or fp32 (--precision_mode=force_fp32)"
        )
    return PRECISION_TO_MODE[precision]


def atc_command(
    onnx_path: Path | str,
    output_stem: Path | str,
    target: CompileTarget,
    soc_version: str,
    log_level: str = "error",
    precision_mode: str | None = None,
    aipp_config: Path | str | None = None,
) -> list[str]:
    """The ATC argument list for one static-batch model (the seeds' options, in the seeds' order)."""
    if not _NAME.match(target.input_name):
        raise AtcConfigError(
            f"ONNX input name {target.input_name!r} cannot be passed to ATC's --input_shape (it splits on ':', "
            "',' and ';'); rename the input in fixtures/models.toml (input_name) and re-export"
        )
    if not _SOC.match(soc_version):
        raise AtcConfigError(f"soc_version {soc_version!r} is not an Ascend SoC name like Ascend310P3")
    if log_level not in LOG_LEVELS:
        raise AtcConfigError(f"ATC --log {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    c, h, w = target.input_shape
    args = [
        "atc",
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={output_stem}",
        "--input_format=NCHW",
        f"--input_shape={target.input_name}:{target.batch_size},{c},{h},{w}",
        f"--soc_version={soc_version}",
        f"--log={log_level}",
    ]
    if precision_mode:
        args.append(f"--precision_mode={precision_mode}")
    if aipp_config is not None:
        args.append(f"--insert_op_conf={aipp_config}")
    return args


def aipp_config(shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> str:
    """A static AIPP config: uint8 RGB NHWC pixels of the model's input size in, normalized out."""
    c, h, w = shape
    if c != 3:
        raise AtcConfigError(f"AIPP RGB888_U8 needs 3 input channels, the model takes {c}")
    lines = [
        "aipp_op {",
        "    aipp_mode : static",
        "    input_format : RGB888_U8",
        f"    src_image_size_w : {w}",
        f"    src_image_size_h : {h}",
        "    csc_switch : false",
        "    rbuv_swap_switch : false",
    ]
    lines += [f"    mean_chn_{i} : 0" for i in range(3)]
    lines += [f"    min_chn_{i} : {255.0 * m:.6f}" for i, m in enumerate(mean)]
    lines += [f"    var_reci_chn_{i} : {1.0 / (255.0 * s):.10f}" for i, s in enumerate(std)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def parse_aipp_config(text: str) -> dict[str, str]:
    """``key : value`` pairs of an ``aipp_op { ... }`` block (one block; comments with ``#``)."""
    body = re.search(r"aipp_op\s*\{(.*?)\}", text, re.S)
    if body is None:
        raise AtcConfigError("AIPP config has no `aipp_op { ... }` block")
    out: dict[str, str] = {}
    for raw in body.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AtcConfigError(f"AIPP config line {raw.strip()!r} is not `key : value`")
        out[key.strip()] = value.strip()
    return out
