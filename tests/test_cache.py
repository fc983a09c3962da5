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

from harness import cache_verify
from harness.cache import (
    MANIFEST,
    ArtifactCache,
    CacheEntryRebuilt,
    CacheError,
    UnverifiedEntry,
    content_key,
)
from tests.reliability._support import start_together

REPO = Path(__file__).resolve().parents[1]
INPUTS = {"onnx_sha256": "ab" * 32, "target": {"chip": "310P3", "batch_size": 8}, "version": 3}

# A child process that uses the cache on its own: "kill" builds half an entry and then waits to
# be killed; "race" says it is ready (<flag>.<pid>.ready), waits for the start flag, says it is
# entering get_or_build (<flag>.<pid>.entered), and its build holds until both racers entered: two
# children in get_or_build together however slowly a loaded machine started them (no guessed sleep).
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
    deadline = time.monotonic() + 120
    while mode == "race" and len(list(flag.parent.glob(flag.name + ".*.entered"))) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("the other racer never entered")
        time.sleep(0.005)
    (tmp / "part2.bin").write_bytes(os.urandom(4096))
    return {"builder": os.getpid(), "finished": time.time()}

if mode == "race":
    Path(f"{flag}.{os.getpid()}.ready").touch()
    deadline = time.monotonic() + 120
    while not flag.exists():
        if time.monotonic() > deadline:
            raise SystemExit("start flag never appeared")
        time.sleep(0.005)
entered = time.time()
if mode == "race":
    Path(f"{flag}.{os.getpid()}.entered").touch()
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
    assert second.manifest["inputs"] == INPUTS and sorted(second.manifest["files"]) == ["part1.bin", "part2.bin"]
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


@pytest.mark.timing
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


@pytest.mark.timing
def test_two_processes_racing_build_exactly_once(tmp_path: Path) -> None:
    root, flag, counter = tmp_path / "cache", tmp_path / "go", tmp_path / "builds.txt"
    procs = [child(root, "race", flag, counter) for _ in range(2)]
    start_together(procs, flag)
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


def test_unreadable_manifest_is_refused_by_lookup_and_rebuilt_by_get_or_build(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, complete_build)
    (entry.path / MANIFEST).write_text('{"kind": "thing", truncated')
    with pytest.raises(CacheError) as err:
        cache.lookup("thing", INPUTS)
    assert str(entry.path) in str(err.value) and "unreadable manifest" in str(err.value)
    assert "delete that directory and rerun" in str(err.value)
    with pytest.warns(CacheEntryRebuilt, match="unreadable manifest"):
        rebuilt = cache.get_or_build("thing", INPUTS, complete_build)
    assert rebuilt.built_here and cache.lookup("thing", INPUTS) is not None


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
    with pytest.warns(CacheEntryRebuilt, match=f"{entry.path} has no manifest.json"):
        rebuilt = cache.get_or_build("thing", INPUTS, complete_build)
    assert rebuilt.built_here and rebuilt.path == entry.path and (rebuilt.path / MANIFEST).is_file()
    assert not cache.get_or_build("thing", INPUTS, complete_build).built_here


# --------------------------------------------------------------------------------------------
# Verification on read (issue 24): the cache does not trust what is on disk once written.


def build_with_logits(tmp: Path) -> dict[str, int]:
    """An entry shaped like a reference-logits entry, with a file in a sub-directory too."""
    import numpy as np

    np.save(tmp / "logits.npy", np.arange(40, dtype=np.float32).reshape(4, 10))
    (tmp / "engines").mkdir()
    (tmp / "engines" / "bs8.plan").write_bytes(b"engine bytes")
    return {"count": 4}


