"""The stage clock (harness.run.stages): innermost stage pays, threads nest on their own, the JSON
file; the workbench charges every stage of an accuracy run; a session writes stages.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tiny_workbench import tiny_workbench

from harness.run.stages import STAGES, StageClock, write_stages
from tests.waiting import HANG_S


def read_stages(path: Path) -> Any:
    """A ``stages.json`` as write_stages wrote it."""
    return json.loads(path.read_text())


class FakeTimer:
    """A clock that moves only when told: ``timer.now = 5``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_accumulates_seconds_and_calls() -> None:
    timer = FakeTimer()
    clock = StageClock(timer)
    with clock.stage("listing"):
        timer.now = 2.0
    timer.now = 5.0
    with clock.stage("listing"):
        timer.now = 6.5
    assert clock.totals() == {"listing": {"seconds": 3.5, "calls": 2}}
    assert clock.seconds("listing") == 3.5 and clock.calls("listing") == 2
    assert clock.seconds("never") == 0.0 and clock.calls("never") == 0


def test_nested_stages_charge_the_innermost_only() -> None:
    timer = FakeTimer()
    clock = StageClock(timer)
    with clock.stage("model"):  # 0..10, with preprocessing 2..7 inside it
        timer.now = 2.0
        with clock.stage("preprocessing"):
            timer.now = 7.0
        timer.now = 10.0
    totals = clock.totals()
    assert totals["model"] == {"seconds": 5.0, "calls": 1}
    assert totals["preprocessing"] == {"seconds": 5.0, "calls": 1}
    assert sum(t["seconds"] for t in totals.values()) == 10.0  # the wall, counted once


def test_two_levels_of_nesting_and_a_stage_inside_itself() -> None:
    timer = FakeTimer()
    clock = StageClock(timer)
    with clock.stage("a"):  # a 0..1, b 1..2, c 2..4, b 4..5, a 5..6; then a inside a
        timer.now = 1.0
        with clock.stage("b"):
            timer.now = 2.0
            with clock.stage("c"):
                timer.now = 4.0
            timer.now = 5.0
        timer.now = 6.0
        with clock.stage("a"):
            timer.now = 8.0
    assert clock.totals() == {"a": {"seconds": 4.0, "calls": 2}, "b": {"seconds": 2.0, "calls": 1},
                              "c": {"seconds": 2.0, "calls": 1}}


def test_a_stage_left_by_an_exception_is_charged_and_closed() -> None:
    timer = FakeTimer()
    clock = StageClock(timer)
    with pytest.raises(RuntimeError), clock.stage("compile"):
        timer.now = 3.0
        raise RuntimeError("compiler broke")
    with clock.stage("inference"):  # not nested in the failed stage: it does not pause it
        timer.now = 4.0
    assert clock.totals() == {"compile": {"seconds": 3.0, "calls": 1}, "inference": {"seconds": 1.0, "calls": 1}}


def test_threads_nest_on_their_own_stacks() -> None:
    """Thread A sits in ``x`` while thread B enters ``y`` and then ``z`` inside it: B's nesting
    must not pause A's stage (one shared stack would charge x's time to y or z)."""
    timer = FakeTimer()  # time moves only inside z: exact figures, whatever the machine's load
    clock = StageClock(timer)
    a_inside, b_done = threading.Event(), threading.Event()
    waited: list[bool] = []

    def thread_a() -> None:
        with clock.stage("x"):
            a_inside.set()
            waited.append(b_done.wait(HANG_S))

    def thread_b() -> None:
        waited.append(a_inside.wait(HANG_S))
        with clock.stage("y"), clock.stage("z"):
            timer.now += 0.3
        b_done.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_S)
    assert waited == [True, True]
    assert clock.seconds("x") == pytest.approx(0.3)
    assert clock.seconds("z") == pytest.approx(0.3)
    assert clock.seconds("y") == 0.0


def test_counts_and_seconds_are_exact_under_many_threads() -> None:
    timer = FakeTimer()  # frozen: every entry adds 0 s, so the calls alone are tested
    clock = StageClock(timer)
    per_thread, threads = 3000, 8

    def work() -> None:
        for _ in range(per_thread):
            with clock.stage("scoring"):
                pass

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert clock.calls("scoring") == per_thread * threads


