"""harness.cache.ArtifactCache: content keys, atomic publication, crash safety, and build-once
under real concurrent processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cache import MANIFEST, ArtifactCache, CacheError, content_key

REPO = Path(__file__).resolve().parents[1]
INPUTS = {"onnx_sha256": "ab" * 32, "target": {"chip": "310P3", "batch_size": 8}, "version": 3}

# A child process that uses the cache on its own: "kill" builds half an entry and then waits to
# be killed; "race" waits for a start signal so two children reach get_or_build together.
CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from harness.cache import ArtifactCache

root, mode, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
flag, counter = Path(sys.argv[4]), Path(sys.argv[5])

def build(tmp):
    with counter.open("a") as fh:
        fh.write(f"{os.getpid()}\n")
    (tmp / "part1.bin").write_bytes(b"first half")
    if mode == "kill":
        flag.write_text("half written")
        time.sleep(120)
    time.sleep(1.0)  # long enough that the other racer is surely waiting on the lock
    (tmp / "part2.bin").write_bytes(os.urandom(4096))
    return {"builder": os.getpid(), "finished": time.time()}

if mode == "race":
    deadline = time.monotonic() + 30
    while not flag.exists():
        if time.monotonic() > deadline:
            raise SystemExit("start flag never appeared")
        time.sleep(0.005)
entered = time.time()
entry = ArtifactCache(Path(root)).get_or_build("thing", inputs, build, lock_timeout=60)
data = (entry.path / "part2.bin").read_bytes()
print(json.dumps({"built_here": entry.built_here, "path": str(entry.path),
                  "sha256": hashlib.sha256(data).hexdigest(), "builder": entry.manifest["builder"],
                  "entered": entered, "finished": entry.manifest["finished"]}))
"""


def child(root: Path, mode: str, flag: Path, counter: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode, json.dumps(INPUTS), str(flag), str(counter)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def complete_build(tmp: Path) -> dict[str, int]:
    (tmp / "part1.bin").write_bytes(b"first half")
    (tmp / "part2.bin").write_bytes(b"second half")
    return {"builder": os.getpid()}


def leftovers(kind_dir: Path) -> list[str]:
    return sorted(p.name for p in kind_dir.iterdir() if p.name.startswith(".tmp-"))


def test_key_is_independent_of_dict_order() -> None:
    reordered = {"version": 3, "target": {"batch_size": 8, "chip": "310P3"}, "onnx_sha256": "ab" * 32}
    assert list(reordered) != list(INPUTS)
    assert content_key(reordered) == content_key(INPUTS)
    assert content_key({**INPUTS, "version": 4}) != content_key(INPUTS)
    assert content_key({**INPUTS, "target": {"chip": "310P3", "batch_size": 16}}) != content_key(INPUTS)


def test_build_once_then_read(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []

    def build(tmp: Path) -> dict[str, int]:
        calls.append(tmp)
        return complete_build(tmp)

    first = cache.get_or_build("thing", INPUTS, build)
    second = cache.get_or_build("thing", dict(reversed(list(INPUTS.items()))), build)
    assert len(calls) == 1 and first.built_here and not second.built_here
    assert first.path == second.path == tmp_path / "thing" / content_key(INPUTS)
    assert second.manifest["inputs"] == INPUTS and second.manifest["files"] == ["part1.bin", "part2.bin"]
    assert cache.lookup("thing", INPUTS) is not None
    assert leftovers(tmp_path / "thing") == []


def test_build_exception_publishes_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def failing(tmp: Path) -> None:
        (tmp / "part1.bin").write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cache.get_or_build("thing", INPUTS, failing)
    assert cache.lookup("thing", INPUTS) is None
    assert not (tmp_path / "thing" / content_key(INPUTS)).exists()
    assert leftovers(tmp_path / "thing") == []
    assert cache.get_or_build("thing", INPUTS, complete_build).built_here


def test_sigkill_mid_build_leaves_no_entry_and_next_build_succeeds(tmp_path: Path) -> None:
    root, flag, counter = tmp_path / "cache", tmp_path / "half-written", tmp_path / "builds.txt"
    proc = child(root, "kill", flag, counter)
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
            assert time.monotonic() < deadline, "child never reached the middle of its build"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    cache = ArtifactCache(root)
    kind_dir = root / "thing"
    assert cache.lookup("thing", INPUTS) is None
    assert not (kind_dir / content_key(INPUTS)).exists()
    assert len(leftovers(kind_dir)) == 1  # the killed build's half-written temp dir

    # The dead child's lock is released by the kernel: this must not wait.
    entry = cache.get_or_build("thing", INPUTS, complete_build, lock_timeout=30)
    assert entry.built_here and (entry.path / "part2.bin").read_bytes() == b"second half"
    assert leftovers(kind_dir) == []


def test_two_processes_racing_build_exactly_once(tmp_path: Path) -> None:
    root, flag, counter = tmp_path / "cache", tmp_path / "go", tmp_path / "builds.txt"
    procs = [child(root, "race", flag, counter) for _ in range(2)]
    flag.write_text("go")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert len(counter.read_text().splitlines()) == 1
    assert sorted(r["built_here"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"]
    assert results[0]["sha256"] == results[1]["sha256"]
    on_disk = (Path(results[0]["path"]) / "part2.bin").read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == results[0]["sha256"]
    assert results[0]["builder"] == results[1]["builder"]
    # A real race: both were inside get_or_build before the winner's build finished.
    assert max(r["entered"] for r in results) < results[0]["finished"]
    assert leftovers(root / "thing") == []


def test_unreadable_manifest_is_a_cache_error_with_the_fix(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, complete_build)
    (entry.path / MANIFEST).write_text('{"kind": "thing", truncated')
    for call in (lambda: cache.lookup("thing", INPUTS), lambda: cache.get_or_build("thing", INPUTS, complete_build)):
        with pytest.raises(CacheError) as err:
            call()
        assert str(entry.path) in str(err.value) and "delete that directory and rerun" in str(err.value)


def test_uncreatable_cache_dir_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="--cache-dir"):
        ArtifactCache(blocker).get_or_build("thing", INPUTS, complete_build)


def test_entry_dir_without_manifest_is_rebuilt(tmp_path: Path) -> None:
    """Publishing renames a complete directory, so a directory without its manifest was damaged
    after publication (someone deleted the manifest): the cache rebuilds it from scratch."""
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, complete_build)
    (entry.path / MANIFEST).unlink()
    assert cache.lookup("thing", INPUTS) is None
    rebuilt = cache.get_or_build("thing", INPUTS, complete_build)
    assert rebuilt.built_here and rebuilt.path == entry.path and (rebuilt.path / MANIFEST).is_file()
    assert not cache.get_or_build("thing", INPUTS, complete_build).built_here
