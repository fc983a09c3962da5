"""Running external tools (atc, npu-smi, the ais_bench CLI): argument lists, time limits, stderr kept.

Every external command goes through :func:`run_tool`: never a shell, so a model name or a path
taken from a data file is one argument and nothing else (no ``;``, ``$(...)`` or globbing can
reach a shell); a time limit, after which the whole process group is killed; and the tail of the
tool's stderr (and stdout: ATC reports its errors there) in the error a user sees.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, NotApplicable

TAIL_LINES = 30


class ToolNotFound(NotApplicable, RuntimeError):
    """The executable is not on PATH; the message says how to install or enable it."""


class ToolError(HarnessError, RuntimeError):
    """The tool ran and failed (non-zero exit or time limit); the message holds its output's tail."""

    def __init__(self, message: str, command: Sequence[str], returncode: int | None, stderr: str, stdout: str):
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


@dataclass(frozen=True)
class ToolResult:
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def find_tool(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH, or :class:`ToolNotFound` naming the fix."""
    path = shutil.which(name)
    if path is None:
        raise ToolNotFound(f"`{name}` is not on PATH; {hint}")
    return path


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept)


def _check_args(args: Sequence[object]) -> list[str]:
    if isinstance(args, (str, bytes)) or not args:
        raise TypeError("run_tool takes a non-empty list of arguments, never a command string")
    checked = []
    for a in args:
        if not isinstance(a, (str, os.PathLike)):
            raise TypeError(f"tool arguments must be str or paths, got {type(a).__name__}: {a!r}")
        text = os.fspath(a)
        if "\x00" in text:
            raise ValueError(f"tool argument contains a NUL byte: {text!r}")
        checked.append(text)
    return checked


def run_tool(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    hint: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> ToolResult:
    """Run ``args`` (``args[0]`` looked up on PATH) and return its output, or raise.

    ``hint`` says how to get the tool when it is missing; ``what`` names the step in errors
    (e.g. "ATC compile of resnext50 bs16"). On timeout the tool's process group is killed, so a
    hung ``atc`` leaves no children behind.
    """
    argv = _check_args(args)
    argv[0] = find_tool(argv[0], hint)
    label = what or Path(argv[0]).name
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            start_new_session=True,  # its own process group: a timeout kills the tool's children too
        )
    except OSError as exc:
        raise ToolError(f"{label}: could not start {argv[0]}: {exc}", argv, None, "", "") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise ToolError(
            f"{label}: {Path(argv[0]).name} did not finish within {timeout:g} s and was killed.\n"
            f"  command: {_display(argv)}\n  last output:\n{_tail(stderr or stdout)}",
            argv, None, stderr, stdout,
        ) from None
    except BaseException:
        _kill_group(proc)  # interrupted (Ctrl-C, pytest timeout): do not leave the tool running
        raise
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise ToolError(
            f"{label}: {Path(argv[0]).name} failed with exit status {proc.returncode}.\n"
            f"  command: {_display(argv)}\n  stderr:\n{_tail(stderr) or '    (empty)'}"
            + (f"\n  stdout:\n{_tail(stdout)}" if stdout.strip() else ""),
            argv, proc.returncode, stderr, stdout,
        )
    return ToolResult(tuple(argv), proc.returncode, stdout, stderr, seconds)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _display(argv: Sequence[str]) -> str:
    """The command as a user could paste it into a shell (quoted), for error messages only."""
    return " ".join(shlex.quote(a) for a in argv)
