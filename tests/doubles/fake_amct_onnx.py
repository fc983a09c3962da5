#!/usr/bin/env python3
"""TEST DOUBLE of AMCT's `amct_onnx calibration` (tests/doubles/README.md): checks the documented options
and calibration data, then writes a real fake-quant ONNX and a "deploy" ONNX (the same QDQ model: the fake
`atc` wraps whatever ONNX it is given). It is not AMCT: it quantizes with onnxruntime.quantization
(QDQ, MinMax) so that the fake-quant model is a real quantized model ONNX Runtime runs.

Contract checked, from the AMCT (ONNX) guide (sources in harness/backends/ascend_tools/amct.py):
`calibration` subcommand; options `--name=value` or `--name value`; --model and --save_path required;
--input_shape / --data_dir / --data_types required unless --evaluator, and not with it; --batch_num
not with --calibration_config; paths of letters, digits, `_-./` only; the model an opset 8-14 ONNX;
--input_shape "name:n,c,h,w" naming the model's real input; one --data_types per input; --data_dir files
(ascending names) each exactly the byte size of --input_shape x data type, at least batch_num of them;
the config's keys from calibration_config_onnx.proto. Stricter than AMCT documents: skip_layers must
name nodes of the model (a typo would quietly quantize the layer).

Knobs: FAKE_AMCT_LOG (append argv as a JSON line), FAKE_AMCT_MODE = fail (exit 1 after the checks),
no_output (exit 0 without writing the models), bad_fake_quant (a fake-quant model whose logits are
negated, so its top-1 disagrees with the float model's).
"""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

KNOWN = {"model", "save_path", "input_shape", "data_dir", "data_types", "evaluator", "calibration_config",
         "batch_num", "help", "h"}
DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int32": np.int32,
          "int64": np.int64, "uint8": np.uint8, "int8": np.int8, "bool": np.bool_}
CONFIG_KEYS = {"batch_num", "activation_offset", "skip_layers", "skip_layer_types", "nuq_config", "joint_quant",
               "fakequant_precision_mode", "common_config", "override_layer_types", "override_layer_configs",
               "do_fusion", "skip_fusion_layers", "tensor_quantize"}
PATH = re.compile(r"^[A-Za-z0-9_./\-\u4e00-\u9fff]+$")


def fail(message: str) -> None:
    print(f"[AMCT double] ERROR: {message}", file=sys.stderr)
    sys.exit(1)


def parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        m = re.fullmatch(r"--([a-z_]+)(?:=(.*))?", argv[i], re.S)
        if not m:
            fail(f"unexpected argument {argv[i]!r}: options are --name=value or --name value")
        name, value = m.group(1), m.group(2)
        if name not in KNOWN:
            fail(f"unknown option --{name}")
        if value is None and name not in ("help", "h"):
            i += 1
            if i == len(argv):
                fail(f"--{name} needs a value")
            value = argv[i]
        if value is not None and value.startswith(" "):
            fail(f"--{name}: no space is allowed before a value")
        opts[name] = value or ""
        i += 1
    return opts


