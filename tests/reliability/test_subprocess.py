"""External tools (atc, npu-smi, the ais_bench CLI) run through harness.backends.ascend_tools.tools.run_tool: argument
lists only, a time limit that kills the tool and its children, and the tool's output kept in the
error. Model names and paths from data files reach the tool as single arguments, never a shell."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.backends.ascend_tools.tools import ToolError, ToolNotFound, run_tool
from tests.reliability._support import running
from tests.waiting import HANG_S, time_limits_start_when, wait_for


def _script(tmp_path: Path, name: str, body: str) -> Path:
    """An executable Python script named ``name`` in a bin dir of its own; returns the bin dir."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return bindir


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def put(name: str, body: str) -> None:
        bindir = _script(tmp_path, name, body)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return put


def test_hostile_names_are_single_arguments(on_path, tmp_path: Path) -> None:
    on_path("echoargs", "import json, sys; print(json.dumps(sys.argv[1:]))")
    marker = tmp_path / "pwned"
    hostile = [f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "a b\tc", "*", "--model=m|tee x"]
    result = run_tool(["echoargs", *hostile], timeout=30, hint="test")
    import json

    assert json.loads(result.stdout) == hostile
    assert not marker.exists()


def test_a_command_string_is_refused() -> None:
    with pytest.raises(TypeError, match="never a command string"):
        run_tool("atc --framework=5", timeout=1, hint="")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or paths"):
        run_tool(["atc", 5], timeout=1, hint="")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="NUL"):
        run_tool(["atc", "a\x00b"], timeout=1, hint="")


def test_missing_tool_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFound, match="`atc` is not on PATH; source set_env.sh"):
        run_tool(["atc", "--help"], timeout=5, hint="source set_env.sh")


def test_failure_keeps_stderr_tail_and_the_command(on_path) -> None:
    on_path("failing", """\
        import sys
        for i in range(100):
            print(f"noise {i}", file=sys.stderr)
        print("E10016: the real reason", file=sys.stderr)
        sys.exit(3)
    """)
    with pytest.raises(ToolError) as info:
        run_tool(["failing", "--model=a b.onnx"], timeout=30, hint="", what="ATC compile")
    message = str(info.value)
    assert "ATC compile: failing failed with exit status 3" in message
    assert "E10016: the real reason" in message and "noise 99" in message and "noise 5\n" not in message
    assert "'--model=a b.onnx'" in message  # quoted so that it can be pasted into a shell
    assert info.value.returncode == 3 and "noise 0" in info.value.stderr  # the whole stderr is kept on the error


@pytest.mark.timing
def test_timeout_kills_the_tool_and_its_children(on_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    on_path("hangs", f"""\
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("compiling...", file=sys.stderr, flush=True)
        open({str(pidfile)!r} + ".tmp", "w").write(str(child.pid))
        os.replace({str(pidfile)!r} + ".tmp", {str(pidfile)!r})
        time.sleep(300)
    """)
    # run_tool's 2 s start when the tool has its child and has said "compiling" (the pid file is
    # written after both), however long a loaded machine takes to start the two Pythons
    time_limits_start_when(monkeypatch, pidfile)
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"did not finish within 2 s and was killed(.|\n)*compiling"):
        run_tool(["hangs"], timeout=2, hint="")
    assert time.monotonic() - start < HANG_S  # a hang detector: the tool itself would sleep 300 s
    child = int(pidfile.read_text())
    # a zombie not yet reaped by init counts as gone
    wait_for(lambda: not running({child}), f"the tool's child {child} exits after the timeout")
