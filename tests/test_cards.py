"""A whole card measured concurrently (harness.run.cards), through a double for the devices.

There is no Ascend card here: tests/doubles/fake_card.py stands in for its devices (sleeping
sessions, one slower than the other, deterministic logits, ais_bench-like compute times, and
devices that fail to open, fail mid-loop, die or hang). The window rule is checked on made-up
run spans; the orchestration with real processes; one case runs ONNX Runtime on two "devices" of
the CPU (the CPU provider takes any device id). No figure here is a claim about any hardware.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.run.cards import (
    CardError,
    CardNotReady,
    CardUsageError,
    DeviceRun,
    NotConcurrent,
    SessionOpener,
    card_measurement,
    measure_card,
)
from harness.run.timing import DEVICE_COMPUTE, WALL, Measurement
from harness.specs import OFFLINE, SINGLE_STREAM, CompileTarget, TimingPolicy
from tests.doubles.fake_card import (
    COMPUTE_FRACTION,
    FakeCard,
    FakeDevice,
    fake_batches,
    fake_logits,
)

FAST = TimingPolicy(warmup_runs=1, min_runs=5, min_seconds=0.3, max_seconds=2)
MS = 1_000_000  # ns
# No outcome here may depend on how fast a loaded machine spawns or schedules a process: tests wait
# for events (the double's files, the card's messages), and a bound on elapsed time is a hang
# detector, far below what the behaviour under test would take if it were broken (a policy of
# LONG_S seconds stopped "at once" must stop well within HANG_S of the event that stops it).
LONG_S = 300.0
HANG_S = 60.0
# Devices released by one barrier start within this of each other; without the barrier the later
# device would start OPEN_DELAY_S later (far more than a loaded machine's scheduling delay).
START_SPREAD_MS = 500.0
OPEN_DELAY_S = 2.0

pytestmark = [pytest.mark.timing, pytest.mark.serial]


def run(
    device_id: int, spans_ms: list[tuple[float, float]], bs: int = 2, device_ms: list[float] | None = None
) -> DeviceRun:
    m = Measurement(batch_size=bs, runs=len(spans_ms), warmup_runs=0, seconds=1.0, images_per_s=1.0, clock=WALL,
                    wall_images_per_s=1.0, device_images_per_s=None, latency_ms_mean=None, latency_ms_median=None,
                    latency_ms_p90=None, latency_ms_p99=None, latency_cv_percent=None)
    return DeviceRun(
        device_id=device_id,
        measurement=m,
        run_spans_ns=tuple((int(s * MS), int(e * MS)) for s, e in spans_ms),
        device_ms=None if device_ms is None else tuple(device_ms),
        outputs=(),
    )


# -- the window rule, on made-up spans ---------------------------------------------------------------


def test_window_counts_inner_runs_whole_and_edge_runs_pro_rata() -> None:
    runs = {0: run(0, [(0, 10), (10, 20), (20, 30)]), 1: run(1, [(5, 17), (17, 29), (29, 41)])}
    card = card_measurement(runs)
    assert (card.window_start_ns, card.window_end_ns) == (5 * MS, 30 * MS)
    # device 0: half of its first run is before the window; device 1: 1 ms of its 12 ms last run is inside
    assert card.images_in_window[0] == pytest.approx(2 * 2.5)
    assert card.images_in_window[1] == pytest.approx(2 * (2 + 1 / 12))
    assert card.wall_images_per_s == pytest.approx((5 + 2 * (2 + 1 / 12)) / 0.025)
    assert card.clock == WALL and card.device_images_per_s is None
    assert card.images_per_s == card.wall_images_per_s
    assert card.start_spread_ms == pytest.approx(5.0)


def test_device_figure_sums_each_devices_compute_clock_in_the_window() -> None:
    runs = {0: run(0, [(0, 10), (10, 20), (20, 30)], device_ms=[100.0, 8.0, 8.0]),
            1: run(1, [(5, 17), (17, 29), (29, 41)], device_ms=[10.0, 10.0, 1000.0])}
    card = card_measurement(runs)
    mean0 = (0.5 * 100 + 8 + 8) / 2.5  # the run half inside the window weighs half
    mean1 = (10 + 10 + 1000 / 12) / (2 + 1 / 12)
    assert card.device_images_per_s == pytest.approx(1000 * 2 / mean0 + 1000 * 2 / mean1)
    assert card.clock == DEVICE_COMPUTE and card.images_per_s == card.device_images_per_s
    runs[1] = run(1, [(5, 17), (17, 29), (29, 41)])  # one device without a device clock: none for the card
    assert card_measurement(runs).device_images_per_s is None


def test_devices_that_did_not_overlap_give_no_figure() -> None:
    with pytest.raises(NotConcurrent, match="did not run concurrently: their timed runs have no common window"):
        card_measurement({0: run(0, [(0, 10), (10, 20)]), 1: run(1, [(25, 35), (35, 45)])})
    # overlapping for 4 ms of the shortest device's 20 ms: not concurrent either
    with pytest.raises(NotConcurrent, match=r"overlapped for 0\.004 s, less than 0\.5 of the shortest"):
        card_measurement({0: run(0, [(0, 10), (10, 20)]), 1: run(1, [(16, 26), (26, 36)])})
    # just above the rule: a figure
    assert card_measurement({0: run(0, [(0, 10), (10, 20)]), 1: run(1, [(9, 19), (19, 29)])}).window_s == pytest.approx(
        0.011
    )


def test_devices_must_run_one_batch_size() -> None:
    with pytest.raises(CardError, match=r"batch sizes \[2, 4\]"):
        card_measurement({0: run(0, [(0, 10)], bs=2), 1: run(1, [(0, 10)], bs=4)})


# -- the orchestration, with processes ---------------------------------------------------------------


def _exists(pid: int) -> bool:
    """Alive or a zombie (not reaped): either is a process left behind."""
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return bool(psutil.pid_exists(pid))


def assert_no_processes_left(pid_dir: Path, opened: int) -> None:
    """No device process is alive or unreaped; at least ``opened`` of them had opened their device."""
    pids = [int(p.read_text()) for p in sorted(pid_dir.glob("device-*.pid"))]
    assert len(pids) >= opened, f"{len(pids)} device processes opened, expected {opened}"
    assert multiprocessing.active_children() == []
    assert [pid for pid in pids if _exists(pid)] == []


def test_devices_start_together_and_the_card_adds_them_up(tmp_path: Path) -> None:
    # device 1 is 3x slower and loads 2 s longer: without the barrier it would start 2 s late
    devices = {0: FakeDevice(ms_per_batch=20.0), 1: FakeDevice(ms_per_batch=60.0, open_delay_s=OPEN_DELAY_S)}
    batches = fake_batches(3, 2)
    card = measure_card(FakeCard(devices, batch_size=2, pid_dir=str(tmp_path)), [0, 1], batches, FAST)
    assert_no_processes_left(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("*.atexit")) == ["device-0.atexit", "device-1.atexit"], \
        "a device's process ended without running its atexit handlers (ais_bench finalizes ACL in one; a spawned " \
        "child runs them when it returns normally, a forked one or one ended by os._exit does not)"

    runs = card.devices
    assert all(r.released_ns >= max(o.ready_ns for o in runs.values()) for r in runs.values()), (
        "released before all arrived"
    )
    released = [r.released_ns for r in runs.values()]
    assert (max(released) - min(released)) / 1e6 < START_SPREAD_MS, "the barrier released the devices far apart"
    assert card.start_spread_ms < START_SPREAD_MS, f"steady states started {card.start_spread_ms:.1f} ms apart"

    rates = card.per_device_images_per_s
    # 3x nominally; a loaded host adds its scheduling delay to both sleeps, which only brings it down
    assert 1.5 < rates[0] / rates[1] < 3.3, f"device 1 sleeps 3x longer per batch, yet the rates are {rates}"
    # each device's own figure over its whole loop agrees with its share of the window
    own = sum(r.measurement.wall_images_per_s for r in runs.values())
    assert card.wall_images_per_s == pytest.approx(own, rel=0.15)
    nominal = 2 / 0.020 + 2 / 0.060  # the sleeps alone; a loaded host only adds to them (a lower figure)
    assert 0.25 * nominal < card.wall_images_per_s < 1.02 * nominal
    # the device clock: ais_bench's 1000 x batch / compute ms, summed over the devices
    assert card.clock == DEVICE_COMPUTE
    assert card.device_images_per_s == pytest.approx(2000 / (20 * COMPUTE_FRACTION) + 2000 / (60 * COMPUTE_FRACTION))
    # the computed check's inputs: every device's first pass, batch by batch
    for d, outputs in card.per_device_outputs.items():
        assert len(outputs) == len(batches), d
        for out, batch in zip(outputs, batches, strict=True):
            np.testing.assert_array_equal(out, fake_logits(batch))


def test_offline_scenario_without_a_device_clock(tmp_path: Path) -> None:
    card = measure_card(FakeCard(device_clock=False, pid_dir=str(tmp_path)), [0, 1], fake_batches(2, 2), FAST,
                        scenario=OFFLINE)
    assert_no_processes_left(tmp_path, 2)
    assert {m.scenario for m in card.measurements.values()} == {OFFLINE}
    assert card.scenario == OFFLINE and card.clock == WALL and card.device_images_per_s is None
    assert card.images_per_s == card.wall_images_per_s > 0


@pytest.mark.parametrize(("failure", "error", "message"), [
    ("crash", CardError, r"device 1: RuntimeError: fake device 1: the model could not be loaded"),
    ("busy", CardNotReady, r"device 1: DeviceBusy: fake device 1 is busy"),
    ("exit", CardError, r"device 1's process ended \(exit code 3\) without a result"),
])
def test_a_device_that_fails_to_open_names_itself(tmp_path: Path, failure: str, error: type, message: str) -> None:
    # device 1 fails only once device 0 has opened (and so is on its way to the barrier)
    devices = {0: FakeDevice(), 1: FakeDevice(fail_on_open=failure, wait_for_opened=(0,))}
    start = time.monotonic()
    with pytest.raises(error, match=message):
        measure_card(
            FakeCard(devices, pid_dir=str(tmp_path)), [0, 1], fake_batches(2, 2), FAST, barrier_timeout_s=LONG_S
        )
    assert time.monotonic() - start < HANG_S, "the run waited for the barrier instead of failing at once"
    assert_no_processes_left(tmp_path, 2)


def test_a_device_that_fails_mid_loop_stops_the_others(tmp_path: Path) -> None:
    slow_policy = TimingPolicy(
        warmup_runs=1, min_runs=5, min_seconds=LONG_S, max_seconds=LONG_S
    )  # device 1 would run 300 s
    devices = {0: FakeDevice(fail_after_runs=4), 1: FakeDevice()}
    start = time.monotonic()
    with pytest.raises(
        CardError, match="device 0: RuntimeError: fake device 0: the device stopped answering after 4 runs"
    ):
        measure_card(FakeCard(devices, pid_dir=str(tmp_path)), [0, 1], fake_batches(2, 2), slow_policy)
    assert time.monotonic() - start < HANG_S, "the others ran on instead of being stopped"
    assert_no_processes_left(tmp_path, 2)


def test_a_device_that_never_reaches_the_barrier_times_out(tmp_path: Path) -> None:
    # devices 0 and 2 open once all three have (device 1 then hangs): they reach the barrier within
    # milliseconds of each other however slowly the machine spawned them, well within its 3 s
    everyone = (0, 1, 2)
    devices = {0: FakeDevice(wait_for_opened=everyone), 1: FakeDevice(fail_on_open="hang"),
               2: FakeDevice(wait_for_opened=everyone)}
    start = time.monotonic()
    with pytest.raises(CardNotReady, match=r"device\(s\) 1 did not reach the start barrier within 3 s of the first one "
                                           r"\(device\(s\) 0, 2 were ready\)"):
        measure_card(FakeCard(devices, pid_dir=str(tmp_path)), [0, 1, 2], fake_batches(2, 2), FAST, barrier_timeout_s=3)
    # the devices at the barrier give up after 3 s; the parent's own deadline (3 s + 5 s of grace) is the
    # backstop; the hung device would hang for an hour
    assert time.monotonic() - start < HANG_S
    assert_no_processes_left(tmp_path, 3)


def test_no_device_ready_before_the_start_timeout(tmp_path: Path) -> None:
    devices = {0: FakeDevice(fail_on_open="hang"), 1: FakeDevice(fail_on_open="hang")}
    with pytest.raises(CardNotReady, match=r"device\(s\) 0, 1 did not reach the start barrier within 2 s \(no device"):
        measure_card(FakeCard(devices, pid_dir=str(tmp_path)), [0, 1], fake_batches(2, 2), FAST, start_timeout_s=2)
    # a loaded machine may not even have opened them within 2 s: whichever did is gone too (that a hung
    # device's process is ended once it hangs: test_a_device_that_never_reaches_the_barrier_times_out)
    assert_no_processes_left(tmp_path, 0)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in this process, whatever started pytest.

    A background job of a non-interactive shell (`cmd &` in a CI script, nohup) inherits SIGINT
    ignored, and Python then leaves it ignored: an interrupt sent by a test would be dropped and
    the run would simply go on ("DID NOT RAISE KeyboardInterrupt", issue 29).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_leaves_no_process(tmp_path: Path, ctrl_c_raises: None) -> None:
    long_policy = TimingPolicy(warmup_runs=1, min_runs=5, min_seconds=LONG_S, max_seconds=LONG_S)
    running = [tmp_path / f"device-{d}.running" for d in (0, 1)]
    interrupted: list[float] = []
    over = threading.Event()

    def interrupt_once_both_time() -> None:
        # The event, not a guess: both devices are past the barrier and timing, however long a
        # loaded machine took to spawn them. Ctrl-C goes to the main thread, as the terminal's does;
        # never after measure_card is over (it would interrupt whatever runs next).
        while not all(p.exists() for p in running):
            if over.wait(0.01):
                return
        interrupted.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_both_time, daemon=True)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            measure_card(FakeCard(pid_dir=str(tmp_path)), [0, 1], fake_batches(2, 2), long_policy)
        stopped = time.monotonic()
    finally:
        over.set()
        interrupter.join()
    assert stopped - interrupted[0] < HANG_S, "the run went on timing after Ctrl-C"
    assert_no_processes_left(tmp_path, 2)


def test_what_cannot_be_a_card_is_refused_before_any_process() -> None:
    with pytest.raises(CardUsageError, match="each named once"):
        measure_card(FakeCard(), [0, 0], fake_batches(1, 2), FAST)
    with pytest.raises(CardUsageError, match="at least one"):
        measure_card(FakeCard(), [], fake_batches(1, 2), FAST)
    with pytest.raises(CardUsageError, match="cannot be sent to a device's process"):
        measure_card(lambda d: FakeCard()(d), [0, 1], fake_batches(1, 2), FAST)
    assert multiprocessing.active_children() == []


# -- SessionOpener and a real runtime ----------------------------------------------------------------

SHAPE = (3, 8, 8)
CLASSES = 5


def small_onnx(path: Path) -> Path:
    """conv 3x3 -> relu -> global pool -> linear, dynamic batch."""
    rng = np.random.default_rng(11)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc"], ["output"], transB=1)]
    weights = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(size=(CLASSES, 4)).astype(np.float32), "fc")]
    model = helper.make_model(
        helper.make_graph(nodes, "small", [x], [y], weights), opset_imports=[helper.make_opsetid("", 11)]
    )
    onnx.save(model, str(path))
    return path


def test_session_opener_pickles_and_checks_its_scenario(tmp_path: Path) -> None:
    target = CompileTarget(chip="cpu", batch_size=2, input_shape=SHAPE, input_name="input", options={"k": "v"})
    opener = SessionOpener("onnxruntime", {"threads": "1"}, tmp_path / "model.ort.onnx", target, CLASSES, OFFLINE)
    copy = pickle.loads(pickle.dumps(opener))
    assert copy == opener and copy.target.options == {"k": "v"} and copy.scenario == OFFLINE
    with pytest.raises(CardUsageError, match="scenario 'server'"):
        SessionOpener("onnxruntime", {}, tmp_path, target, CLASSES, "server")
    with pytest.raises(CardUsageError, match="open for 'offline' but the card is timed as 'single-stream'"):
        measure_card(opener, [0, 1], fake_batches(1, 2), FAST, scenario=SINGLE_STREAM)


def test_onnxruntime_on_two_cpu_devices(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(threads=1)
    target = CompileTarget(chip="cpu", batch_size=2, input_shape=SHAPE, input_name="input")
    artifact = backend.compile(small_onnx(tmp_path / "small.onnx"), target, tmp_path)
    rng = np.random.default_rng(5)
    batches = [rng.normal(size=(2, *SHAPE)).astype(np.float32) for _ in range(3)]
    with backend.open(artifact, target, num_classes=CLASSES) as session:
        expected = [session.infer(b) for b in batches]

    opener = SessionOpener("onnxruntime", {"threads": "1"}, artifact, target, CLASSES)
    card = measure_card(opener, [0, 1], batches, FAST)
    assert multiprocessing.active_children() == []
    assert sorted(card.devices) == [0, 1] and card.clock == WALL and card.device_images_per_s is None
    assert card.images_per_s == card.wall_images_per_s > 0
    assert card.start_spread_ms < START_SPREAD_MS
    for d, outputs in card.per_device_outputs.items():
        assert len(outputs) == len(batches), d
        for out, exp in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-6)


def test_the_overlap_a_card_needs_comes_from_the_policy() -> None:
    from harness.specs import load_policy

    assert load_policy().perf.card_min_overlap == 0.5  # fixtures/policy.toml [perf]
    runs = {0: run(0, [(0, 10), (10, 20)]), 1: run(1, [(16, 26), (26, 36)])}  # 4 ms together of 20
    with pytest.raises(NotConcurrent):
        card_measurement(runs, min_overlap=0.5)
    assert card_measurement(runs, min_overlap=0.2).window_s == pytest.approx(0.004)  # exactly at the floor
