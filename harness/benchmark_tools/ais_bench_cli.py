"""Ascend's ``python -m ais_bench --model X.om --loop N``: the seeds' throughput on an NPU.

Read from ais_bench's own source, both published generations (github.com/Ascend/tools
``ais-bench_workload/tool/ais_bench`` at 9d6da90, 2023-06; github.com/Ascend/msit
``ait/components/benchmark/ais_bench`` at 42a9c80, 2024-06): ``--model``, ``--loop`` (runs of
the timed loop), ``--device`` (0..255), ``--display_all_summary`` (also print H2D / D2H), the
batch read from the model's input shape (``try get model batchsize:N``), one warm-up run, inputs
of zeros (``--pure_data_type`` default; the suite times real images), and a summary at the end::

    [INFO] NPU_compute_time (ms): min = ..., max = ..., mean = ..., median = ..., percentile(99%) = ...
    [INFO] throughput 1000*batchsize.mean(8)/NPU_compute_time.mean(2.26): 3539.8

``throughput`` is the figure (clock ``device_compute``: the host-timed synchronous model
execution, without the H2D / D2H copies, which the suite's Ascend session reports the same way).
The console is parsed, not the ``*_summary.json`` that :func:`harness.judge.baselines.parse_ais_bench_summary`
reads: that file needs ``--output``, which also saves the run's output tensors, and it holds
the same numbers as the console lines (printed at full precision).

``--loop`` is a count, not a duration: unless a loop is given, :meth:`AisBench.prepare` runs
ais_bench once with 20 loops and :meth:`AisBench.command` asks for ``seconds`` worth of that
mean compute time (20..1,000,000 loops).

Only ``single-stream``. ``offline`` is not applicable: ais_bench has no throughput mode of its
own. The ait / msit generation's ``--pipeline 1 --threads N`` (absent from the 2023 Ascend/tools
one) runs N compute sessions with an N the user picks and reports the union of their busy
intervals, while the suite's Ascend backend runs both scenarios as the synchronous loop
(``requests = 1``), so there is no like-for-like figure to compare.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from harness.backends.ascend_tools.infer_session import AIS_BENCH_HINT
from harness.backends.ascend_tools.tools import ToolError, ToolNotFound
from harness.benchmark_tools.base import (
    NUMBER,
    Output,
    VendorFigure,
    VendorTool,
    settings,
)
from harness.clocks import DEVICE_COMPUTE
from harness.specs import OFFLINE, SINGLE_STREAM, CompileTarget

MODULE = "ais_bench"
CALIBRATION_LOOP = 20
MIN_LOOP = 20
MAX_LOOP = 1_000_000
# The pip distributions ais_bench has shipped as (Ascend/tools; ait; msit).
DISTRIBUTIONS = ("ais_bench", "ait-benchmark", "msit-benchmark")
OFFLINE_REASON = (
    "ais_bench has no offline (throughput) mode: its --pipeline --threads N (ait/msit generation only) runs "
    "N sessions with an N the user picks, and the suite's Ascend backend runs offline as its synchronous loop "
    "(requests = 1); compare --scenario single-stream"
)
_STATS = (rf"min = ({NUMBER}), max = ({NUMBER}), mean = ({NUMBER}), median = ({NUMBER}), "
          rf"percentile\((\d+)%\) = ({NUMBER})")
_VERSION_SCRIPT = """
import importlib, importlib.metadata as md, sys
found = []
for name in sys.argv[2:]:
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
if not found:
    found.append(f"{sys.argv[1]} {getattr(importlib.import_module(sys.argv[1]), '__version__', 'unknown')}")
try:
    found.append(f"aclruntime {md.version('aclruntime')}")
except md.PackageNotFoundError:
    pass
