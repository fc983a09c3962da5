#!/usr/bin/env python3
"""TEST DOUBLE of NVIDIA's ``trtexec`` (run through tests/doubles/vendor_bin/trtexec; tests/data/vendor/README.md).

Reproduces, from TensorRT's source (github.com/NVIDIA/TensorRT ``samples/trtexec/trtexec.cpp``,
``samples/common/sampleOptions.cpp``, ``sampleReporting.cpp``, ``logging.h``; tags 8.5.3 and v10.16):
``--name=value`` options (an unknown one: help, ``Unknown option``, ``&&&& FAILED``, exit 1);
``--infStreams`` from 8.6 (``--streams`` before, deprecated after), ``--skipInference`` from 8.6;
a static ONNX refuses shapes at build time; the ``&&&& RUNNING/PASSED TensorRT.trtexec [TensorRT vN]``
lines, ``[date-time] [I] `` prefixed logs, the Inference Options block and the performance summary.
``--int8`` builds read ``--calib=<file>`` as trtexec's IInt8EntropyCalibrator2 does (``sampleEngines.cpp``):
a cache is used only when it is TensorRT's text format with the header ``TRT-<this version>-EntropyCalibration2``
and ``tensor: <hex float32 scale>`` lines (finite, positive scales); otherwise (no ``--calib``, no such file, another
version or calibrator, a malformed line) TensorRT ignores it and calibrates on trtexec's random inputs, which the
double reports as a warning and as ``"calibration": "random: <why>"`` in the engine (``"cache"`` when used).
Nothing runs on a GPU: the engine is a JSON file and the times are made up.

Environment: ``FAKE_TRTEXEC_VERSION`` (NV_TENSORRT_VERSION, default 101600 = 10.16.0),
``FAKE_TRTEXEC_COMPUTE_MS`` (GPU compute ms per query, default 2.0), ``FAKE_TRTEXEC_FAIL`` (fail the
inference with this message), ``FAKE_TRTEXEC_SLEEP`` (seconds to hang first), ``FAKE_TRTEXEC_LOG``
(a file each invocation appends its argv to, as JSON).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import time
from pathlib import Path

VALUED = {"onnx", "saveEngine", "loadEngine", "shapes", "minShapes", "optShapes", "maxShapes", "device",
          "duration", "percentile", "infStreams", "streams", "warmUp", "iterations", "calib"}
FLAGS = {"fp16", "bf16", "int8", "exposeDMA", "skipInference", "help", "useSpinWait", "noDataTransfers"}


def calibration(opts: dict[str, str], number: int) -> str:
    """``cache`` when TensorRT would use the --calib file, else ``random: <why>``."""
    if "calib" not in opts:
        return "random: no --calib"
    path = Path(opts["calib"])
    if not path.is_file():
        return f"random: no file {path}"
    lines = path.read_text().splitlines()
    expected = f"TRT-{number}-EntropyCalibration2"
    if not lines or lines[0] != expected:
        return f"random: header {lines[0] if lines else ''!r} is not {expected!r}"
    for line in lines[1:]:
        name, sep, value = line.rpartition(": ")
        try:
            (scale,) = struct.unpack(">f", struct.pack(">I", int(value, 16)))
        except (ValueError, struct.error):
            return f"random: malformed line {line!r}"
        if not (sep and name and math.isfinite(scale) and scale > 0):
            return f"random: malformed line {line!r}"
    return "cache"


def main(argv: list[str]) -> int:
    if log := os.environ.get("FAKE_TRTEXEC_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps(argv) + "\n")
    number = int(os.environ.get("FAKE_TRTEXEC_VERSION", "101600"))
    modern = number >= 8600
    valued, flags = set(VALUED), set(FLAGS)
    if not modern:
        valued.discard("infStreams")
        flags.discard("skipInference")
        flags.discard("bf16")
    head = f"&&&& RUNNING TensorRT.trtexec [TensorRT v{number}]" + (" [b72]" if number >= 100000 else "")
    head += " # trtexec " + " ".join(argv)
    stamp = time.strftime("[%m/%d/%Y-%H:%M:%S] ")
    print(head)

    def info(line: str = "") -> None:
        print(f"{stamp}[I] {line}")

    def fail(message: str) -> int:
        print(f"{stamp}[E] {message}", file=sys.stderr)
        print(head.replace("RUNNING", "FAILED"))
        return 1

    opts: dict[str, str] = {}
    for arg in argv:
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or (eq and name not in valued) or (not eq and name not in flags):
            print("=== Model Options ===\n  --onnx=<file>               ONNX model")
            return fail(f"Unknown option: {arg}")
        opts[name] = value if eq else "1"
    if "help" in opts:
        print("=== Model Options ===\n  --onnx=<file>               ONNX model")
        print(head.replace("RUNNING", "PASSED"))
        return 0
    if "streams" in opts and modern:
        print(f"{stamp}[W] --streams flag has been deprecated, use --infStreams flag instead.", file=sys.stderr)
    if seconds := os.environ.get("FAKE_TRTEXEC_SLEEP"):
        time.sleep(float(seconds))
    major = number // 10000 if number >= 100000 else number // 1000
    minor = number // 100 % 100 if number >= 100000 else number // 100 % 10
    info(f"TensorRT version: {major}.{minor}.{number % 100}")

    if "onnx" in opts:
        onnx_path = Path(opts["onnx"])
        if not onnx_path.is_file():
            return fail(f"Failed to parse onnx file {onnx_path}")
        import onnx

        dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        dynamic = not dims[0].HasField("dim_value")
        shaped = any(k in opts for k in ("minShapes", "optShapes", "maxShapes", "shapes"))
        if shaped and not dynamic:
            return fail("Static model does not take explicit shapes since the shape of inference tensors will be "
                        "determined by the model itself")
        engine = {"fp16": "fp16" in opts, "dynamic": dynamic, "max": opts.get("maxShapes"), "onnx": str(onnx_path)}
        if "int8" in opts:
            used = calibration(opts, number)
            engine |= {"int8": True, "calibration": used}
            if used != "cache":
                print(f"{stamp}[W] [TRT] calibration cache not used ({used[8:]}); calibrating with random data",
                      file=sys.stderr)
        Path(opts["saveEngine"]).write_text(json.dumps(engine))
        info("Engine built in 1.5 sec.")
        if "skipInference" in opts or "loadEngine" not in opts:
            print(head.replace("RUNNING", "PASSED"))
            return 0

    engine_path = Path(opts.get("loadEngine", ""))
    if not engine_path.is_file():
        return fail(f"Failed to load engine {engine_path}")
    json.loads(engine_path.read_text())
    if message := os.environ.get("FAKE_TRTEXEC_FAIL"):
        return fail(message)
    streams = int(opts.get("infStreams") or opts.get("streams") or 1)
    expose = "exposeDMA" in opts
    duration = float(opts.get("duration", "3"))
    compute = float(os.environ.get("FAKE_TRTEXEC_COMPUTE_MS", "2.0"))
    h2d, d2h = 0.3, 0.04
    latency = compute + h2d + d2h
    qps = (1000.0 / latency) if expose else streams * 1000.0 / compute * 0.6
    queries = int(qps * duration)
    info("=== Inference Options ===")
    info("Batch: Explicit")
    for shape in filter(None, [opts.get("shapes")]):
        info(f"Input inference shape{' ' if modern else ''}: {shape.replace(':', '=')}")
    info("Iterations: 10")
    info(f"Duration: {opts.get('duration', '3')}s (+ 200ms warm up)")
    info(f"{'Inference Streams' if modern else 'Streams'}: {streams}")
    info(f"ExposeDMA: {'Enabled' if expose else 'Disabled'}")
    info("Data transfers: Enabled")
    info(f"Percentiles: {opts.get('percentile', '90,95,99')}")
    info("Starting inference")
    info(f"Warmup completed {int(qps * 0.2)} queries over 200 ms")
    info(f"Timing trace has {queries} queries over {duration:.6g} s")
    info()
    info("=== Performance summary ===")

    def perf(mean: float) -> str:
        return (f"min = {mean * 0.97:.6g} ms, max = {mean * 1.4:.6g} ms, mean = {mean:.6g} ms, "
                f"median = {mean * 0.998:.6g} ms, percentile(90%) = {mean * 1.02:.6g} ms")

    info(f"Throughput: {queries / duration:.6g} qps")
    info(f"Latency: {perf(latency)}")
    info(f"Enqueue Time: {perf(0.25)}")
    info(f"H2D Latency: {perf(h2d)}")
    info(f"GPU Compute Time: {perf(compute)}")
    info(f"D2H Latency: {perf(d2h)}")
    info(f"Total Host Walltime: {duration:.6g} s")
    info(f"Total GPU Compute Time: {compute * queries / 1000:.6g} s")
    info("Explanations of the performance metrics are printed in the verbose logs.")
    info()
    print(head.replace("RUNNING", "PASSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
