"""What every vendor benchmark tool is to the suite: its figure, its interface, its errors.

A :class:`VendorTool` builds the command line a vendor's customers would type (OpenVINO's
``benchmark_app``, Ascend's ``python -m ais_bench``, NVIDIA's ``trtexec``) for one compiled
artifact, runs it through :func:`harness.backends.ascend_tools.tools.run_tool` (an argument list,
never a shell; a time limit after which the tool's whole process group is killed, as on Ctrl-C),
and reads its console output into a :class:`VendorFigure`. A failing tool raises that module's
``ToolError``, whose message holds the command line and the tail of the tool's output; output
without the figure raises :class:`VendorOutputError`, likewise.
"""

from __future__ import annotations

import math
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.backends.ascend_tools.tools import TAIL_LINES, ToolResult, run_tool
from harness.clocks import CLOCKS
from harness.errors import HarnessError, NotApplicable, UsageError
from harness.specs import SCENARIOS, CompileTarget

# A number as C++ streams and Python print them (``12.5``, ``1e+06``, ``inf``).
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
# The time limit of a run beyond the seconds it measures: loading, compiling, warming up.
START_UP_SECONDS = 300.0


class VendorToolUnavailable(NotApplicable, RuntimeError):
    """The vendor tool is missing, or cannot measure this backend, device or scenario (a skip);
    the message says what to install or what exists instead."""


class VendorOutputError(HarnessError, ValueError):
    """The tool exited normally but its output does not hold the figure (or contradicts the
    command); the message has the command line and the output's tail."""


class VendorUsageError(UsageError, ValueError):
    """A tool was asked for something impossible (an unknown scenario, a bad option value)."""


@dataclass(frozen=True)
class VendorFigure:
    """One figure as a vendor tool reported it, and where it was read from.

    ``images_per_s`` is by ``clock`` (``harness.clocks.WALL`` or ``DEVICE_COMPUTE``);
    latencies are the tool's own (None where it prints none); ``streams`` / ``requests`` are what
    the tool says it ran with; ``excerpt`` holds the output lines every number came from;
    ``settings`` are further (name, value) pairs the tool printed (threads, precision, other clock).
    """

    tool: str
    tool_version: str
    command: tuple[str, ...]
    batch_size: int
    scenario: str
    images_per_s: float
    clock: str
    streams: int | None
    requests: int | None
    latency_ms_median: float | None
    latency_ms_mean: float | None
    latency_ms_p90: float | None
    duration_s: float | None
    excerpt: str
    settings: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        if not (math.isfinite(self.images_per_s) and self.images_per_s > 0):
            raise ValueError(f"images_per_s must be a positive number, got {self.images_per_s!r}")

    def setting(self, name: str) -> str | None:
        """The value of one of ``settings`` (None when the tool did not print it)."""
        return dict(self.settings).get(name)

    def command_line(self) -> str:
        """The command as one could paste it into a shell."""
        return display(self.command)