print("; ".join(found))
"""


class AisBench(VendorTool):
    """``<python> -m ais_bench``; ``python`` defaults to the running interpreter (the one whose
    ais_bench the suite's Ascend backend imports), ``module`` to ``ais_bench``; ``loop`` fixes
    ``--loop`` instead of calibrating it."""

    name = "ais_bench"
    install_hint = AIS_BENCH_HINT

    def __init__(self, python: str = sys.executable, module: str = MODULE, loop: int | None = None):
        self.python = python
        self.module = module
        self.loop = loop
        self._version: str | None = None
        self._mean_ms: dict[tuple[str, int, int], float] = {}

    def scenario_unavailable(self, scenario: str) -> str | None:
        return OFFLINE_REASON if scenario == OFFLINE else None

    def unavailable_reason(self) -> str | None:
        probe = [
            self.python,
            "-c",
            f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({self.module!r}) else 3)",
        ]
        try:
            self.execute(probe, 60.0, f"{self.name} availability check")
        except ToolError as exc:
            if exc.returncode == 3:
                return f"{self.module} is not importable by {self.python}; {AIS_BENCH_HINT}"
            return f"cannot check for {self.module} with {self.python}: {exc}"
        except ToolNotFound as exc:
            return str(exc)
        return None

    def version(self) -> str:
        """The installed distribution's version (and aclruntime's): ais_bench prints none."""
        if self._version is None:
            argv = [self.python, "-c", _VERSION_SCRIPT, self.module, *DISTRIBUTIONS]
            self._version = self.execute(argv, 60.0, f"{self.name} version").stdout.strip() or "unknown"
        return self._version

    def command(
        self, artifact: Path, target: CompileTarget, scenario: str, device_id: int = 0,
        seconds: float = 10.0, threads: int | None = None, loop: int | None = None,
    ) -> list[str]:
        """``threads`` does not apply (the NPU runs the model); ``loop`` overrides the count."""
        self.check_scenario(scenario)
        if loop is None:
            loop = self.loop or self._loop_for(artifact, target, device_id, seconds)
        return [self.python, "-m", self.module, "--model", str(artifact), "--loop", str(int(loop)),
                "--device", str(int(device_id)), "--display_all_summary", "true"]

    def _loop_for(self, artifact: Path, target: CompileTarget, device_id: int, seconds: float) -> int:
        mean_ms = self._mean_ms.get((str(artifact), target.batch_size, device_id))
        if mean_ms is None or mean_ms <= 0:
            return 1000  # not calibrated (command() without measure()): a round count
        return int(min(MAX_LOOP, max(MIN_LOOP, round(1000.0 * seconds / mean_ms))))

    def prepare(self, artifact: Path, target: CompileTarget, device_id: int = 0, timeout: float | None = None) -> None:
        """Learn the version and, unless ``loop`` is fixed, the mean compute time (a 20-loop run)."""
        self.version()
        if self.loop is not None:
            return
        argv = self.command(artifact, target, SINGLE_STREAM, device_id, loop=CALIBRATION_LOOP)
        result = self.execute(argv, timeout or 600.0, f"{self.name} calibration of {Path(artifact).name}")
        figure = self.parse(result.stdout, target, SINGLE_STREAM, argv)
        self._mean_ms[(str(artifact), target.batch_size, device_id)] = figure.latency_ms_mean or 0.0

    def parse(self, output: str, target: CompileTarget, scenario: str, command: Sequence[str]) -> VendorFigure:
        self.check_scenario(scenario)
        out = Output(self.name, output, command)
        compute = out.find(r"\[INFO\] NPU_compute_time \(ms\): " + _STATS)
        if compute is None:
            if out.find(r"\[INFO\] NPU_compute_time \(ms\): mean = "):
                raise out.error("this is a --pipeline --threads summary (mean only), not the synchronous loop")
            raise out.error("no NPU_compute_time summary line in its output")
        throughput = out.need(
            rf"\[INFO\] throughput 1000\*batchsize\.mean\(({NUMBER})\)"
            rf"/NPU_compute_time\.mean\(({NUMBER})\): ({NUMBER})",
            "throughput summary line", last=True)
        batch, mean_ms, images_per_s = (float(throughput.group(i)) for i in (1, 2, 3))
        if abs(batch - target.batch_size) > 1e-9:
            raise out.error(f"it ran batch {batch:g}, the model was compiled for bs{target.batch_size}")
        if mean_ms <= 0 or abs(images_per_s - 1000.0 * batch / mean_ms) > 1e-6 * images_per_s:
            raise out.error(f"throughput {images_per_s:g} is not 1000 * {batch:g} / {mean_ms:g}")
        out.find(r"\[INFO\] try get model batchsize:(\d+)")
        loop = next((command[i + 1] for i, a in enumerate(command[:-1]) if a in ("--loop", "-l")), None)
        copies = {}
        for name in ("H2D_latency", "D2H_latency"):
            m = out.find(rf"\[INFO\] {name} \(ms\): " + _STATS)
            copies[f"{name}_ms_mean"] = m.group(3) if m else None
        return VendorFigure(
            tool=self.name,
            tool_version=self._version or "unknown",
            command=tuple(command),
            batch_size=target.batch_size,
            scenario=scenario,
            images_per_s=images_per_s,
            clock=DEVICE_COMPUTE,
            streams=1,
            requests=1,
            latency_ms_median=float(compute.group(4)),  # NPU compute time, not end to end
            latency_ms_mean=float(compute.group(3)),
            latency_ms_p90=None,  # ais_bench prints the 99th percentile only
            duration_s=None,  # it prints no wall time
            excerpt=out.excerpt(),
            settings=settings({
                "loop": loop,
                "npu_compute_ms_min": compute.group(1),
                "npu_compute_ms_max": compute.group(2),
                f"npu_compute_ms_p{compute.group(5)}": compute.group(6),
                **copies,
            }),
        )