def parse_config(path: Path, node_names: set[str]) -> dict:
    """The simplified config's top level: scalars, repeated strings, and which blocks are present."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    config: dict = {"skip_layers": []}
    depth = 0
    for token in re.finditer(r'(\w+)\s*:?\s*\{|\}|(\w+)\s*:\s*("[^"]*"|[^\s{}]+)', text):
        if token.group(0) == "}":
            depth -= 1
        elif token.group(1):
            if depth == 0 and token.group(1) not in CONFIG_KEYS:
                fail(f"{path}: unknown field {token.group(1)!r} in calibration_config_onnx.proto AMCTConfig")
            if depth == 0:
                config[token.group(1)] = True
            depth += 1
        elif depth == 0:
            key, value = token.group(2), token.group(3)
            if key not in CONFIG_KEYS:
                fail(f"{path}: unknown field {key!r} in calibration_config_onnx.proto AMCTConfig")
            if key in ("skip_layers", "skip_layer_types", "skip_fusion_layers"):
                if not (value.startswith('"') and value.endswith('"')):
                    fail(f"{path}: {key} takes quoted strings, got {value}")
                config.setdefault(key, []).append(value[1:-1])
            elif key == "batch_num":
                if not value.isdigit() or int(value) < 1:
                    fail(f"{path}: batch_num must be a positive integer, got {value}")
                config[key] = int(value)
            elif key in ("activation_offset", "joint_quant", "do_fusion"):
                if value not in ("true", "false"):
                    fail(f"{path}: {key} must be true or false, got {value}")
                config[key] = value == "true"
    if depth != 0:
        fail(f"{path}: unbalanced braces")
    unknown = sorted(set(config["skip_layers"]) - node_names)
    if unknown:
        fail(f"skip_layers {unknown} are not layers of the model")
    config["channel_wise"] = bool(re.search(r"arq_quantize\s*:?\s*\{[^}]*channel_wise\s*:\s*true", text))
    return config


def check(opts: dict[str, str]) -> tuple:
    import onnx

    for required in ("model", "save_path"):
        if required not in opts:
            fail(f"--{required} is required")
    data_opts = ("input_shape", "data_dir", "data_types")
    if "evaluator" in opts:
        if any(o in opts for o in data_opts):
            fail("--evaluator cannot be used with --input_shape, --data_dir or --data_types")
        fail("this double does not run --evaluator scripts")
    for required in data_opts:
        if required not in opts:
            fail(f"--{required} is required when --evaluator is not given")
    if "batch_num" in opts and "calibration_config" in opts:
        fail("--batch_num and --calibration_config cannot be used together")
    for key in ("model", "save_path", "data_dir", "calibration_config"):
        if key in opts and not PATH.match(opts[key]):
            fail(f"--{key} {opts[key]!r}: paths may hold letters, digits, '_', '-', '.' only")
    model_path = Path(opts["model"])
    if model_path.suffix != ".onnx" or not model_path.is_file():
        fail(f"--model {model_path}: no such .onnx file")
    model = onnx.load(str(model_path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not 8 <= opset <= 14:
        fail(f"--model: opset {opset}; AMCT supports ai.onnx opsets 8-14")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    shapes = []
    for part in opts["input_shape"].split(";"):
        m = re.fullmatch(r"([^:;,]+):(\d+(?:,\d+)*)", part)
        if not m:
            fail(f"--input_shape {part!r}: expected \"name:n,c,h,w\"")
        if m.group(1) not in inputs:
            fail(f"--input_shape names {m.group(1)!r}, not an input of the model (inputs: {inputs})")
        shapes.append((m.group(1), tuple(int(d) for d in m.group(2).split(","))))
    dirs, types = opts["data_dir"].split(";"), opts["data_types"].split(";")
    if not (len(dirs) == len(types) == len(shapes)):
        fail(f"{len(shapes)} --input_shape entries, {len(dirs)} --data_dir and {len(types)} --data_types")
    config = parse_config(Path(opts["calibration_config"]), {n.name for n in model.graph.node}) \
        if "calibration_config" in opts else {"skip_layers": [], "channel_wise": False}
    batch_num = int(opts.get("batch_num", config.get("batch_num", 1)))
    feeds = []
    for (name, shape), folder, dtype in zip(shapes, dirs, types, strict=True):
        if dtype not in DTYPES:
            fail(f"--data_types {dtype!r}: expected one of {sorted(DTYPES)}")
        files = sorted(Path(folder).glob("*.bin")) if Path(folder).is_dir() else []
        if len(files) < batch_num:
            fail(f"--data_dir {folder}: {len(files)} .bin files for batch_num {batch_num}")
        size = int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize
        for f in files[:batch_num]:
            if f.stat().st_size != size:
                fail(f"{f}: {f.stat().st_size} bytes, --input_shape {name}:{shape} x {dtype} is {size}")
        feeds.append((name, shape, DTYPES[dtype], files[:batch_num]))
    return feeds, config


def quantize(model_path: Path, feeds: list, config: dict, out: Path) -> None:
    batches = [{name: np.fromfile(files[i], dtype=dtype).reshape(shape) for name, shape, dtype, files in feeds}
               for i in range(len(feeds[0][3]))]
    quantize_batches(model_path, batches, config["channel_wise"], config.get("activation_offset", True),
                     config["skip_layers"], out)


def quantize_batches(model_path: Path, batches: list, channel_wise: bool, activation_offset: bool,
                     skip_layers: list, out: Path) -> None:
    """The double's quantization (also the fake amct_onnx package's): ONNX Runtime QDQ, MinMax ranges
    from ``batches`` (input feeds), ``skip_layers`` left float."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    converted = out.with_name(out.name + ".opset13.onnx")
    onnx.save(version_converter.convert_version(onnx.load(str(model_path)), 13), str(converted))
    feeds = iter(batches)

    class Reader:
        def get_next(self):
            return next(feeds, None)

    quantize_static(str(converted), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=channel_wise, calibrate_method=CalibrationMethod.MinMax,
                    activation_type=QuantType.QUInt8 if activation_offset else QuantType.QInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=list(skip_layers))
    converted.unlink()


def negate_logits(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_before_neg" if o == out else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", [f"{out}_before_neg"], [out], name="double_negate_logits"))
    onnx.save(model, str(path))


def main(argv: list[str]) -> None:
    if log := os.environ.get("FAKE_AMCT_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps(argv) + "\n")
    if not argv or argv[0] != "calibration":
        fail("usage: amct_onnx calibration --model M --save_path P ... (this double has no other subcommand)")
    opts = parse(argv[1:])
    feeds, config = check(opts)
    mode = os.environ.get("FAKE_AMCT_MODE", "")
    if mode == "fail":
        fail("calibration failed (FAKE_AMCT_MODE=fail)")
    save = Path(opts["save_path"])
    save.parent.mkdir(parents=True, exist_ok=True)
    Path("amct_log").mkdir(exist_ok=True)
    Path("amct_log/amct_onnx.log").write_text(f"TEST DOUBLE amct_onnx: {json.dumps(argv)}\n")
    if mode == "no_output":
        return
    fake = Path(f"{save}_fake_quant_model.onnx")
    quantize(Path(opts["model"]), feeds, config, fake)
    Path(f"{save}_deploy_model.onnx").write_bytes(fake.read_bytes())  # the double's deploy model: the same QDQ
    if mode == "bad_fake_quant":
        negate_logits(fake)
    Path(f"{save}_quant.json").write_text(json.dumps({"double": True, "skip_layers": config["skip_layers"]}))
    print("[AMCT double] amct_onnx calibration done")


if __name__ == "__main__":
    main(sys.argv[1:])
