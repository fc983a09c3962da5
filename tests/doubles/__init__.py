"""Test doubles for the Ascend tools (see README.md): put them on PATH / sys.path for a test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOUBLES = Path(__file__).resolve().parent
BIN = DOUBLES / "bin"
# The two published ais_bench API generations the fake ais_bench reproduces (FAKE_AIS_BENCH_GENERATION).
AIS_BENCH_GENERATIONS = ("tools-2023", "ait")


def ascend_env(base: dict[str, str] | None = None, generation: str | None = None, **extra: str) -> dict[str, str]:
    """An environment whose PATH finds the fake `atc` / `npu-smi` / `amct_onnx` and whose Python finds the fake
    ais_bench (of ``generation``, one of :data:`AIS_BENCH_GENERATIONS`; default: the double's default, ait) and
    the fake amct_onnx wheel's metadata."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{DOUBLES}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["FAKE_ASCEND_PYTHON"] = sys.executable
    if generation is not None:
        if generation not in AIS_BENCH_GENERATIONS:
            raise ValueError(f"ais_bench generation {generation!r}: the double knows {AIS_BENCH_GENERATIONS}")
        env["FAKE_AIS_BENCH_GENERATION"] = generation
    env.update(extra)
    return env
