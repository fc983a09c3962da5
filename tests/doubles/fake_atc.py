#!/usr/bin/env python3
"""TEST DOUBLE of CANN's `atc` (see tests/doubles/README.md): checks the documented options, writes a fake .om."""

import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_om

SOCS = {"Ascend310", "Ascend310P3", "Ascend310B1", "Ascend910", "Ascend910B"}
LOGS = {"debug", "info", "warning", "error", "null"}
# ATC's own lists (hicann/ge compiler/api/aclgrph/option_utils.cc CheckPrecisionModeParamValid /
# CheckPrecisionModeV2ParamValid); the two flags exclude each other (CheckPrecisionModeV2Conflict, E10056).
MODES = {"force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision", "allow_fp32_to_fp16",
         "must_keep_origin_dtype", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16"}
MODES_V2 = {"fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16", "cube_hif8", "mixed_hif8"}
KNOWN = {"framework", "model", "output", "input_format", "input_shape", "soc_version", "log", "precision_mode",
         "precision_mode_v2", "insert_op_conf", "enable_small_channel"}

def fail(code: str, message: str) -> None:
    print("ATC run failed, Please check the detail log, Try 'atc --help' for more information", file=sys.stdout)
    print(f"{code}: {message}", file=sys.stderr)
    sys.exit(1)


def parse_aipp(path: Path) -> dict:
    text = path.read_text()
    body = re.search(r"aipp_op\s*\{(.*?)\}", text, re.S)
    if body is None:
        fail("E10043", f"[--insert_op_conf] {path}: no aipp_op block")
    conf = {}
    for line in body.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(":")
            conf[key.strip()] = value.strip()
    return conf


def main(argv: list[str]) -> None:
    if log := os.environ.get("FAKE_ATC_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps(argv) + "\n")
    opts = {}
    for arg in argv:
        m = re.fullmatch(r"--([a-z0-9_]+)=(.*)", arg, re.S)
        if not m:
            fail("E10001", f"Value [{arg}] for parameter is invalid: options are --name=value")
        if m.group(1) not in KNOWN:
            fail("E10001", f"parameter [--{m.group(1)}] is not supported by this double")
        opts[m.group(1)] = m.group(2)
    for required in ("framework", "model", "output", "soc_version"):
        if required not in opts:
            fail("E10004", f"parameter [--{required}] is required")
    if opts["framework"] != "5":
        fail("E10001", f"[--framework] {opts['framework']}: this double compiles ONNX only (5)")
    model = Path(opts["model"])
    if not model.is_file():
        fail("E10016", f"[--model] file {model} does not exist")
    if opts["soc_version"] not in SOCS:
        fail("E10001", f"[--soc_version] {opts['soc_version']!r} is not a supported SoC")
    if opts.get("log", "error") not in LOGS:
        fail("E10001", f"[--log] {opts['log']!r} invalid")
    if "precision_mode" in opts and opts["precision_mode"] not in MODES:
        fail("E10001", f"[--precision_mode] {opts['precision_mode']!r} invalid")
    if "precision_mode_v2" in opts and opts["precision_mode_v2"] not in MODES_V2:
        fail("E10001", f"[--precision_mode_v2] {opts['precision_mode_v2']!r} invalid")
    if "precision_mode" in opts and "precision_mode_v2" in opts:
        fail("E10056", "[--precision_mode] and [--precision_mode_v2] cannot be configured at the same time")
    if opts.get("enable_small_channel", "0") not in ("0", "1"):
        fail("E10001", f"[--enable_small_channel] {opts['enable_small_channel']!r}: expected 0 or 1")
    if opts.get("input_format", "NCHW") != "NCHW":
        fail("E10001", "[--input_format] this double takes NCHW")
    import onnx

    graph = onnx.load(str(model)).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    m = re.fullmatch(r"([^:;,]+):(\d+),(\d+),(\d+),(\d+)", opts.get("input_shape", ""))
    if not m:
        fail("E10002", f"[--input_shape] {opts.get('input_shape')!r}: expected \"name:n,c,h,w\"")
    name, dims = m.group(1), [int(g) for g in m.groups()[1:]]
    if name not in inputs:
        fail("E10016", f"[--input_shape] input {name!r} is not an input of the model (inputs: {inputs})")
    if min(dims) <= 0:
        fail("E10002", f"[--input_shape] dimensions must be positive: {dims}")
    aipp = None
    if "insert_op_conf" in opts:
        conf_path = Path(opts["insert_op_conf"])
        if not conf_path.is_file():
            fail("E10016", f"[--insert_op_conf] file {conf_path} does not exist")
        aipp = parse_aipp(conf_path)
        if aipp.get("aipp_mode") != "static" or aipp.get("input_format") != "RGB888_U8":
            fail("E10043", "AIPP: this double supports aipp_mode static, input_format RGB888_U8")
        if (int(aipp.get("src_image_size_w", 0)), int(aipp.get("src_image_size_h", 0))) != (dims[3], dims[2]):
            fail("E10043", f"AIPP src_image_size {aipp.get('src_image_size_w')}x{aipp.get('src_image_size_h')} "
                 f"differs from the model input {dims[3]}x{dims[2]} (no crop configured)")
    header = {"input_name": name, "input_shape": dims, "soc_version": opts["soc_version"],
              "precision_mode": opts.get("precision_mode"), "precision_mode_v2": opts.get("precision_mode_v2"),
              "enable_small_channel": opts.get("enable_small_channel", "0"), "aipp": aipp}
    fake_om.write(Path(opts["output"] + ".om"), header, model.read_bytes())
    print("ATC start working now, please wait for a moment.")
    print("ATC run success, welcome to the next use.")


if __name__ == "__main__":
    main(sys.argv[1:])
