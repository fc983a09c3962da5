"""Hostile inputs around the results file, the output folders and the cache (issue 25): no record
lost, no traceback.

Real suite runs where they are cheap (the perf tests on figures measured elsewhere: ~4 s a run),
a real full disk (a 64 KiB tmpfs, root only), a real read-only file system (a read-only bind mount
in a private mount namespace, root only) and a real non-root process (``setpriv``) for the
permission cases; monkeypatched errors where nothing real is at hand. The reader is fuzzed with
Hypothesis: whatever bytes a results file holds, it gives records or warnings, and keeps the
record of every valid line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suite_runner import ROOT, run_suite

from harness.cache import ArtifactCache, CacheError
from harness.judge.baselines import BaselineError, Figure, load_baselines, read_measurements, save_baseline
from harness.model.checkpoint import WeightsError, locate_weights, verify_checksum
from harness.pytest.recorder import check_writable_dir, check_writable_file
from harness.records.results import ResultsError, load_results
from harness.records.schema import KINDS, record_from_json
from harness.specs import load_models

SEED_310P = ROOT / "fixtures" / "baselines" / "Ascend310P3.csv"
# Three perf tests on the seeds' 310P figures: no model is built, no image read.
PERF = ("acceptance", "-m", "perf", "--chip", "310P3", "--models", "resnext50_32x4d", "--measurements", str(SEED_310P))
SAMPLE = ROOT / "tests" / "data" / "results-v1-verdicts.jsonl"
EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "80"))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def _all_records(results: Any) -> list[Any]:
    return [r for run in results.runs for r in run.records] + [run.info for run in results.runs if run.info]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout + proc.stderr
    assert "INTERNALERROR" not in out and "Traceback" not in out, out[-3000:]


# --------------------------------------------------------------------------------------------
# A cut last line, then a real run appending


def test_a_cut_last_line_is_ended_before_the_next_run_appends_and_every_record_is_read(tmp_path: Path) -> None:
    """A killed run left half a line; the next run ends it, says so, and its own records are whole."""
    lines = SAMPLE.read_bytes().splitlines()
    cut = lines[-1][: len(lines[-1]) // 2]
    before = b"\n".join(lines[:-1]) + b"\n" + cut  # no newline: the kill came mid-write
    results = tmp_path / "results.jsonl"
    results.write_bytes(before)

    proc, cases = run_suite(tmp_path, *PERF)
    assert proc.returncode == 0, proc.stdout[-3000:]
    _no_traceback(proc)
    assert len(cases) == 3 and {c["outcome"] for c in cases.values()} == {"passed"}
    cut_line = len(lines)
    assert (f"warning: {results} ended in a cut line (line {cut_line}, from byte {len(before) - len(cut)}, "
            in " ".join(proc.stdout.split()))
    data = results.read_bytes()
    assert data.startswith(before + b"\n")  # nothing before it changed; the cut line ended alone
    new = data[len(before) + 1:].split(b"\n")
    assert new[-1] == b"" and len(new) == 5  # 3 test records and the run record, each a whole line
    for line in new[:-1]:
        record_from_json(json.loads(line))

    loaded = load_results(results)
    assert len(_all_records(loaded)) == len(lines) - 1 + 4  # every earlier record and every new one
    assert loaded.malformed_lines == 1
    assert any(w.startswith(f"{results}:{cut_line}: not JSON, a cut line") for w in loaded.warnings), loaded.warnings
    assert not any("glued" in w for w in loaded.warnings)


def test_a_record_glued_onto_a_cut_line_by_an_older_harness_is_read_back(tmp_path: Path) -> None:
    """Before issue 25 the next run's first record went onto the cut line and was lost with a warning."""
    lines = SAMPLE.read_bytes().splitlines()
    path = tmp_path / "old.jsonl"
    path.write_bytes(lines[0] + b"\n" + lines[1][:700] + lines[2] + b"\n" + b"\n".join(lines[3:]) + b"\n")
    loaded = load_results(path)
    expected = [record_from_json(json.loads(line)) for line in lines if line != lines[1]]
    assert sorted(map(repr, _all_records(loaded))) == sorted(map(repr, expected))
    assert f"{path}:2: a cut line (700 bytes, cut short by a killed run) with the next record glued onto its end: " \
           "the cut part is skipped, the record after it is read" in loaded.warnings


