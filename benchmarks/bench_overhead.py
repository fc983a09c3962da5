"""Harness overhead around inference: the accuracy run and the perf loop against a bare
``session.run`` loop on the same compiled model, the same images and the same ORT settings.

Each comparison alternates round by round: the bare loop runs (and is timed by hand) in the
benchmark's untimed ``setup``, the harness path right after it in the timed round, so a
disturbance from other work on the machine hits both. Two models: efficientnet_lite0 (real
weights, a realistic CPU model) and a tiny conv model whose inference is so cheap that the
harness's own per-batch work shows sharply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from benchlib import MODEL_BATCH, Board
from onnx import TensorProto, helper, numpy_helper

from harness.backends.base import Backend
from harness.data import PreparedDataset, normalize
from harness.run.timing import measure, ring_indices
from harness.specs import CompileTarget, TimingPolicy, load_chips, resolve_chip

ort = pytest.importorskip("onnxruntime", reason="the overhead benchmarks run ONNX Runtime")

BATCH = MODEL_BATCH
# Many short rounds: the pairs of adjacent rounds are what the ratio is taken from.
ROUNDS = 20
WARMUP = 1


@dataclass(frozen=True)
class Model:
    key: str  # figure key suffix
    name: str
    backend: Backend
    artifact: Path
    target: CompileTarget
    images: int  # how many images one accuracy-run round feeds
    perf_runs: int  # how many timed runs one perf-loop round makes


def tiny_onnx(path: Path) -> Path:
    """Conv 8x8/8 (3 -> 16) + ReLU + global pool + Gemm to 1000 classes: ~2.4 MFLOP per image."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (16, 3, 8, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(16, np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (16, 1000)).astype(np.float32), "fc")
    fb = numpy_helper.from_array(np.zeros(1000, np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1000])],
        [w, b, fc, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module", params=["efficientnet_lite0", "tiny"])
def model(request: pytest.FixtureRequest, workbench: Any, tmp_path_factory: pytest.TempPathFactory) -> Model:
    if request.param == "efficientnet_lite0":
        compiled = request.getfixturevalue("effnet")
        return Model("effnet", "efficientnet_lite0", compiled.backend, compiled.artifact, compiled.target,
                     images=48, perf_runs=6)
    backend = workbench.backend(resolve_chip(load_chips(), "cpu"))
    target = CompileTarget(chip="cpu", batch_size=BATCH, input_shape=(3, 224, 224), input_name="input")
    out = tmp_path_factory.mktemp("tiny")
    artifact = backend.compile(tiny_onnx(out / "tiny.onnx"), target, out)
    return Model("tiny", "tiny conv model", backend, artifact, target, images=1000, perf_runs=200)


def _first(prepared: PreparedDataset, count: int) -> PreparedDataset:
    """The first ``count`` images as a PreparedDataset (the same memmap, sliced)."""
    return replace(prepared, images=prepared.images[:count], labels=prepared.labels[:count],
                   names=prepared.names[:count])


def bare_session(artifact: Path, threads: int | None = None) -> Any:
    """What one would write by hand: an ORT session on the same artifact with the backend's
    thread settings (intra-op threads, spinning off, one inter-op thread), nothing else."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(artifact), sess_options=opts, providers=["CPUExecutionProvider"])


def _interleaved(benchmark: Any, harness: Callable[[], Any], bare: Callable[[], Any]) -> tuple[Any, float, float]:
    """Time ``harness`` with the benchmark and ``bare`` by hand, alternating round by round.

    Returns the last harness result, the bare loop's fastest round, and the median over rounds
    of bare time / harness time of the same round pair: the ratio least moved by other work.
    """
    bare_seconds: list[float] = []

    def setup() -> None:
        t0 = time.perf_counter()
        bare()
        bare_seconds.append(time.perf_counter() - t0)

    result = benchmark.pedantic(harness, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP)
    harness_seconds = list(benchmark.stats.stats.data) if benchmark.stats is not None else []
    # strict=False: with loops, pedantic calls setup once more after the rounds (an unpaired extra).
    paired = [b / h for b, h in zip(bare_seconds[WARMUP:], harness_seconds, strict=False)]
    benchmark.extra_info["paired_ratio_median"] = float(np.median(paired)) if paired else None
    # With timing disabled (--benchmark-disable) setup ran once and there is nothing to pair.
    return result, min(bare_seconds[WARMUP:] or bare_seconds), float(np.median(paired)) if paired else float("nan")


@pytest.fixture
def sessions(model: Model) -> Iterator[tuple[Any, Any]]:
    with model.backend.open(model.artifact, model.target, num_classes=1000) as session:
        yield session, bare_session(model.artifact, model.backend.threads)


def test_accuracy_run_overhead(
    benchmark: Any, board: Board, workbench: Any, model: Model, sessions: tuple[Any, Any],
    prepared_effnet: PreparedDataset,
) -> None:
    """Workbench.run (batches normalized on the fly + session.infer + concatenation) against a
    bare session.run loop over the same batches normalized beforehand."""
    session, bare = sessions
    prepared = _first(prepared_effnet, model.images)
    spec = prepared.spec
    ready = [normalize(np.asarray(prepared.images[s : s + BATCH]), spec.mean, spec.std)
             for s in range(0, len(prepared), BATCH)]
    name_in, name_out = bare.get_inputs()[0].name, bare.get_outputs()[0].name
    bare_out: list[np.ndarray] = []

    def bare_loop() -> None:
        bare_out[:] = [bare.run([name_out], {name_in: b})[0] for b in ready]

    logits, bare_s, paired = _interleaved(
        benchmark, lambda: workbench.run(session, prepared, BATCH, "bench"), bare_loop
    )
    # Not timed: both paths computed the same logits.
    np.testing.assert_allclose(logits, np.concatenate(bare_out), rtol=1e-5, atol=1e-5)
    board.record(f"acc_{model.key}", f"accuracy run (Workbench.run), {model.name} bs{BATCH}", benchmark, len(prepared))
    board.paired[f"acc_{model.key}"] = paired
    board.record_seconds(f"acc_{model.key}_bare", f"bare session.run, pre-normalized, {model.name} bs{BATCH}",
                         bare_s, len(prepared), benchmark=benchmark)


def test_perf_loop_overhead(
    benchmark: Any, board: Board, model: Model, sessions: tuple[Any, Any], prepared_effnet: PreparedDataset,
) -> None:
    """harness.run.timing.measure over the ring of real batches against a bare loop making the same runs."""
    session, bare = sessions
    spec = prepared_effnet.spec
    runs = model.perf_runs
    # measure() makes at least one pass over the ring: a ring of 128 images (as fixtures/policy.toml), or fewer
    # when the round is shorter.
    ring = [normalize(np.asarray(prepared_effnet.images[idx]), spec.mean, spec.std)
            for idx in ring_indices(len(prepared_effnet), BATCH, min(128, runs * BATCH))]
    policy = TimingPolicy(warmup_runs=0, min_runs=runs, min_seconds=0.0, max_seconds=3600.0)
    name_in, name_out = bare.get_inputs()[0].name, bare.get_outputs()[0].name

    def bare_loop() -> None:
        for i in range(runs):
            bare.run([name_out], {name_in: ring[i % len(ring)]})

    timed, bare_s, paired = _interleaved(benchmark, lambda: measure(session, ring, policy), bare_loop)
    assert timed.measurement.runs == runs
    reported = timed.measurement.wall_images_per_s
    board.record(f"perf_{model.key}", f"perf loop (timing.measure), {model.name} bs{BATCH}", benchmark, runs * BATCH,
                 f"last round's own figure {reported:,.1f} images/s")
    board.paired[f"perf_{model.key}"] = paired
    board.record_seconds(f"perf_{model.key}_bare", f"bare session.run loop, {model.name} bs{BATCH}",
                         bare_s, runs * BATCH, benchmark=benchmark)


class SimulatedDevice:
    """A session that computes nothing and takes as long as an accelerator running ``rate`` images/s
    (time.sleep: the host's CPU is free meanwhile, as with a real device). What the harness must
    keep up with: an Ascend 310P3 runs ResNeXt-50 at ~4000 images/s."""

    input_dtype = np.float32

    def __init__(self, batch_size: int, rate: float):
        self.batch_size = batch_size
        self.rate = rate

    def infer(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(batch.shape[0] / self.rate)
        return np.zeros((batch.shape[0], 1000), dtype=np.float32)


DEVICE_RATE = 4000.0
DEVICE_BATCH = 32


@pytest.mark.parametrize("prefetch", [False, True], ids=["batches", "batches-prefetch"])
def test_accuracy_run_on_a_4000_per_s_device(
    benchmark: Any, board: Board, workbench: Any, prepared_1000: PreparedDataset, prefetch: bool,
) -> None:
    """The accuracy run's host work (reading the cache, normalizing) against the device's own time.

    ``batches``: Workbench.run as it is (normalize, then infer, in series). ``batches-prefetch``:
    the same loop over ``PreparedDataset.batches(bs, prefetch=True)``.
    """
    device = SimulatedDevice(DEVICE_BATCH, DEVICE_RATE)
    prepared = prepared_1000
    one = normalize(np.asarray(prepared.images[:DEVICE_BATCH]), prepared.spec.mean, prepared.spec.std)
    sizes = [min(DEVICE_BATCH, len(prepared) - s) for s in range(0, len(prepared), DEVICE_BATCH)]

    def device_only() -> None:
        for n in sizes:
            device.infer(one[:n])

    def harness() -> np.ndarray:
        if not prefetch:
            return workbench.run(device, prepared, DEVICE_BATCH, "bench")
        return np.concatenate([device.infer(b) for _, b in prepared.batches(DEVICE_BATCH, prefetch=True)])

    logits, bare_s, paired = _interleaved(benchmark, harness, device_only)
    assert logits.shape == (len(prepared), 1000)
    key = "acc_device_prefetch" if prefetch else "acc_device"
    label = "accuracy run, batches(prefetch=True)" if prefetch else "accuracy run (Workbench.run)"
    board.record(key, f"{label}, simulated {DEVICE_RATE:.0f}/s device bs{DEVICE_BATCH}", benchmark, len(prepared))
    board.paired[key] = paired
    board.record_seconds("acc_device_bare", f"the simulated {DEVICE_RATE:.0f}/s device alone, bs{DEVICE_BATCH}",
                         bare_s, len(prepared), benchmark=benchmark)
