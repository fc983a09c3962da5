"""Interruption: a certification run killed with SIGKILL (a CI timeout, the OOM killer, a closed
session) at any stage leaves a cache the next run can trust.

Every test here really kills a separate process at a known point (tests/reliability/_child.py's
stall hooks), then looks at the cache from outside and runs again: finished entries are reused,
the interrupted one is rebuilt, no half-written entry is ever read, and the products are
byte-identical to a clean run's.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cache import ArtifactCache, CacheEntryRebuilt, CacheError
from harness.data import list_dataset, prepare_dataset
from harness.specs import PreprocessSpec

from . import _child
from ._support import (
    descendants,
    kill9,
    leftovers,
    published,
    running,
    spawn,
    wait_for_flag,
)

# Pipeline order: which cached kinds exist before each stall point.
ORDER = ("preprocess", "export", "compile", "infer", "reference")
KIND_OF = _child.STAGE_KIND
ORPHAN_TIMEOUT_S = 60.0  # only bounds a hang: the test goes on as soon as they are gone
# Children killed at stall points they announce (flag files); scripts/hog-check.sh runs these under a CPU hog.
pytestmark = pytest.mark.timing


@pytest.fixture(scope="module")
def clean_run(real_images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The pipeline run once, uninterrupted, in a cache of its own: the bytes to reproduce."""
    return _child.run_pipeline(tmp_path_factory.mktemp("clean") / "cache", real_images, workers=1)


def _expected_built(stage: str) -> dict[str, bool]:
    """After a kill at ``stage``: kinds of earlier stages are reused, the rest built."""
    position = ORDER.index(stage)
    return {
        kind: ORDER.index(at) >= position
        for at, kind in KIND_OF.items()
        if kind is not None
    }


@pytest.mark.parametrize("stage", ORDER)
def test_sigkill_at_each_stage_then_the_rerun_reuses_what_finished_and_rebuilds_the_rest(
    stage: str, real_images: Path, clean_run: dict[str, Any], tmp_path: Path
) -> None:
    """Kill the run mid-stage; the cache then holds every earlier stage's entry and only a temp
    dir for the interrupted one, which no reader accepts. The rerun reuses the earlier entries
    (built_here False), rebuilds the rest, and every product equals the clean run's bytes."""
    root, flag = tmp_path / "cache", tmp_path / "stalled"
    proc = spawn("pipeline", {"root": str(root), "image_dir": str(real_images), "workers": 1}, stall=stage, flag=flag)
    wait_for_flag(proc, flag)
    kill9(proc)

    position = ORDER.index(stage)
    for at, kind in KIND_OF.items():
        if kind is None:
            continue
        expected = 1 if ORDER.index(at) < position else 0
        assert len(published(root, kind)) == expected, (kind, published(root, kind))
    interrupted = KIND_OF[stage]
    if interrupted is None:  # ONNX Runtime inference is not cached: nothing half-done on disk
        assert leftovers(root) == []
    else:
        assert [p.split("/")[0] for p in leftovers(root)] == [interrupted]

    rerun = _child.run_pipeline(root, real_images, workers=1)
    assert rerun["built"] == _expected_built(stage)
    assert rerun["sha256"] == clean_run["sha256"]
    assert leftovers(root) == []


def test_sigkill_during_parallel_preprocessing_leaves_no_orphan_workers(
    real_images: Path, tmp_path: Path
) -> None:
    """SIGKILL the parent while two pool workers are mid-chunk: the workers, the forkserver and
    the resource tracker all exit within seconds instead of living on re-parented (they used to:
    each killed run leaked its pool, holding the run's stdout open). The half-built entry is not
    published, and a rerun with two workers produces the same bytes as a clean one-worker build."""
    root, flag = tmp_path / "cache", tmp_path / "stalled"
    args = {"root": str(root), "image_dir": str(real_images), "workers": 2, "resize": 256, "crop": 224}
    proc = spawn("prepare", args, stall="preprocess", flag=flag)
    wait_for_flag(proc, flag)
    below = descendants(proc.pid)
    assert int(flag.read_text()) in below, "the stall must be inside a pool worker"
    assert len(below) >= 3, f"expected a forkserver and two workers below the run, found {below}"
    kill9(proc)

    deadline = time.monotonic() + ORPHAN_TIMEOUT_S
    while running(below) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = running(below)
    for pid in orphans:  # ours (the killed child's own processes): do not leak them on failure
        os.kill(pid, signal.SIGKILL)
    assert orphans == set(), f"processes of the killed run still alive after {ORPHAN_TIMEOUT_S:.0f} s"
    assert published(root, "dataset") == [] and len(leftovers(root)) == 1

    spec = PreprocessSpec(resize=256, crop=224)
    again = prepare_dataset(list_dataset(real_images), spec, ArtifactCache(root), workers=2)
    clean = prepare_dataset(list_dataset(real_images), spec, ArtifactCache(tmp_path / "clean"), workers=1)
    assert again.key == clean.key
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(clean.images))
    assert leftovers(root) == []


def test_a_worker_killed_mid_chunk_fails_the_run_with_a_data_error_and_publishes_nothing(
    real_images: Path, tmp_path: Path
) -> None:
    """The OOM killer takes one pool worker: the run stops with the DataError that names the
    likely causes (not a hang, not a partial dataset), and leaves no temp dir behind."""
    root, flag = tmp_path / "cache", tmp_path / "stalled"
    args = {"root": str(root), "image_dir": str(real_images), "workers": 2, "resize": 256, "crop": 224}
    proc = spawn("prepare", args, stall="preprocess", flag=flag)
    wait_for_flag(proc, flag)
    os.kill(int(flag.read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "DataError: a preprocessing worker process died" in err and "out of memory" in err
    assert published(root, "dataset") == [] and leftovers(root) == []


def test_a_dataset_entry_truncated_after_publication_is_rebuilt_not_misread(real_images: Path, tmp_path: Path) -> None:
    """If a published pixel file is cut short later (disk error, a copy interrupted by hand), the
    next run finds it by its size (every read checks it against the manifest), warns and builds
    it again, instead of memory-mapping garbage or crashing in numpy; a reader without a build
    function refuses it with the fix."""
    spec = PreprocessSpec(resize=36, crop=32)
    cache = ArtifactCache(tmp_path / "cache")
    prepared = prepare_dataset(list_dataset(real_images), spec, cache, workers=1)
    pixels, first = prepared.path / "images.u8", np.array(prepared.images)
    del prepared
    pixels.write_bytes(pixels.read_bytes()[:-100])
    with pytest.raises(CacheError) as err:
        cache.entries("dataset")
    assert str(pixels.parent) in str(err.value) and "images.u8 is" in str(err.value)
    assert "delete that directory and rerun" in str(err.value)
    with pytest.warns(CacheEntryRebuilt, match=f"{pixels.parent} failed verification: images.u8 is"):
        again = prepare_dataset(list_dataset(real_images), spec, cache, workers=1)
    np.testing.assert_array_equal(np.asarray(again.images), first)
