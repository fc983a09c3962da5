"""ATC, the Ascend Tensor Compiler: the exact command line and the static AIPP configuration.

The command is the seeds' (``atc --framework=5 --model=x.onnx --output=x_bs16 --input_format=NCHW
--input_shape="image:16,3,224,224" --log=info --soc_version=Ascend310P3``), built as an argument
list: the input name, batch and shape come from the registry and the target, never from text a
shell would read. ``precision_mode`` (or ``precision_mode_v2``), ``insert_op_conf`` and
``enable_small_channel`` are added only when asked for.

AIPP (``--insert_op_conf``) moves normalization onto the chip: the compiled model takes uint8
RGB pixels, packed NHWC (``RGB888_U8``), and computes ``(x - mean_chn - min_chn) * var_reci_chn``
per channel (CANN ATC guide, "AIPP configuration"). We write ``min_chn = 255 * mean`` and
``var_reci_chn = 1 / (255 * std)``, the torchvision normalization on 0..255 pixels.

Precision: the accepted values are exactly ATC's own (its ``--help`` text and the validators
``CheckPrecisionModeParamValid`` / ``CheckPrecisionModeV2ParamValid`` / ``CheckPrecisionModeV2Conflict``
in github.com/hicann/ge ``compiler/api/aclgrph/option_utils.cc`` lines 1316-1372, help text in
``api/atc/main_impl.cc`` lines 660-665; the CANN ATC guide's ``--precision_mode`` and
``--precision_mode_v2`` pages give the same values and their meaning). Without a flag ATC compiles
``force_fp16`` (the documented default), and even ``force_fp32`` feeds the 310/310P cube unit
float16 inputs (the guide: for matrix operators it first picks float16 in, float32 out), so what a
model was compiled with is recorded as the mode itself (:func:`precision_label`), never as
"fp32".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UsageError
from harness.specs import CompileTarget

LOG_LEVELS = ("debug", "info", "warning", "error", "null")
# ATC --precision_mode values, exactly as ATC validates them (hicann/ge option_utils.cc:1316-1339).
# Not accepted by ATC, although other Ascend front ends list them: force_lowerprecision and
# allow_fp32_to_lowprecision (graph-engine internal / MindSpore values; ATC answers E10001).
PRECISION_MODES = (
    "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision", "allow_fp32_to_fp16",
    "must_keep_origin_dtype", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
)
# ATC --precision_mode_v2 values (option_utils.cc:1341-1357); it cannot be combined with --precision_mode.
PRECISION_MODES_V2 = (
    "fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16", "cube_hif8", "mixed_hif8",
)
# What ATC compiles when neither flag is given (ATC --help: "force_fp16(default)"; the guide likewise).
ATC_DEFAULT_PRECISION_MODE = "force_fp16"
# What our precision names ask of ATC when the chip does not set precision_mode itself.
PRECISION_TO_MODE: dict[str, str | None] = {"fp16": None, "fp32": "force_fp32"}
INSTALL_HINT = (
    "install the CANN toolkit (Ascend-cann-toolkit) and run `source /usr/local/Ascend/ascend-toolkit/set_env.sh` "
    "so that `atc` is on PATH"
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_SOC = re.compile(r"^Ascend[0-9A-Za-z]+$")


class AtcConfigError(UsageError, ValueError):
    """An ATC option cannot be expressed (unsafe input name, unknown soc, unsupported precision)."""


def precision_mode_for(precision: str, explicit: str | None = None) -> str | None:
    """The ``--precision_mode`` for a target precision; ``explicit`` (from chips.toml) wins."""
    if explicit:
        if explicit not in PRECISION_MODES:
            raise AtcConfigError(f"unknown ATC precision_mode {explicit!r}; ATC accepts {', '.join(PRECISION_MODES)}")
        return explicit
    if precision not in PRECISION_TO_MODE:
        raise AtcConfigError(
            f"precision {precision!r} is not available on Ascend 310/310P through ATC; use fp16 (ATC's default "
            "force_fp16) or fp32 (--precision_mode=force_fp32)"
        )
    return PRECISION_TO_MODE[precision]


def precision_flags(
    precision: str, precision_mode: str | None = None, precision_mode_v2: str | None = None
) -> tuple[str | None, str | None]:
    """``(--precision_mode, --precision_mode_v2)`` for a target: at most one is set, None = ATC's default.

    A mode set in chips.toml (either flag) wins over the target precision; setting both is refused
    as ATC refuses it (E10056, ``CheckPrecisionModeV2Conflict``).
    """
    if precision_mode and precision_mode_v2:
        raise AtcConfigError(
            f"precision_mode {precision_mode!r} and precision_mode_v2 {precision_mode_v2!r} are both set; ATC "
            "accepts one of them (E10056): remove one from backend_options in fixtures/chips.toml"
        )
    if precision_mode_v2:
        if precision_mode_v2 not in PRECISION_MODES_V2:
            raise AtcConfigError(
                f"unknown ATC precision_mode_v2 {precision_mode_v2!r}; ATC accepts {', '.join(PRECISION_MODES_V2)}"
            )
        return None, precision_mode_v2
    return precision_mode_for(precision, precision_mode), None


def precision_label(precision_mode: str | None, precision_mode_v2: str | None) -> str:
    """What :func:`precision_flags` compiles, as the records show it: the ``--precision_mode`` value,
    ``precision_mode_v2=<value>``, or ATC's default ``force_fp16`` when neither flag is passed."""
    if precision_mode_v2:
        return f"precision_mode_v2={precision_mode_v2}"
    return precision_mode or ATC_DEFAULT_PRECISION_MODE


def atc_command(
    onnx_path: Path | str,
    output_stem: Path | str,
    target: CompileTarget,
    soc_version: str,
    log_level: str = "error",
    precision_mode: str | None = None,
    aipp_config: Path | str | None = None,
    precision_mode_v2: str | None = None,
    small_channel: bool = False,
) -> list[str]:
    """The ATC argument list for one static-batch model (the seeds' options, in the seeds' order).

    ``small_channel`` adds ``--enable_small_channel=1`` (see docs/ascend.md: the ATC guide advises
    it for inputs of <= 4 channels together with static AIPP).
    """
    if not _NAME.match(target.input_name):
        raise AtcConfigError(
            f"ONNX input name {target.input_name!r} cannot be passed to ATC's --input_shape (it splits on ':', "
            "',' and ';'); rename the input in fixtures/models.toml (input_name) and re-export"
        )
    if not _SOC.match(soc_version):
        raise AtcConfigError(f"soc_version {soc_version!r} is not an Ascend SoC name like Ascend310P3")
    if log_level not in LOG_LEVELS:
        raise AtcConfigError(f"ATC --log {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if precision_mode and precision_mode_v2:
        raise AtcConfigError("ATC takes --precision_mode or --precision_mode_v2, not both (E10056)")
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
    if precision_mode_v2:
        args.append(f"--precision_mode_v2={precision_mode_v2}")
    if aipp_config is not None:
        args.append(f"--insert_op_conf={aipp_config}")
    if small_channel:
        args.append("--enable_small_channel=1")
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
