"""Waiting for events instead of sleeping for guessed times (docs/testing.md).

A test's outcome must not depend on how fast a loaded machine starts a process: wait for what
the test needs (a file, a process state, a condition), with a deadline that only bounds a hang.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HANG_S = 60.0  # a deadline that only a hang misses, on any machine under any load


def wait_for(condition: Callable[[], object], what: str, timeout: float = HANG_S, poll: float = 0.01) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


def time_limits_start_when(monkeypatch: pytest.MonkeyPatch, ready: Path) -> None:
    """A tool's time limit (``Popen.communicate(timeout=...)``, as run_tool applies it) counts from
    when the tool wrote ``ready`` (or ended), not from its start: a loaded machine may take seconds
    to start a Python, and a test of "killed at its time limit" needs the tool to have got as far
    as its hang (its children started, its output printed) before the limit. Waits at most HANG_S."""
    communicate = subprocess.Popen.communicate

    def communicate_once_ready(self: subprocess.Popen[Any], *args: Any, timeout: float | None = None) -> Any:
        if timeout is not None:
            deadline = time.monotonic() + HANG_S
            while not ready.exists() and self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        return communicate(self, *args, timeout=timeout)

    monkeypatch.setattr(subprocess.Popen, "communicate", communicate_once_ready)