def edited_later(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` as an edit made after the build would: with a later mtime (an
    edit within the same clock tick as the build cannot be told apart by its stamp)."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def flipped(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    return bytes(data)


def test_the_manifest_records_every_file_with_its_sha256_and_size(tmp_path: Path) -> None:
    entry = ArtifactCache(tmp_path).get_or_build("thing", INPUTS, build_with_logits)
    files = entry.manifest["files"]
    assert sorted(files) == ["engines/bs8.plan", "logits.npy"]  # sub-directories count, POSIX paths
    for rel, meta in files.items():
        data = (entry.path / rel).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert entry.manifest["manifest_format"] == 2
    on_disk = json.loads((entry.path / MANIFEST).read_text())
    assert on_disk["manifest_sha256"] == content_key({k: v for k, v in on_disk.items() if k != "manifest_sha256"})


@pytest.mark.parametrize("rel", ["logits.npy", "engines/bs8.plan"])
def test_an_edited_small_file_is_refused_by_lookup_and_rebuilt_with_a_warning(tmp_path: Path, rel: str) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    original = (entry.path / rel).read_bytes()
    edited_later(entry.path / rel, flipped(entry.path / rel))  # same size, other content
    with pytest.raises(UnverifiedEntry) as err:
        cache.lookup("thing", INPUTS)
    message = str(err.value)
    assert isinstance(err.value, CacheError) and str(entry.path) in message
    assert f"{rel}'s content changed" in message and "delete that directory and rerun" in message
    with pytest.warns(CacheEntryRebuilt) as caught:
        rebuilt = cache.get_or_build("thing", INPUTS, build_with_logits)
    assert len(caught) == 1 and str(entry.path) in str(caught[0].message) and rel in str(caught[0].message)
    assert "removing it and building it again" in str(caught[0].message)
    assert rebuilt.built_here and (rebuilt.path / rel).read_bytes() == original
    assert not [p for p in (tmp_path / "thing").iterdir() if p.name.startswith((".tmp-", ".bad-"))]
    assert not cache.get_or_build("thing", INPUTS, build_with_logits).built_here


def test_a_truncated_logits_file_is_rebuilt_or_a_cache_error_never_a_numpy_error(tmp_path: Path) -> None:
    import numpy as np

    cache = ArtifactCache(tmp_path)
    logits = cache.get_or_build("thing", INPUTS, build_with_logits).path / "logits.npy"
    logits.write_bytes(logits.read_bytes()[:-7])
    with pytest.raises(CacheError, match=r"logits\.npy is \d+ bytes, its manifest says \d+ \(truncated"):
        cache.lookup("thing", INPUTS)
    with pytest.warns(CacheEntryRebuilt, match=r"logits\.npy is \d+ bytes"):
        entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    assert entry.built_here
    np.testing.assert_array_equal(np.load(entry.path / "logits.npy"), np.arange(40, dtype=np.float32).reshape(4, 10))


def test_a_deleted_file_is_refused_and_rebuilt(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    (entry.path / "engines" / "bs8.plan").unlink()
    with pytest.raises(CacheError, match=r"engines/bs8\.plan is missing"):
        cache.lookup("thing", INPUTS)
    with pytest.warns(CacheEntryRebuilt, match="is missing"):
        assert cache.get_or_build("thing", INPUTS, build_with_logits).built_here


def test_a_large_file_is_checked_by_size_always_and_by_content_only_with_verify_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files over the threshold (the dataset's pixel file in a real run) are checked by size on
    every read; an edit that keeps the size is found only by --verify-cache (verify_all)."""
    monkeypatch.setattr(cache_verify, "FULL_HASH_BYTES", 100)  # logits.npy (288 bytes) is "large"
    cache, full = ArtifactCache(tmp_path), ArtifactCache(tmp_path, verify_all=True)
    entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    logits = entry.path / "logits.npy"
    original = logits.read_bytes()
    edited_later(logits, flipped(logits))
    assert cache.lookup("thing", INPUTS) is not None  # the documented limit of a default read
    with pytest.raises(CacheError, match=r"logits\.npy's content changed"):
        full.lookup("thing", INPUTS)
    with pytest.warns(CacheEntryRebuilt, match=r"logits\.npy's content changed"):
        assert full.get_or_build("thing", INPUTS, build_with_logits).built_here
    assert logits.read_bytes() == original
    edited_later(logits, original + b"\0")  # a changed size is caught without verify_all
    with pytest.raises(CacheError, match=r"logits\.npy is \d+ bytes"):
        cache.lookup("thing", INPUTS)
    with pytest.warns(CacheEntryRebuilt, match=r"logits\.npy is \d+ bytes"):
        assert cache.get_or_build("thing", INPUTS, build_with_logits).built_here


def test_an_old_format_manifest_is_rebuilt_with_a_warning_naming_the_older_harness(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, complete_build)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    old = {k: v for k, v in manifest.items() if k not in ("manifest_format", "manifest_sha256")}
    (entry.path / MANIFEST).write_text(json.dumps({**old, "files": sorted(old["files"])}))  # as the old cache wrote it
    with pytest.raises(CacheError, match="made by an older harness .*no file checksums.*delete that directory"):
        cache.lookup("thing", INPUTS)
    with pytest.warns(CacheEntryRebuilt, match=f"{entry.path} cannot be verified: it was made by an older harness"):
        rebuilt = cache.get_or_build("thing", INPUTS, complete_build)
    assert rebuilt.built_here and rebuilt.manifest["manifest_format"] == 2


def reseal(path: Path, **changes: object) -> None:
    """Change manifest fields and recompute its own checksum (a deliberate, careful edit)."""
    manifest = {k: v for k, v in json.loads(path.read_text()).items() if k != "manifest_sha256"}
    manifest.update(changes)
    path.write_text(json.dumps({**manifest, "manifest_sha256": content_key(manifest)}))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda m: reseal(m, inputs={**INPUTS, "version": 4}), "the inputs in its manifest do not hash to its key"),
        (lambda m: reseal(m, key="0" * 64), "its manifest names entry 'thing'/'000"),
        (lambda m: reseal(m, kind="other"), "its manifest names entry 'other'"),
        (lambda m: m.write_text(m.read_text().replace('"count": 4', '"count": 5')), "its manifest was edited after"),
        (lambda m: reseal(m, files={"../../x": {"sha256": "0" * 64, "size": 1}}), "a file outside the entry"),
        (lambda m: reseal(m, files={"logits.npy": {"size": 1}}), "record of logits.npy is malformed"),
    ],
    ids=["inputs-not-the-key", "other-key", "other-kind", "edited-field", "path-outside", "no-sha256"],
)
def test_a_manifest_that_does_not_match_its_entry_is_refused_and_rebuilt(tmp_path: Path, edit, problem: str) -> None:
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    edit(entry.path / MANIFEST)
    with pytest.raises(CacheError) as err:
        cache.lookup("thing", INPUTS)
    assert str(entry.path) in str(err.value) and problem in str(err.value)
    with pytest.warns(CacheEntryRebuilt, match="failed verification"):
        assert cache.get_or_build("thing", INPUTS, build_with_logits).built_here
    assert cache.lookup("thing", INPUTS) is not None


def test_a_copied_entry_is_refused_in_the_directory_it_was_copied_to(tmp_path: Path) -> None:
    import shutil

    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, complete_build)
    other = {**INPUTS, "version": 4}
    shutil.copytree(entry.path, cache.entry_dir("thing", content_key(other)))
    with pytest.raises(CacheError, match="not the directory it is in"):
        cache.lookup("thing", other)


def test_a_second_read_in_the_same_process_does_not_hash_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = cache_verify.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(cache_verify, "sha256_file", counting)
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_build("thing", INPUTS, build_with_logits)
    assert sorted(hashed) == ["bs8.plan", "logits.npy"]  # once each, to write the manifest
    cache.lookup("thing", INPUTS)
    assert len(hashed) == 2  # the build's hashes serve the first read too
    cache_verify.forget_hashes()  # as a new process starts
    for _ in range(3):
        assert ArtifactCache(tmp_path).lookup("thing", INPUTS) is not None
        assert not cache.get_or_build("thing", INPUTS, build_with_logits).built_here
    assert len(hashed) == 4  # each file hashed once more, not on every read
    edited_later(entry.path / "logits.npy", (entry.path / "logits.npy").read_bytes())  # same bytes, new mtime
    assert cache.lookup("thing", INPUTS) is not None
    assert hashed[4:] == ["logits.npy"]  # a new version of one file: that file hashed again


def test_entries_lists_verified_entries_and_refuses_the_bad_ones(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    made = [cache.get_or_build("thing", {**INPUTS, "version": v}, complete_build) for v in range(3)]
    (tmp_path / "thing" / ".tmp-abc-host-1").mkdir()  # a build in progress: not an entry
    assert [e.path for e in cache.entries("thing")] == sorted(e.path for e in made)
    assert all(not e.built_here for e in cache.entries("thing")) and cache.entries("nothing") == []
    bad = made[1].path
    (bad / "part2.bin").write_bytes(b"other length")
    with pytest.raises(CacheError) as err:
        cache.entries("thing")
    assert str(bad) in str(err.value) and "part2.bin is 12 bytes" in str(err.value)
    refused: list[UnverifiedEntry] = []
    good = cache.entries("thing", refused=refused)
    assert sorted(e.path for e in good) == sorted(e.path for e in made if e.path != bad)
    assert [r.path for r in refused] == [bad] and not refused[0].older


def test_a_build_may_not_replace_the_fields_the_cache_writes(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def sneaky(tmp: Path) -> dict[str, object]:
        complete_build(tmp)
        return {"files": ["part1.bin"]}

    with pytest.raises(ValueError, match="fields the cache writes itself: \\['files'\\]"):
        cache.get_or_build("thing", INPUTS, sneaky)
    assert cache.lookup("thing", INPUTS) is None and leftovers(tmp_path / "thing") == []


def test_an_unverified_entry_error_survives_pickling(tmp_path: Path) -> None:
    import pickle

    error = UnverifiedEntry(tmp_path / "thing" / "k", "it was made by an older harness", older=True)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is UnverifiedEntry and str(again) == str(error) and again.older and again.path == error.path


def test_the_verify_cache_option_reaches_the_workbench_cache(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    """--verify-cache is declared by the plugin, read into RunConfig by the run_config fixture and
    given to the workbench's ArtifactCache."""
    from harness.pytest import fixtures
    from harness.pytest.state import STATE, session_state
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_policy

    assert pytestconfig.getoption("--verify-cache") is False  # declared, off by default
    given = {"--verify-cache": True, "--cache-dir": tmp_path}

    class Config:
        stash = {STATE: session_state(pytestconfig)}

        @staticmethod
        def getoption(name: str) -> object:
            return given.get(name, pytestconfig.getoption(name))

    cfg = fixtures.run_config.__wrapped__(Config())
    assert cfg.verify_cache is True and cfg.cache_dir == tmp_path.resolve()
    assert Workbench(cfg=cfg, policy=load_policy()).cache.verify_all is True
    assert Workbench(cfg=RunConfig(cache_dir=tmp_path), policy=load_policy()).cache.verify_all is False