def test_an_unreadable_line_never_takes_the_next_one_with_it(tmp_path: Path) -> None:
    lines = SAMPLE.read_bytes().splitlines()
    path = tmp_path / "night.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                lines[0],
                b"\x00\xff\xfe garbage \r still garbage",
                lines[1],
                lines[2][:50] + b"\xe2\x82",
                lines[2],
                b"{" * 5000,
                lines[3],
            ]
        )
        + b"\n"
    )
    loaded = load_results(path)
    assert len(_all_records(loaded)) == 4 and loaded.malformed_lines == 3
    assert loaded.warnings[:3] == [
        f"{path}:2: not UTF-8 text (invalid start byte at byte 1)",
        f"{path}:4: not UTF-8 text, a cut line (it ends inside a character: the rest was never written by a "
        "killed run?)",
        f"{path}:6: JSON nested 5000 deep, more than the 64 levels any file of this suite has; refused before parsing",
    ]


def test_a_device_is_not_read_as_a_results_file() -> None:
    """/dev/full reads zeros forever: reading it as a results file would never end."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(ResultsError, match=r"/dev/full: not a regular file"):
        load_results("/dev/full")


# --------------------------------------------------------------------------------------------
# Writes that fail mid-session


def test_results_on_a_full_device_fail_each_test_with_the_file_and_the_error(tmp_path: Path) -> None:
    """/dev/full takes the open and refuses every write with ENOSPC, a real full-disk error."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    proc, cases = run_suite(tmp_path, *PERF, "--results", "/dev/full")
    assert proc.returncode == 1, proc.stdout[-3000:]
    _no_traceback(proc)
    assert len(cases) == 3 and {c["outcome"] for c in cases.values()} == {"failed"}
    text = " ".join(proc.stdout.split())
    for name in cases:
        assert (f"the result of acceptance/test_perf.py::{name} was not recorded: cannot append to the results file "
                "/dev/full (OSError: [Errno 28] No space left on device); earlier records are kept; free space on "
                "that disk or pass --results FILE on a disk with room") in text
    assert ("error: 3 test record(s) not written to /dev/full (OSError: [Errno 28] No space left on device): "
            "those tests failed") in text
    assert ("error: the run record (environment, outcomes) was not recorded: cannot append to the results file "
            "/dev/full (OSError: [Errno 28] No space left on device)") in text
    assert "no result recorded in /dev/full" in text and "3 failed" in text


FLAKY_PLUGIN = '''
"""Fails the second append of the results file with ENOSPC after half the line, as a filling disk does."""
import errno
import os

import harness.pytest.recorder as recorder

_real, _calls = recorder._write_all, []


def _flaky(fd, data):
    _calls.append(len(data))
    if len(_calls) == 2:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _real(fd, data)


recorder._write_all = _flaky
'''