class VendorTool(ABC):
    """A vendor's benchmark tool: availability, version, command line, output parser, and a run.

    Subclasses implement the abstract members; :meth:`run` is the same for all: refuse when
    unavailable, :meth:`prepare` (e.g. build a TensorRT engine once), run :meth:`command` with a
    time limit, :meth:`parse` its output.
    """

    name: ClassVar[str]
    install_hint: ClassVar[str]

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when the tool can run here; otherwise what is missing and how to install it."""

    @abstractmethod
    def version(self) -> str:
        """The tool's (runtime's) version, as the tool itself reports it."""

    @abstractmethod
    def command(
        self, artifact: Path, target: CompileTarget, scenario: str, device_id: int = 0,
        seconds: float = 10.0, threads: int | None = None,
    ) -> list[str]:
        """The argument list that measures ``artifact`` (compiled for ``target``) in ``scenario``
        for about ``seconds`` on ``device_id``; ``threads``: host threads, where the tool has them."""

    @abstractmethod
    def parse(self, output: str, target: CompileTarget, scenario: str, command: Sequence[str]) -> VendorFigure:
        """The figure in ``output`` (the tool's stdout) of ``command``; :class:`VendorOutputError`
        when it is not there."""

    # -- shared ---------------------------------------------------------------------------------

    def scenario_unavailable(self, scenario: str) -> str | None:
        """Why the tool cannot measure ``scenario`` (a known one), or None (default: it can)."""
        return None

    def check_scenario(self, scenario: str) -> None:
        """Refuse a scenario name the suite does not know (:class:`VendorUsageError`) or one this
        tool cannot measure (:class:`VendorToolUnavailable`, a skip)."""
        if scenario not in SCENARIOS:
            raise VendorUsageError(f"{self.name}: unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        reason = self.scenario_unavailable(scenario)
        if reason:
            raise VendorToolUnavailable(reason)

    def timeout_for(self, seconds: float) -> float:
        """The time limit of a run measuring ``seconds``."""
        return START_UP_SECONDS + 2.0 * float(seconds)

    def prepare(self, artifact: Path, target: CompileTarget, device_id: int = 0, timeout: float | None = None) -> None:
        """Anything the measuring command needs first (default: nothing)."""
        return None

    def execute(self, argv: Sequence[str], timeout: float, what: str) -> ToolResult:
        """Run ``argv`` with the time limit (the process group killed on timeout or interrupt)."""
        return run_tool(argv, timeout=timeout, hint=self.install_hint, what=what)

    def measure(
        self, artifact: Path, target: CompileTarget, scenario: str, device_id: int = 0,
        seconds: float = 10.0, threads: int | None = None, timeout: float | None = None,
    ) -> VendorFigure:
        """Measure ``artifact`` with the tool and return its figure.

        Raises :class:`VendorToolUnavailable` (a skip) when the tool is missing or cannot do this,
        ``ToolError`` when it fails or overruns ``timeout`` (default :meth:`timeout_for`), and
        :class:`VendorOutputError` when its output lacks the figure.
        """
        self.check_scenario(scenario)
        reason = self.unavailable_reason()
        if reason:
            raise VendorToolUnavailable(reason)
        self.prepare(artifact, target, device_id, timeout)
        argv = self.command(artifact, target, scenario, device_id=device_id, seconds=seconds, threads=threads)
        what = f"{self.name} {scenario} on {Path(artifact).name} bs{target.batch_size}"
        result = self.execute(argv, timeout if timeout is not None else self.timeout_for(seconds), what)
        return self.parse(result.stdout, target, scenario, argv)


# --------------------------------------------------------------------------------------------
# Reading console output


def display(argv: Sequence[str]) -> str:
    """A command as one could paste it into a shell (quoted), for messages."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, indented for a message."""
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-lines:])


class Output:
    """A tool's console output, searched line by line; every line a figure is read from is kept
    (in output order) for the figure's ``excerpt``."""

    def __init__(self, tool: str, text: str, command: Sequence[str]):
        self.tool = tool
        self.text = text
        self.lines = text.splitlines()
        self.command = list(command)
        self._used: set[int] = set()

    def find(self, pattern: str, flags: int = 0, after: str | None = None) -> re.Match[str] | None:
        """The first line matching ``pattern`` (searched, not anchored), remembered for the excerpt;
        with ``after``, the first one below the first line containing that text."""
        compiled = re.compile(pattern, flags)
        start = 0
        if after is not None:
            start = next((i + 1 for i, line in enumerate(self.lines) if after in line), len(self.lines))
        for i in range(start, len(self.lines)):
            m = compiled.search(self.lines[i])
            if m:
                self._used.add(i)
                return m
        return None

    def find_last(self, pattern: str, flags: int = 0) -> re.Match[str] | None:
        compiled = re.compile(pattern, flags)
        for i in range(len(self.lines) - 1, -1, -1):
            m = compiled.search(self.lines[i])
            if m:
                self._used.add(i)
                return m
        return None

    def need(self, pattern: str, what: str, flags: int = 0, last: bool = False) -> re.Match[str]:
        m = (self.find_last if last else self.find)(pattern, flags)
        if m is None:
            raise self.error(f"no {what} in its output (expected a line matching {pattern!r})")
        return m

    def error(self, detail: str) -> VendorOutputError:
        last = tail(self.text) or "    (no output)"
        return VendorOutputError(
            f"{self.tool}: {detail}.\n  command: {display(self.command)}\n  last output:\n{last}"
        )

    def excerpt(self) -> str:
        return "\n".join(self.lines[i].rstrip() for i in sorted(self._used))


def number(text: str) -> float:
    return float(text)


def settings(pairs: Mapping[str, object | None]) -> tuple[tuple[str, str], ...]:
    """(name, value) pairs of the values that are known, as strings, in the given order."""
    return tuple((k, str(v)) for k, v in pairs.items() if v is not None)
