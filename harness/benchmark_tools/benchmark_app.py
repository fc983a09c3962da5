"""OpenVINO's ``benchmark_app``, run on the suite's own IR the way the suite's session runs it.

The flags come from :meth:`harness.backends.openvino.OpenVinoBackend.config` for the scenario, so
the tool and the suite compile the same IR with the same properties:

- ``single-stream``: ``-hint latency -api sync`` (one request, waited for; the hint follows the
  backend's ``performance_hint`` option when a chip sets one);
- ``offline``: ``-hint throughput -api async`` (the compiled model's
  ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` in flight, as the suite's ``AsyncInferQueue`` keeps);
- always ``-m model.xml -d <device> -t <seconds>``, ``-infer_precision`` (fp32/bf16/fp16 ->
  f32/bf16/f16, set explicitly as the backend does), ``-nthreads`` when threads are set (then
  ``-hint none -load_config <file setting PERFORMANCE_HINT>``: benchmark_app refuses ``-nthreads``
  beside a ``-hint``, a rule of its command line, not of OpenVINO), and
  ``-ip <the IR's own input type>``: without it benchmark_app turns a 3-channel NCHW input into a
  u8 tensor (a Convert layer added in front of the model), which is not the IR the suite runs.

Inputs are benchmark_app's random values, filled once before timing (``inference_only``); the
suite times real images. ``-t`` takes whole seconds (at least 1).

Output: the console text is parsed, not the ``-report_type no_counters -report_folder DIR
-json_stats`` report: that JSON holds the same numbers rounded the same way (to 0.01), has the
stream count only when ``-nstreams`` is given, none of the compiled model's properties (threads,
precision, pinning), and needs a folder per run. The console lines read (``Throughput: N FPS``,
``Median/Average/Min/Max``, ``NUM_STREAMS``, ``Start inference asynchronously, N inference
requests``) are checked on real output in tests/data/vendor/. ``Throughput`` is in frames (images)
per second already (benchmark_app multiplies by the batch); the clock is wall time.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from harness.backends.ascend_tools.tools import ToolError
from harness.backends.base import get_backend
from harness.benchmark_tools.base import (
    NUMBER,
    Output,
    VendorFigure,
    VendorOutputError,
    VendorTool,
    VendorToolUnavailable,
    settings,
)
from harness.cache import atomic_write_bytes, default_cache_root
from harness.clocks import WALL
from harness.specs import OFFLINE, CompileTarget

if TYPE_CHECKING:  # imported lazily by get_backend, as every backend
    from harness.backends.openvino import OpenVinoBackend

EXECUTABLE = "benchmark_app"
INSTALL_HINT = "pip install openvino (its wheel installs benchmark_app beside the Python it is installed for)"
# benchmark_app's -ip choices (OpenVINO 2026.4 parameters.py).
INPUT_TYPES = ("bool", "f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64")
_LINE = r"^\[ INFO \]\s+"


def ir_input_type(xml_path: Path) -> str:
    """The element type of the IR's (first) Parameter, e.g. ``f32``; read from the .xml without
    loading the weights."""
    try:
        for _, element in ET.iterparse(str(xml_path), events=("end",)):
            if element.tag == "layer" and element.get("type") == "Parameter":
                data = element.find("data")
                kind = data.get("element_type") if data is not None else None
                if kind in INPUT_TYPES:
                    return str(kind)
                raise VendorOutputError(f"{xml_path}: the input Parameter has element type {kind!r}; "
                                        f"benchmark_app -ip takes {', '.join(INPUT_TYPES)}")
    except (OSError, ET.ParseError) as exc:
        raise VendorOutputError(f"{xml_path}: cannot read the IR's input type ({exc})") from exc
    raise VendorOutputError(f"{xml_path}: no Parameter layer; is this an OpenVINO IR .xml?")


class BenchmarkApp(VendorTool):
    """``benchmark_app`` for the openvino backend; ``options`` are the chip's ``backend_options``
    (device, threads, performance_hint, allow_precision_fallback), read by the backend itself."""

    name = "benchmark_app"
    install_hint = INSTALL_HINT

    def __init__(self, options: Mapping[str, str] | None = None, executable: str | None = None):
        self.backend = cast("OpenVinoBackend", get_backend("openvino", **dict(options or {})))
        self.executable = executable
        self._version: str | None = None

    def find(self) -> str | None:
        """The executable: ``executable`` if given, else ``benchmark_app`` on PATH, else the one
        beside the running Python (a virtual environment's bin/, not on PATH unless activated)."""
        if self.executable:
            return shutil.which(self.executable)
        found = shutil.which(EXECUTABLE)
        if found:
            return found
        beside = Path(sys.executable).parent / EXECUTABLE
        return str(beside) if shutil.which(str(beside)) else None

    def unavailable_reason(self) -> str | None:
        if self.find() is None:
            where = self.executable or f"{EXECUTABLE} on PATH or beside {sys.executable}"
            return f"{where} not found; {INSTALL_HINT}"
        return None

    def version(self) -> str:
        """The OpenVINO build benchmark_app loads. It has no version flag, but prints the build
        (step 2) before it reads the model: a run on a model that does not exist shows it."""
        if self._version is None:
            exe = self.find()
            if exe is None:
                raise VendorToolUnavailable(self.unavailable_reason() or INSTALL_HINT)
            with tempfile.TemporaryDirectory(prefix="mzc-benchmark-app-") as tmp:
                argv = [exe, "-m", str(Path(tmp) / "no-such-model.xml"), "-d", self.backend.device, "-niter", "0"]
                try:
                    stdout = self.execute(argv, 120.0, "benchmark_app version probe").stdout
                except ToolError as exc:  # expected: the model does not exist
                    stdout = exc.stdout
            found = Output(self.name, stdout, argv).find(r"Build \.+ (\S+)")
            self._version = found.group(1) if found else "unknown"
        return self._version

    def command(
        self, artifact: Path, target: CompileTarget, scenario: str, device_id: int = 0,
        seconds: float = 10.0, threads: int | None = None,
    ) -> list[str]:
        self.check_scenario(scenario)
        if device_id != 0:
            raise VendorToolUnavailable(
                f"benchmark_app on OpenVINO {self.backend.device} has one device (0); asked for {device_id}")
        config = self.backend.config(target.precision, scenario)
        hint = str(config["PERFORMANCE_HINT"])
        argv = [self.find() or EXECUTABLE, "-m", str(artifact), "-d", self.backend.device]
        nthreads = threads or config.get("INFERENCE_NUM_THREADS")
        if nthreads:
            # benchmark_app's UI rule: -nthreads only with -hint none; the hint then comes from a
            # -load_config file, so the compiled model gets both properties, as the suite's does.
            argv += ["-hint", "none", "-nthreads", str(int(nthreads)), "-load_config", str(self._hint_config(hint))]
        else:
            argv += ["-hint", hint.lower()]
        return argv + [
            "-api", "async" if scenario == OFFLINE else "sync", "-t", str(max(1, math.ceil(seconds))),
            "-infer_precision", str(config["INFERENCE_PRECISION_HINT"]), "-ip", ir_input_type(Path(artifact)),
        ]

    def _hint_config(self, hint: str) -> Path:
        """A ``-load_config`` file setting ``PERFORMANCE_HINT`` on the device, in the suite's cache
        (one per device and hint, written once, never removed: a command stays runnable)."""
        text = json.dumps({self.backend.device: {"PERFORMANCE_HINT": hint}}, sort_keys=True)
        path = default_cache_root() / "benchmark_app" / f"config-{self.backend.device}-{hint}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, text.encode("utf-8"))
        return path

    def parse(self, output: str, target: CompileTarget, scenario: str, command: Sequence[str]) -> VendorFigure:
        out = Output(self.name, output, command)
        build = out.find(_LINE + r"Build \.+ (\S+)")
        measuring = out.need(
            r"Start inference (a?synchronously)(?:, (\d+) inference requests)?", "measuring step (step 10)"
        )
        is_async = measuring.group(1) == "asynchronously"
        if is_async != (scenario == OFFLINE):
            raise out.error(f"it ran {measuring.group(1)} but the scenario is {scenario} "
                            f"({'asynchronous' if scenario == OFFLINE else 'synchronous'} expected)")
        batch = out.find(_LINE + r"Model batch size: (\d+)")
        if batch and int(batch.group(1)) != target.batch_size:
            raise out.error(f"it ran batch {batch.group(1)}, the artifact was compiled for bs{target.batch_size}")
        streams = out.find(_LINE + r"NUM_STREAMS: (\d+)")
        count = out.need(_LINE + r"Count:\s+(\d+) iterations", "iteration count")
        duration = out.need(_LINE + rf"Duration:\s+({NUMBER}) ms", "duration")
        latency = {name: self._latency(out, label) for name, label in
                   (("median", "Median"), ("mean", "Average"), ("min", "Min"), ("max", "Max"))}
        fps = out.need(_LINE + rf"Throughput:\s+({NUMBER}) FPS", "throughput", last=True)
        model_input = out.find(_LINE + r"(\S+) \(node: [^)]*\) : (\w+) / (\S+) / (\S+)", after="[Step 6/")
        extra = {
            name: (m.group(1).strip() if (m := out.find(_LINE + name + r": (.+)$")) else None)
            for name in ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
                         "ENABLE_CPU_PINNING", "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        }
        return VendorFigure(
            tool=self.name,
            tool_version=build.group(1) if build else "unknown",
            command=tuple(command),
            batch_size=target.batch_size,
            scenario=scenario,
            images_per_s=float(fps.group(1)),
            clock=WALL,
            streams=int(streams.group(1)) if streams else None,
            requests=int(measuring.group(2) or 1) if is_async else 1,
            latency_ms_median=latency["median"],
            latency_ms_mean=latency["mean"],
            latency_ms_p90=None,  # benchmark_app prints one percentile (-latency_percentile, default 50)
            duration_s=float(duration.group(1)) / 1000.0,
            excerpt=out.excerpt(),
            settings=settings({
                **extra,
                "input": f"{model_input.group(2)} {model_input.group(4)}" if model_input else None,
                "iterations": count.group(1),
                "latency_ms_min": latency["min"],
                "latency_ms_max": latency["max"],
            }),
        )

    @staticmethod
    def _latency(out: Output, label: str) -> float | None:
        m = out.find(_LINE + rf"{label}:\s+({NUMBER}) (ms|us)\b")
        if m is None:
            return None
        value = float(m.group(1))
        return value / 1000.0 if m.group(2) == "us" else value
