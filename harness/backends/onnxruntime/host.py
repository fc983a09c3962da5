"""What this host has for ONNX Runtime: the installed distribution, NVIDIA GPUs, TensorRT.

The facts a GPU artifact's cache key and the backend's unavailability reason are made of: which
ONNX Runtime distribution is installed (they replace one another), which GPUs the NVIDIA driver
lists (``/proc/driver/nvidia/gpus``, narrowed by ``CUDA_VISIBLE_DEVICES``) and which TensorRT
Python distribution ORT's TensorRT provider loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.backends.base import BackendUnavailable
from harness.versions import installed_version

INSTALL_HINT = "pip install 'onnxruntime>=1.16'"
# Where the NVIDIA driver lists the GPUs it manages (one directory per GPU).
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-libs", "tensorrt-cu11")
_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime", "onnxruntime-openvino", "onnxruntime-directml")


def load_ort() -> Any:
    """The ``onnxruntime`` module, or :class:`BackendUnavailable` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX Runtime is not installed ({exc}); {INSTALL_HINT}") from exc
    return onnxruntime


def ort_distribution() -> str:
    """The installed ONNX Runtime distribution, e.g. ``onnxruntime 1.20.1`` or ``onnxruntime-gpu 1.20.1``."""
    found = installed_version(*_DISTRIBUTIONS)
    return " ".join(found) if found else "no onnxruntime distribution found"


def nvidia_gpu_count() -> int:
    """GPUs the NVIDIA driver manages (0 without a driver), narrowed by ``CUDA_VISIBLE_DEVICES``."""
    try:
        count = sum(1 for p in NVIDIA_GPUS_DIR.iterdir() if p.is_dir())
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]))
    return count


def nvidia_gpu_models() -> tuple[str, ...]:
    """The distinct GPU models the driver lists (``Model:`` of ``<gpus dir>/<bus id>/information``).

    Part of a GPU artifact's cache key: a TensorRT engine is built for one GPU model and is not
    valid on another. Empty without a driver.
    """
    models = set()
    try:
        entries = sorted(p for p in NVIDIA_GPUS_DIR.iterdir() if p.is_dir())
    except OSError:
        return ()
    for entry in entries:
        try:
            text = (entry / "information").read_text(errors="replace")
        except OSError:
            models.add("unknown")
            continue
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                      if line.lower().startswith("model:")), "unknown")
        models.add(model or "unknown")
    return tuple(sorted(models))


def cuda_device_problem(device_id: int) -> str | None:
    """Why ``device_id`` cannot be used as a CUDA device here (no GPU, or too few); None if it can."""
    gpus = nvidia_gpu_count()
    if gpus == 0:
        return (
            f"no CUDA device: the NVIDIA driver lists no GPU ({NVIDIA_GPUS_DIR} is missing or empty, "
            "or CUDA_VISIBLE_DEVICES hides them); run on a host with an NVIDIA GPU and its driver"
        )
    if device_id >= gpus:
        return (
            f"device_id {device_id} asked for, but only {gpus} CUDA device(s) are visible "
            f"(0..{gpus - 1}); fix backend_options.device_id in fixtures/chips.toml"
        )
    return None


def tensorrt_version() -> str:
    """The TensorRT Python distribution's version (the libraries ORT's TensorRT provider loads)."""
    found = installed_version(*TENSORRT_DISTRIBUTIONS)
    return " ".join(found) if found else "not installed as a Python package (system libraries)"