def test_write_stages_is_json_written_atomically(tmp_path: Path) -> None:
    timer = FakeTimer()
    clock = StageClock(timer)
    with clock.stage("inference"):
        timer.now = 1.2345678901
    path = tmp_path / "report" / "stages.json"
    write_stages(path, clock, worker=None, session_seconds=3.0)
    doc = read_stages(path)
    assert doc == {"format": 1, "worker": None, "session_seconds": 3.0,
                   "stages": {"inference": {"seconds": 1.234568, "calls": 1}}}
    with clock.stage("reference"):
        timer.now = 2.0
    write_stages(path, clock)  # replaces the file whole
    assert set(json.loads(path.read_text())["stages"]) == {"inference", "reference"}
    assert [p.name for p in path.parent.iterdir()] == ["stages.json"]  # no temp file left behind


# -- the workbench --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("onnxruntime")
    bench, spec, chip = tiny_workbench(tmp_path_factory.mktemp("cache"))
    started = time.perf_counter()
    ev = bench.evaluate(spec, chip, 4, "embedded")
    wall = time.perf_counter() - started
    first = bench.clock.totals()
    bench.evaluate(spec, chip, 4, "embedded")  # a second test on the same session
    return {"bench": bench, "spec": spec, "ev": ev, "wall": wall, "first": first, "second": bench.clock.totals()}


def test_the_workbench_charges_every_stage_of_an_accuracy_run(evaluated: dict[str, Any]) -> None:
    first = evaluated["first"]
    assert set(first) == set(STAGES)
    assert all(first[s]["calls"] >= 1 and first[s]["seconds"] > 0 for s in STAGES), first
    # the innermost stage pays, so the stages never add up to more than the run's wall time
    assert sum(t["seconds"] for t in first.values()) <= evaluated["wall"] + 1e-3
    assert first["inference"]["calls"] == 1 and first["reference"]["calls"] == 1 and first["scoring"]["calls"] == 1


def test_memoized_steps_are_charged_once_per_session(evaluated: dict[str, Any]) -> None:
    first, second = evaluated["first"], evaluated["second"]
    for stage in ("listing", "preprocessing", "model"):  # built once per session: not charged again
        assert second[stage]["calls"] == first[stage]["calls"], stage
    for stage in ("inference", "reference", "scoring", "session"):  # every test runs them
        assert second[stage]["calls"] == first[stage]["calls"] + 1, stage


def test_a_torch_session_run_is_charged_to_the_reference(evaluated: dict[str, Any]) -> None:
    from harness.backends.torch_ref import TorchSession

    bench, spec, ev = evaluated["bench"], evaluated["spec"], evaluated["ev"]
    before = bench.clock.totals()
    loaded = bench.model(spec, calibration_source="embedded")
    torch_session = TorchSession(loaded.module, 4, spec.input_shape, spec.num_classes)
    logits = bench.infer_dataset(torch_session, ev.prepared, 4, "torch")
    after = bench.clock.totals()
    assert after["reference"]["calls"] == before["reference"]["calls"] + 1
    assert after["inference"]["calls"] == before["inference"]["calls"]
    assert logits.shape == ev.reference_logits.shape


# -- the session's file ---------------------------------------------------------------------

SESSION_TESTS = '''
def test_one(workbench):
    with workbench.clock.stage("listing"):
        pass

def test_two(workbench):
    with workbench.clock.stage("listing"):
        pass
'''


def _session(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_session_stages.py").write_text(SESSION_TESTS)
    env = {**os.environ, "MZC_PROGRESS": "0", "MZC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTEST_XDIST_WORKER", None)  # this test may itself run in an xdist worker
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_session_stages.py",
         f"--results={tmp_path / 'results.jsonl'}", "--report-dir=report", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_session_writes_stages_json_into_the_report_dir(tmp_path: Path) -> None:
    proc = _session(tmp_path, "-p", "no:xdist")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = read_stages(tmp_path / "report" / "stages.json")
    assert doc["stages"]["listing"]["calls"] == 2
    assert doc["worker"] is None and doc["exit_status"] == 0 and doc["pid"] != os.getpid()
    assert 0 <= doc["session_finish_seconds"] <= doc["session_seconds"]


def test_no_report_means_no_stage_file(tmp_path: Path) -> None:
    proc = _session(tmp_path, "-p", "no:xdist", "--no-report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "report" / "stages.json").exists()


def test_under_xdist_each_worker_writes_its_own_file(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    proc = _session(tmp_path, "-n", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "report").glob("stages*.json"))
    assert files and set(files) <= {"stages-gw0.json", "stages-gw1.json"}, files
    docs = [read_stages(tmp_path / "report" / name) for name in files]
    assert [d["worker"] for d in docs] == [name.removeprefix("stages-").removesuffix(".json") for name in files]
    assert sum(d["stages"]["listing"]["calls"] for d in docs) == 2