def test_a_write_that_fails_mid_session_fails_that_test_keeps_the_others_and_tries_the_next(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "flaky_results.py").write_text(FLAKY_PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")])}
    proc, cases = run_suite(tmp_path, *PERF, "-p", "flaky_results", env=env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    _no_traceback(proc)
    outcomes = [c["outcome"] for c in cases.values()]
    assert outcomes == ["passed", "failed", "passed"], cases
    second = list(cases)[1]
    results = tmp_path / "results.jsonl"
    assert (f"the result of acceptance/test_perf.py::{second} was not recorded: cannot append to the results file "
            f"{results} (OSError: [Errno 28] No space left on device); the 1 record(s) this run wrote before are kept"
            in " ".join(proc.stdout.split()))
    assert f"warning: {results} ended in a cut line (line 2, from byte" in " ".join(proc.stdout.split())
    loaded = load_results(results)
    assert [r.meta.test.split("::")[-1] for r in loaded.runs[0].records] == [list(cases)[0], list(cases)[2]]
    assert loaded.runs[0].complete  # the run record was written after the failure
    assert loaded.malformed_lines == 1 and loaded.warnings[0].startswith(f"{results}:2: not JSON, a cut line")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted under tmp_path (root with CAP_SYS_ADMIN); unmounted after the test."""
    target = tmp_path / "disk"
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a small tmpfs; the /dev/full and injected-ENOSPC tests "
                    "cover the same code")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): needs CAP_SYS_ADMIN")
    yield target
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_disk_that_fills_up_mid_run_loses_no_record_and_the_next_run_ends_the_cut_line(small_disk: Path,
                                                                                          tmp_path: Path) -> None:
    """Real ENOSPC: one free page (4 KiB) takes the first records; the one that does not fit is
    half written (a real short write) and its test fails; freed, the next run ends that cut line."""
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096) == 4096:
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - 4096)  # one free page
    results = small_disk / "results.jsonl"
    first, cases = run_suite(tmp_path, *PERF, "--results", str(results), "--no-report")
    _no_traceback(first)
    assert first.returncode == 1, first.stdout[-3000:]
    written = [line for line in _lines(results)[:-1]]
    failed = [name for name, case in cases.items() if case["outcome"] == "failed"]
    assert written and failed, (len(written), cases)
    for line in written:  # every whole line is a record; the tests whose record is missing failed
        record_from_json(json.loads(line))
    recorded = {json.loads(line)["test"].split("::")[-1] for line in written}
    assert set(cases) - recorded == set(failed)
    text = " ".join(first.stdout.split())
    for name in failed:
        assert f"the result of acceptance/test_perf.py::{name} was not recorded: cannot append to the results " \
               f"file {results} (OSError: [Errno 28] No space left on device)" in text
    cut = _lines(results)[-1]
    assert cut, "the record that did not fit was half written: a cut last line"

    filler.unlink()
    second, cases = run_suite(tmp_path, *PERF, "--results", str(results), "--no-report")
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"warning: {results} ended in a cut line (line {len(written) + 1}, " in " ".join(second.stdout.split())
    loaded = load_results(results)
    assert len(_all_records(loaded)) == len(written) + 4
    assert loaded.warnings[0].startswith(f"{results}:{len(written) + 1}: not JSON, a cut line")


# --------------------------------------------------------------------------------------------
# Output paths refused at start-up (exit 4), probed without leaving anything behind


@pytest.mark.parametrize("case", ["results-is-a-directory", "results-under-a-file", "report-dir-under-a-file",
                                  "report-dir-is-a-file", "localize-dir-under-a-file", "baselines-dir-under-a-file"])
def test_an_unwritable_output_path_is_a_usage_error_at_start(case: str, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    option, value, expected = {
        "results-is-a-directory": ("--results", tmp_path, f"ERROR: --results {tmp_path}: is a directory; --results "
                                   f"expects a file, e.g. --results {tmp_path / 'results.jsonl'}"),
        "results-under-a-file": ("--results", a_file / "r.jsonl", f"ERROR: --results {a_file / 'r.jsonl'}: cannot be "
                                 f"created, {a_file} is a file, not a directory"),
        "report-dir-under-a-file": ("--report-dir", a_file / "rep", f"ERROR: --report-dir {a_file / 'rep'}: cannot be "
                                    f"created, {a_file} is a file, not a directory"),
        "report-dir-is-a-file": ("--report-dir", a_file, f"ERROR: --report-dir {a_file}: is a file, not a directory"),
        "localize-dir-under-a-file": ("--localize-dir", a_file / "loc", f"ERROR: --localize-dir {a_file / 'loc'}: "
                                      f"cannot be created, {a_file} is a file"),
        "baselines-dir-under-a-file": ("--baselines-dir", a_file / "b", f"ERROR: --baselines-dir {a_file / 'b'}: "
                                       f"cannot be created, {a_file} is a file"),
    }[case]
    # --save-baseline saves figures measured here: not with --measurements (refused before the probes)
    args = (*PERF[:-2], "--save-baseline") if option == "--baselines-dir" else PERF
    before = sorted(tmp_path.rglob("*"))
    proc, cases = run_suite(tmp_path, *args, option, str(value))
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not cases
    assert sorted(tmp_path.rglob("*")) == before  # no probe file, no results file, no report dir


def test_the_probes_leave_nothing_behind_and_accept_what_can_be_written(tmp_path: Path) -> None:
    check_writable_file(tmp_path / "new" / "deeper" / "results.jsonl")
    existing = tmp_path / "results.jsonl"
    existing.write_bytes(b'{"half a line')
    check_writable_file(existing)
    check_writable_dir(tmp_path / "reports", "--report-dir")
    check_writable_dir(tmp_path, "--report-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
    assert existing.read_bytes() == b'{"half a line'  # opened for append and closed: unchanged
    if Path("/dev/full").exists():
        check_writable_file(Path("/dev/full"))  # opens fine; its writes fail (the test above)


# --------------------------------------------------------------------------------------------
# Read-only places: a real read-only mount, a real non-root process, an injected EROFS


def _can_mount_read_only(tmp_path: Path) -> str | None:
    """Why a read-only bind mount in a private mount namespace is not possible here (None: it is)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "a read-only bind mount needs root (unshare -m, mount --bind -o ro)"
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && touch "$0/x"', str(probe)],
                          capture_output=True, text=True)
    if "Read-only file system" not in proc.stderr:
        return f"cannot make a read-only bind mount here ({proc.stderr.strip() or 'it was writable'})"
    return None


def _read_only(directory: Path, *command: str) -> list[str]:
    """``command`` run with ``directory`` bind-mounted read-only over itself (its own namespace)."""
    return ["unshare", "-m", "sh", "-c", 'd="$1"; shift; mount --bind -o ro "$d" "$d" && exec "$@"', "sh",
            str(directory), *command]


CACHE_CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from harness.cache import ArtifactCache, CacheError
    cache = ArtifactCache(Path(sys.argv[1]))
    out = {}
    for name in ("warm", "cold"):
        try:
            entry = cache.get_or_build("thing", {"name": name}, lambda tmp: (tmp / "f").write_text("built") and None)
            out[name] = (entry.path / "f").read_text()
        except CacheError as exc:
            out[name] = "CacheError: " + str(exc)
    print(json.dumps(out))
''')


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("exists", [False, True], ids=["new-file", "existing-file"])
def test_a_results_file_on_a_read_only_file_system_is_a_usage_error_at_start(exists: bool, tmp_path: Path) -> None:
    why = _can_mount_read_only(tmp_path)
    if why:
        pytest.skip(why)
    place = tmp_path / "ro"
    place.mkdir()
    results = place / "results.jsonl"
    if exists:
        results.write_bytes(SAMPLE.read_bytes())
    command = _read_only(place, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *PERF, "--results",
                         str(results), "--report-dir", str(tmp_path / "report"))
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MZC_CACHE_DIR": str(tmp_path / "cache"), "MZC_PROGRESS": "0"})
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    expected = (f"ERROR: --results {results}: cannot append to it (a read-only file system); pass --results FILE in a "
                "place you can write to") if exists else (
        f"ERROR: --results {results}: cannot be created, {place} is not writable (a read-only file system); pass "
        "--results FILE in a directory you can write to")
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (results.read_bytes() == SAMPLE.read_bytes()) if exists else not results.exists()


def test_a_read_only_cache_serves_what_it_holds_and_refuses_a_build_with_the_fix(tmp_path: Path) -> None:
    """A real read-only file system (EROFS from the lock file)."""
    why = _can_mount_read_only(tmp_path)
    if why:
        pytest.skip(why)
    root = tmp_path / "cache"
    ArtifactCache(root).get_or_build("thing", {"name": "warm"}, lambda tmp: (tmp / "f").write_text("built") and None)
    proc = subprocess.run(_read_only(root, sys.executable, "-c", CACHE_CHILD, str(root)), capture_output=True,
                          text=True, env=_child_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["warm"] == "built"  # a finished entry needs no write
    assert out["cold"].startswith(
        f"CacheError: cache directory {root / 'thing'} is not writable (it is on a read-only "
        "file system: [Errno 30] could not create its lock file for entry thing/"
    ), out["cold"]
    assert out["cold"].endswith("pass --cache-dir DIR (or set $MZC_CACHE_DIR) to a writable place: a read-only cache "
                                "can only serve entries that are already in it")


def test_a_suite_run_on_a_read_only_cache_fails_the_test_with_the_fix_and_no_traceback(tmp_path: Path) -> None:
    """A real run (the conversion test of one model) with --cache-dir on a read-only mount."""
    why = _can_mount_read_only(tmp_path)
    if why:
        pytest.skip(why)
    cache = tmp_path / "cache"
    cache.mkdir()
    results = tmp_path / "results.jsonl"
    command = _read_only(cache, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "acceptance", "-m",
                         "conversion", "--models", "efficientnet_lite0", "--cache-dir", str(cache), "--results",
                         str(results), "--report-dir", str(tmp_path / "report"))
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MZC_PROGRESS": "0"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    _no_traceback(proc)
    message = (f"CacheNotWritable: cache directory {cache}/synthetic is not writable (it is on a read-only file "
               "system: [Errno 30] could not create the directory for entry synthetic/")
    assert message in proc.stdout, proc.stdout[-3000:]
    record = json.loads(results.read_text().splitlines()[0])
    # a certification test that crashed reads ERROR first, on a line of at most 200 characters
    # (harness.judge.headline), then the whole message
    assert record["outcome"] == "failed" and record["reason"].startswith("ERROR CacheNotWritable: cache directory ")
    assert len(record["reason"].split("\n")[0]) <= 200 and message in record["reason"]
    assert record["reason"].endswith("pass --cache-dir DIR (or set $MZC_CACHE_DIR) to a writable place: a read-only "
                                     "cache can only serve entries that are already in it")


def test_a_cache_dir_without_write_permission_is_a_cache_error(tmp_path: Path) -> None:
    """chmod 0o555, read by a process that is not root (root writes through any mode: when the
    tests run as root the child drops to nobody with setpriv)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, where chmod 0o555 does not stop writes, and no setpriv to drop to nobody; "
                        "the read-only mount and the injected EROFS/EACCES tests cover the code")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    shared = Path(tempfile.mkdtemp(prefix="mzc-ro-cache-"))  # not under tmp_path: nobody cannot enter root's 0700
    try:
        os.chmod(shared, 0o755)
        root = shared / "cache"
        ArtifactCache(root).get_or_build(
            "thing", {"name": "warm"}, lambda tmp: (tmp / "f").write_text("built") and None
        )
        for path in (root, root / "thing"):
            os.chmod(path, 0o555)
        proc = subprocess.run([*prefix, sys.executable, "-c", CACHE_CHILD, str(root)], capture_output=True, text=True,
                              env=_child_env(), timeout=120, cwd="/")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["warm"] == "built"
        assert out["cold"].startswith(f"CacheError: cache directory {root / 'thing'} is not writable (permission "
                                      "denied: [Errno 13] could not create its lock file"), out["cold"]
        assert "pass --cache-dir DIR (or set $MZC_CACHE_DIR) to a writable place" in out["cold"]
    finally:
        for dirpath, dirs, _files in os.walk(shared):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(shared)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_lock_file_that_cannot_be_created_is_a_cache_error_naming_the_dir_and_the_fix(
        code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RefusedLock:
        def __init__(self, path: str, timeout: float) -> None:
            self.path = path

        def __enter__(self) -> None:
            raise OSError(code, os.strerror(code), self.path)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("harness.cache.FileLock", RefusedLock)
    with pytest.raises(CacheError) as caught:
        ArtifactCache(tmp_path / "cache").get_or_build("thing", {"v": 1}, lambda tmp: None)
    message = str(caught.value)
    assert message.startswith(f"cache directory {tmp_path / 'cache' / 'thing'} is not writable (")
    assert f"[Errno {code}] could not create its lock file for entry thing/" in message
    assert "pass --cache-dir DIR (or set $MZC_CACHE_DIR) to a writable place" in message


def test_a_cache_dir_under_a_file_is_a_cache_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match=r"cache directory .*/file/cache/thing is not writable \(a part of that path "
                                         r"is a file: .*could not create the directory .*pass --cache-dir DIR"):
        ArtifactCache(tmp_path / "file" / "cache").get_or_build("thing", {"v": 1}, lambda tmp: None)


def test_a_build_that_raises_its_own_oserror_is_not_blamed_on_the_cache_dir(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        (tmp_path / "missing-input").read_text()

    with pytest.raises(FileNotFoundError):
        ArtifactCache(tmp_path / "cache").get_or_build("thing", {"v": 1}, build)


# --------------------------------------------------------------------------------------------
# Baselines, measurements, weights: the suite's own errors with the path and the fix


def test_unreadable_baselines_and_measurements_are_baseline_errors(tmp_path: Path) -> None:
    (tmp_path / "Ascend310P3.csv").write_bytes(b"model,batch_size\n\xff\xfe\n")
    with pytest.raises(BaselineError, match=r"Ascend310P3.csv: not UTF-8 text .*--baselines-dir DIR"):
        load_baselines("Ascend310P3", tmp_path)
    with pytest.raises(BaselineError, match=r"Ascend310P3.csv: not UTF-8 text .*pass --measurements"):
        read_measurements(tmp_path / "Ascend310P3.csv", "Ascend310P3", ["resnext50_32x4d"])


def test_an_io_error_reading_a_baseline_is_a_baseline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "T4.csv").write_text("model\n")

    def failing(self: Path, *args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))

    monkeypatch.setattr(Path, "read_text", failing)
    with pytest.raises(BaselineError, match=r"T4.csv: cannot read it \(Input/output error\); fix its permissions"):
        load_baselines("T4", tmp_path)


def test_save_baseline_where_it_cannot_write_is_a_baseline_error_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figure = Figure(chip="T4", model="resnext50_32x4d", batch_size=8, images_per_s=100.0, unit="per_card",
                    clock="wall", source="here")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BaselineError, match=r"--save-baseline: cannot write .*/file/T4.csv .*pass --baselines-dir DIR"):
        save_baseline([figure], "T4", tmp_path / "file")

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("harness.judge.baselines.atomic_write_bytes", full)
    with pytest.raises(BaselineError, match=r"it is unchanged; free space there or pass --baselines-dir DIR"):
        save_baseline([figure], "T4", tmp_path / "baselines")


def test_weights_where_they_cannot_be_written_or_read_are_weights_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_models()["resnext50_32x4d"]  # a registry model with a download URL
    (tmp_path / "file").write_text("x")
    with pytest.raises(WeightsError, match=r"weights: cannot use .*/file/weights .*pass --weights-dir DIR"):
        locate_weights(spec, tmp_path / "file" / "weights")
    with pytest.raises(WeightsError, match=r"weights: cannot use .* \(Is a directory\); pass --weights-dir DIR"):
        verify_checksum(tmp_path, spec.weights)
    if not Path("/dev/full").exists():
        return

    class Response:  # a download whose bytes land on a full disk
        headers: dict[str, str] = {}

        def __init__(self) -> None:
            self.blocks = [b"x" * 1000]

        def read(self, size: int) -> bytes:
            return self.blocks.pop() if self.blocks else b""

        def __enter__(self) -> Response:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    weights_dir = tmp_path / "weights"

    def on_full_disk(prefix: str, suffix: str, dir: Path) -> tuple[int, str]:
        return os.open("/dev/full", os.O_WRONLY), str(weights_dir / f"{prefix}x{suffix}")

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response())
    monkeypatch.setattr("tempfile.mkstemp", on_full_disk)
    with pytest.raises(WeightsError, match=rf"weights: cannot use {weights_dir} \(No space left on device\)"):
        locate_weights(spec, weights_dir)
    assert list(weights_dir.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Any bytes as a results file


_VALID = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


@st.composite
def _results_file(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A results file of valid records (each run id unique), records cut short, garbage bytes
    (NULs, invalid UTF-8, brackets), JSON objects of a record kind with random fields; ended by a
    newline, CRLF, two newlines or nothing (the next piece glued on). Also the canonical JSON of
    each record a cut line had glued onto it (those must be read back too)."""
    pieces = draw(st.lists(st.one_of(
        st.tuples(st.just("record"), st.integers(0, len(_VALID) - 1)),
        st.tuples(st.just("cut"), st.integers(0, len(_VALID) - 1), st.floats(0.01, 0.99)),
        st.tuples(st.just("garbage"), st.binary(max_size=120) | st.sampled_from([b"\0" * 40, b"{" * 80, b"\xff\xfe",
                                                                                  b"[1, 2]", b'{"kind": "run"}'])),
        st.tuples(st.just("object"), st.sampled_from(KINDS), st.dictionaries(
            st.sampled_from(["model", "chip", "batch_size", "top1", "verdict", "outcome", "env_x", "gate_top1",
                             "schema_version", "started", "images_per_s", "extra"]),
            st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=12) | st.lists(st.integers(), max_size=3), max_size=6)),
    ), max_size=12))
    out, glued, line_kinds = b"", [], []
    for index, piece in enumerate(pieces):
        if piece[0] in ("record", "cut"):
            value = {**_VALID[piece[1]], "run_id": f"hyp-{index}"}
            data = json.dumps(value).encode()
            if piece[0] == "cut":
                data = data[: max(1, min(len(data) - 1, int(len(data) * piece[2])))]
        elif piece[0] == "object":
            data = json.dumps({**piece[2], "kind": piece[1], "run_id": f"hyp-{index}"}).encode()
        else:
            data = piece[1]
        end = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\n\n", b""]))
        line_kinds.append(piece[0])
        if line_kinds == ["cut", "record"] and end and b"\n" not in data:
            glued.append(json.dumps(record_from_json(value).to_json(), sort_keys=True))
        out += data + end
        if b"\n" in data + end:
            line_kinds = []
    return out, glued


def _expected(data: bytes, path: Path) -> list[str]:
    """The canonical record of every line that is one whole record on its own (one without a
    run id is grouped under the file's name, as the reader does)."""
    found = []
    for raw in data.split(b"\n"):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            value = json.loads(raw)
            if not value.get("run_id") and value.get("kind") in KINDS:
                value["run_id"] = f"(no run_id) {path}"
            found.append(json.dumps(record_from_json(value).to_json(), sort_keys=True))
        except Exception:  # not a record: the reader may skip it
            continue
    return found


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_results_file())
def test_any_bytes_as_a_results_file_give_records_or_warnings_and_keep_every_valid_line(
        case: tuple[bytes, list[str]]) -> None:
    data, glued = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.jsonl"
        path.write_bytes(data)
        expected = _expected(data, path) + glued
        try:
            loaded = load_results(path)
        except ResultsError as exc:  # a file without one record: said so, naming the file
            assert not expected and str(exc).startswith(f"{path}: holds no results records"), exc
            return
        got = {json.dumps(r.to_json(), sort_keys=True) for r in _all_records(loaded)}
        assert set(expected) <= got
        assert all(w.startswith(str(path)) or w.endswith("(the same line in several files)")
                   for w in loaded.warnings), loaded.warnings
