"""The environment fingerprint recorded once per run: host, CPU, OS, Python and tool versions.

On Ascend hosts it adds the CANN toolkit and driver versions and the chip name `npu-smi info`
prints. Nothing here imports the heavy packages: versions come from installed metadata
(harness.versions). It sits above harness.backends: it asks the Ascend backend's npu-smi reader
for the chips, and nothing in the backends imports it.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from harness.versions import DRIVER_VERSION_FILE, cann_version, installed_version, version_from_file

PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy",
            "pillow", "pytest", "ais_bench")


def _cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("model name", "cpu model", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# The instruction-set flags that change what a CPU backend runs (OpenVINO picks bf16 on
# AVX-512-BF16 and AMX; these machines alternate between CPUs with and without AVX-512).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_features(cpuinfo: str) -> list[str]:
    """The :data:`CPU_FEATURES` in ``cpuinfo``'s flags line (x86; empty elsewhere)."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FEATURES if f in flags]
    return []


def _versions() -> dict[str, str]:
    found = (installed_version(name) for name in PACKAGES)
    return dict(f for f in found if f is not None)


def _ascend() -> dict[str, str]:
    found = {"cann_toolkit": cann_version(), "driver": version_from_file(DRIVER_VERSION_FILE)}
    return {key: value for key, value in found.items() if value is not None}


def _npu_chips() -> dict[str, Any] | None:
    """What `npu-smi info` reports (chip names per device), or why it could not be read; None without npu-smi."""
    if shutil.which("npu-smi") is None:
        return None
    from harness.backends.ascend_tools.npu_smi import NpuSmiError, discover
    from harness.backends.ascend_tools.tools import ToolError, ToolNotFound

    try:
        chips = discover(timeout=30.0)
    except (NpuSmiError, ToolError, ToolNotFound, OSError) as exc:
        return {"error": str(exc)[:500]}
    return {"chips": sorted({c.name for c in chips}),
            "devices": [{"device_id": c.device_id, "name": c.name, "health": c.health} for c in chips]}


def fingerprint() -> dict[str, Any]:
    """A JSON-ready description of the machine and software this run used."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    cpuinfo = _cpuinfo()
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu": _cpu_model(cpuinfo),
        "cpu_features": cpu_features(cpuinfo),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": _versions(),
    }
    ascend: dict[str, Any] = dict(_ascend())
    npu = _npu_chips()
    if npu is not None:
        ascend["npu_smi"] = npu
    if ascend:
        env["ascend"] = ascend
    return env
