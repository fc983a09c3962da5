"""Helpers shared by the reliability tests: real-image fixtures' sources, child processes, and
looking at a cache directory from the outside."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
VAL_1300 = DATASETS / "imagenet-val-1300"
SAMPLE_1000 = DATASETS / "imagenet-sample-1000"
ABSENT = "(CI keeps ../shared/datasets beside the checkout; a user's machine may not have it)"
CHILD = Path(__file__).resolve().parent / "_child.py"
CHILD_TIMEOUT_S = 120.0


def copy_real_images(dest: Path, count: int, offset: int = 0) -> Path:
    """``count`` real validation JPEGs (sorted by name, from ``offset``) plus their label lines."""
    labels = dict(line.split() for line in (VAL_1300 / "val_label.txt").read_text().splitlines() if line.strip())
    names = sorted(p.name for p in (VAL_1300 / "val").iterdir())[offset : offset + count]
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(VAL_1300 / "val" / name, dest / name)
    (dest / "val_label.txt").write_text("".join(f"{n} {labels[n]}\n" for n in names))
    return dest


def child_env(stall: str | None = None, flag: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABILITY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["MZC_PROGRESS"] = "0"
    if stall is not None:
        assert flag is not None
        env["RELIABILITY_STALL"] = stall
        env["RELIABILITY_FLAG"] = str(flag)
    return env


# Every child this session started, so that a failing test cannot leak one (see reap()).
SPAWNED: list[subprocess.Popen[str]] = []


def spawn(
    command: str, args: Mapping[str, Any], stall: str | None = None, flag: Path | None = None
) -> subprocess.Popen[str]:
    """Start ``_child.py command args`` (a script file: pool workers re-import it, hooks included)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), command, json.dumps(args)],
        cwd=REPO,
        env=child_env(stall, flag),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    SPAWNED.append(proc)
    return proc


def reap() -> None:
    """SIGKILL every child started by spawn() that still runs, and everything below it."""
    while SPAWNED:
        proc = SPAWNED.pop()
        if proc.poll() is None:
            for pid in running(descendants(proc.pid) | {proc.pid}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=CHILD_TIMEOUT_S)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a child that must succeed; its JSON result."""
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


def wait_for_flag(proc: subprocess.Popen[str], flag: Path, timeout: float = CHILD_TIMEOUT_S) -> None:
    """Block until the child wrote ``flag`` (it reached its stall point)."""
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"child exited ({proc.returncode}) before its stall point:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"child never reached its stall point within {timeout:.0f} s")
        time.sleep(0.01)


def start_together(procs: list[subprocess.Popen[str]], go: Path, timeout: float = CHILD_TIMEOUT_S) -> None:
    """Wait until every child is ready and waiting for ``go`` (slow starts under load must not
    turn a race into a queue), then let them all go at once."""
    deadline = time.monotonic() + timeout
    while len(list(go.parent.glob(f"{go.name}.*.ready"))) < len(procs):
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"child exited ({proc.returncode}) before the start:\n{err[-4000:]}")
        assert time.monotonic() < deadline, "children never got ready"
        time.sleep(0.01)
    go.write_text("go")


def kill9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child (no cleanup handler can run) and reap it.

    Its pipes are closed unread: processes it left behind may hold them open forever.
    """
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=CHILD_TIMEOUT_S)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    assert proc.returncode == -signal.SIGKILL


def leftovers(root: Path) -> list[str]:
    """Temp build directories anywhere in the cache (``kind/.tmp-*``)."""
    return sorted(str(p.relative_to(root)) for p in root.glob("*/.tmp-*"))


def published(root: Path, kind: str) -> list[str]:
    """Keys of the entries of ``kind`` that a reader would accept (a manifest inside)."""
    kind_dir = root / kind
    if not kind_dir.is_dir():
        return []
    return sorted(p.name for p in kind_dir.iterdir() if (p / "manifest.json").is_file())


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a live process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids that still run (zombies waiting to be reaped count as gone)."""
    return {pid for pid in pids if (stat := _stat(pid)) is not None and stat[1] != "Z"}
