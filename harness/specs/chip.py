"""What the registry says about one inference target (``fixtures/chips.toml``), its throughput
rules, and the compile target built from a chip and a model: frozen data classes.

Reading and validating the file is ``harness.specs.load``'s job; these classes only hold the
result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16")
# How throughput is measured, named as MLPerf names its scenarios: ``single-stream`` issues one
# request at a time and waits for it (latency percentiles, the seeds' synchronous ais_bench loop);
# ``offline`` keeps as many requests in flight as the backend's throughput mode uses (images/s only).
SINGLE_STREAM = "single-stream"
OFFLINE = "offline"
SCENARIOS = (SINGLE_STREAM, OFFLINE)


@dataclass(frozen=True)
class PerfRule:
    """A certification rule: at the best batch size, this chip >= ``min_ratio`` x ``baseline``."""

    baseline: str
    min_ratio: float
    source: str = ""


@dataclass(frozen=True)
class ChipSpec:
    """An inference target: which backend runs it, with which options, on what devices, and the
    throughput rules it must meet against other chips' baselines."""

    name: str
    backend: str
    aliases: tuple[str, ...] = ()
    devices_per_card: int = 1
    precision: str = "fp32"
    description: str = ""
    backend_options: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[PerfRule, ...] = ()


@dataclass(frozen=True)
class CompileTarget:
    """Everything that decides a compiled artifact besides the ONNX file itself."""

    chip: str
    batch_size: int
    input_shape: tuple[int, int, int]
    input_name: str
    precision: str = "fp32"
    options: Mapping[str, str] = field(default_factory=dict)

    def cache_fields(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "input_name": self.input_name,
            "precision": self.precision,
            "options": dict(sorted(self.options.items())),
        }
