"""Concurrency: several real processes sharing one cache build each artifact exactly once, all
read the same bytes, and no reader ever sees a half-built entry (pytest-xdist workers, parallel
nightly jobs on one machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.waiting import wait_for

from ._support import (
    CHILD_TIMEOUT_S,
    child_env,
    copy_real_images,
    finish,
    kill9,
    leftovers,
    spawn,
    start_together,
)

RACE_INPUTS = {"onnx_sha256": "cd" * 32, "target": {"chip": "cpu", "batch_size": 4}}
# Real processes racing: each test waits for events (ready, entered, waiting-on-the-lock files), never
# for a guessed time; scripts/hog-check.sh runs them under a CPU hog.
pytestmark = pytest.mark.timing


def test_three_builders_build_once_and_a_polling_reader_never_sees_a_partial_entry(tmp_path: Path) -> None:
    """Three processes race get_or_build on one key while a fourth polls lookup() every
    millisecond: the build function runs once (one line in the counter file), all three read the
    one builder's random payload, and every entry the reader ever got was complete."""
    root, go, stop, counter = tmp_path / "cache", tmp_path / "go", tmp_path / "stop", tmp_path / "builds.txt"
    common = {"root": str(root), "kind": "thing", "inputs": RACE_INPUTS}
    watcher = spawn("watch", {**common, "stop": str(stop)})
    # the build holds until all three are inside get_or_build (a race however slowly they started)
    builders = [spawn("build", {**common, "counter": str(counter), "go": str(go), "hold": 0.5, "racers": 3})
                for _ in range(3)]
    start_together(builders, go)
    results = [finish(p) for p in builders]
    stop.write_text("stop")
    watched = finish(watcher)

    assert len(counter.read_text().splitlines()) == 1
    assert sorted(r["built_here"] for r in results) == [False, False, True]
    assert len({r["sha256"] for r in results}) == 1 and len({r["path"] for r in results}) == 1
    assert len({r["builder"] for r in results}) == 1
    # A real race: every racer was inside get_or_build before the build finished.
    assert max(r["entered"] for r in results) < results[0]["finished"]
    assert watched["incomplete"] == 0 and watched["complete"] > 0 and watched["polls"] > watched["complete"]
    assert leftovers(root) == []


def test_a_builder_killed_while_others_wait_is_rebuilt_by_a_waiter(tmp_path: Path) -> None:
    """The process holding the lock dies mid-build (SIGKILL) while another waits on it: the
    kernel releases the lock, the waiter removes the half-written temp dir, builds the entry
    itself and reads its own complete bytes."""
    root, go, counter = tmp_path / "cache", tmp_path / "go", tmp_path / "builds.txt"
    waiting = tmp_path / "waiting-on-the-lock"
    common = {"root": str(root), "kind": "thing", "inputs": RACE_INPUTS, "counter": str(counter), "go": str(go)}
    doomed = spawn("build", {**common, "hold": 120.0})
    start_together([doomed], go)
    wait_for(lambda: doomed.poll() is not None or (counter.exists() and bool(counter.read_text().strip())),
             "the first builder started building")
    assert doomed.poll() is None, "the first builder ended"
    waiter = spawn("build", {**common, "hold": 0.1, "waiting": str(waiting)})
    # the event, however slowly a loaded machine starts the waiter: it found the lock held and waits on it
    wait_for(lambda: waiting.exists() or waiter.poll() is not None, "the waiter blocked on the builder's lock",
             timeout=CHILD_TIMEOUT_S)
    assert waiter.poll() is None and int(waiting.read_text()) == waiter.pid
    assert len(leftovers(root)) == 1
    kill9(doomed)
    result = finish(waiter)

    assert counter.read_text().splitlines() == [str(doomed.pid), str(result["builder"])]
    assert result["built_here"] and leftovers(root) == []


def test_two_processes_racing_prepare_dataset_on_real_images_build_once(val_1300: Path, tmp_path: Path) -> None:
    """Two runs (two preprocessing workers each) prepare the same 160 real JPEGs at the same
    time: one builds, the other waits and memory-maps the same entry; both read identical pixels."""
    images = copy_real_images(tmp_path / "images", 160)
    root, go = tmp_path / "cache", tmp_path / "go"
    args = {"root": str(root), "image_dir": str(images), "workers": 2, "resize": 256, "crop": 224, "go": str(go),
            "racers": 2}  # the build holds until both are inside: they overlap however slowly they started
    procs = [spawn("prepare", args) for _ in range(2)]
    start_together(procs, go)
    a, b = (finish(p) for p in procs)

    assert sorted([a["built_here"], b["built_here"]]) == [False, True]
    assert a["key"] == b["key"] and a["sha256"] == b["sha256"]
    assert max(a["entered"], b["entered"]) < min(a["left"], b["left"]), "the two runs did not overlap"
    assert len(list((root / "dataset").glob("*/manifest.json"))) == 1 and leftovers(root) == []


XDIST_TESTS = '''
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from harness.cache import ArtifactCache

ROOT, OUT = Path(os.environ["REL_CACHE"]), Path(os.environ["REL_OUT"])


def build(tmp: Path) -> None:
    with (OUT / "builds.txt").open("a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(0.5)
    (tmp / "blob.bin").write_bytes(os.urandom(4096))


@pytest.mark.parametrize("i", range(6))
def test_uses_the_shared_cache(i: int) -> None:
    entry = ArtifactCache(ROOT).get_or_build("shared", {"v": 1}, build)
    digest = hashlib.sha256((entry.path / "blob.bin").read_bytes()).hexdigest()
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "sha256": digest, "built_here": entry.built_here}
    (OUT / f"{i}.json").write_text(json.dumps(record))
'''


def test_pytest_xdist_workers_share_one_cache(tmp_path: Path) -> None:
    """A real ``pytest -n 2`` run of six tests that all need one cache entry: both workers run
    tests, the entry is built once, and every test read the same bytes."""
    pytest.importorskip("xdist", reason="pytest-xdist runs the harness under several workers: pip install pytest-xdist")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_shared_cache.py").write_text(textwrap.dedent(XDIST_TESTS))
    out = tmp_path / "out"
    out.mkdir()
    env = {**child_env(), "REL_CACHE": str(tmp_path / "cache"), "REL_OUT": str(out)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(project),
            str(project),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 passed" in proc.stdout
    records = [json.loads((out / f"{i}.json").read_text()) for i in range(6)]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert len((out / "builds.txt").read_text().splitlines()) == 1
    assert len({r["sha256"] for r in records}) == 1
    assert sum(r["built_here"] for r in records) == 1
