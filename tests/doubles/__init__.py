"""Test doubles for the Ascend tools (see README.md): put them on PATH / sys.path for a test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOUBLES = Path(__file__).resolve().parent
BIN = DOUBLES / "bin"


def ascend_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """An environment whose PATH finds the fake `atc` / `npu-smi` and whose Python finds the fake ais_bench."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{DOUBLES}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["FAKE_ASCEND_PYTHON"] = sys.executable
    env.update(extra)
    return env
