"""The way back to float on real data: a run's calibration split, scored images and torch reference
(harness.run.workbench), the search on ONNX Runtime (:mod:`harness.localize.keep_float`), NNCF's
accuracy control on OpenVINO or AMCT's accuracy-based auto calibration on Ascend (judged as its
fake-quant ONNX on ONNX Runtime), and the speed of fp32, the full INT8 model and the setting found.

Used by ``python -m harness keep-float`` (harness.cli.keep_float) and
``benchmarks/bench_int8.py --search``. Every figure is judged by the suite's paired gates against
the fp32 torch reference on the scored images (never the calibration images).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.localize.images import Images
from harness.localize.keep_float import KeepFloatResult, Trial, judge, search
from harness.specs import ModelSpec, Policy

ONNXRUNTIME, OPENVINO, ASCEND = "onnxruntime", "openvino", "ascend"
BACKENDS = (ONNXRUNTIME, OPENVINO, ASCEND)
SIMULATED = ("judged: AMCT's fake-quant ONNX of each model on ONNX Runtime CPU (AMCT's documented accuracy "
             "simulation); the deploy model needs ATC and an NPU for its judgement, not run here")
SOURCE = "imagenet"


@dataclass
class Outcome:
    """What the way back to float found: the trials judged (and, on ONNX Runtime, the candidates
    measured), the setting (None: not found), and images/s of fp32, full INT8 and the setting."""

    backend: str
    model: str
    trials: list[Trial]
    found: tuple[str, ...] | None
    seconds: float
    subset: int = 0
    speed: dict[str, tuple[int, float]] = field(default_factory=dict)  # label -> (best batch, images/s)
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> Trial | None:
        if self.found is None:
            return None
        return next((t for t in reversed(self.trials) if t.stage != "candidate" and t.keep_float == self.found), None)


def policy_with(policy: Policy, scheme: str | None) -> Policy:
    return replace(policy, int8=replace(policy.int8, scheme=scheme)) if scheme else policy


def workbench(cfg: Any, policy: Policy, keep_float: tuple[str, ...] = ()) -> Any:
    from harness.run.workbench import Workbench

    return Workbench(replace(cfg, keep_float=keep_float), policy)


def chip_for(backend: str, precision: str) -> Any:
    from harness.specs import load_chips

    return replace(load_chips()["cpu"], backend=backend, backend_options={}, precision=precision)


def start(cfg: Any, policy: Policy, spec: ModelSpec, backend: str) -> Any:
    """The INT8 model as the policy quantizes it, evaluated (calibration split, torch reference)."""
    return workbench(cfg, policy, cfg.keep_float).evaluate(spec, chip_for(backend, "int8"), 8, SOURCE)


def on_ort(cfg: Any, policy: Policy, spec: ModelSpec, on_trial: Callable[[Trial], None] | None = None) -> Outcome:
    """The measured search on ONNX Runtime (harness.localize.keep_float.search)."""
    from harness.run import int8

    started = time.perf_counter()
    bench = workbench(cfg, policy, cfg.keep_float)
    ev = bench.evaluate(spec, chip_for(ONNXRUNTIME, "int8"), 8, SOURCE)
    prepared = ev.prepared
    calibration = int8.prepared_listing(bench, spec, int8.calibration_split(bench, SOURCE).calibration)
    settings = int8.settings_of(policy, cfg.keep_float)
    result: KeepFloatResult = search(ev.onnx_path, settings, lambda: int8.calibration_batches(calibration, False),
                                     Images.from_prepared(prepared), prepared.labels, ev.reference_logits, policy,
                                     threads=cfg.threads, on_trial=on_trial)
    return Outcome(backend=ONNXRUNTIME, model=spec.name, trials=list(result.trials), found=result.found,
                   seconds=time.perf_counter() - started, subset=result.subset)


def _top1_of(compiled: Any, items: Iterable[tuple[np.ndarray, int]]) -> tuple[float, list[float]]:
    """NNCF's validation function: top-1 (a fraction) of an OpenVINO compiled model, and per item."""
    hits = [float(np.argmax(compiled(image)[0]) == label) for image, label in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


def ov_logits(xml: Path, images: Images, threads: int | None) -> np.ndarray:
    """An IR's logits on ``images``, one image per request (the IR keeps the export's dynamic batch)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    return np.concatenate([compiled(images.batch([i], np.dtype(np.float32)))[0] for i in range(len(images))])


def recorder(trials: list[Trial], on_trial: Callable[[Trial], None] | None) -> Callable[[Trial], None]:
    """Appends each trial to ``trials`` and shows it (``on_trial``) as it is judged."""
    def record(trial: Trial) -> None:
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    return record


def on_openvino(cfg: Any, policy: Policy, spec: ModelSpec, work_dir: Path,
                on_trial: Callable[[Trial], None] | None = None, max_drop: float | None = None) -> Outcome:
    """NNCF's ``quantize_with_accuracy_control``: validated by top-1 on the scored images, with
    ``max_drop`` points (default: the policy's tolerance) as its ``max_drop``; the layers it reverted,
    named as ONNX nodes, are then reproduced with ``--keep-float`` (nncf.quantize with them ignored)
    and judged."""
    import openvino as ov

    from harness.backends.openvino_quantize import NncfQuantizer, onnx_nodes_of
    from harness.run import int8

    started = time.perf_counter()
    trials: list[Trial] = []
    record = recorder(trials, on_trial)

    int8_policy = policy.for_precision("int8")
    first = start(cfg, policy, spec, OPENVINO)
    labels, ref = first.prepared.labels, first.reference_logits
    record(judge(first.logits, ref, labels, int8_policy, tuple(cfg.keep_float), "start", "nncf.quantize"))
    bench = workbench(cfg, policy, cfg.keep_float)
    calibration = int8.prepared_listing(bench, spec, int8.calibration_split(bench, SOURCE).calibration)
    images = Images.from_prepared(first.prepared)
    validation = [(images.batch([i], np.dtype(np.float32)), int(labels[i])) for i in range(len(images))]
    tolerance = int8_policy.accuracy.tolerance.points if max_drop is None else max_drop
    quantizer = NncfQuantizer()
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    xml, info = quantizer.quantize_with_accuracy_control(
        first.onnx_path, int8.calibration_batches(calibration, False), validation, int8.settings_of(policy),
        out, tolerance, _top1_of, max_iterations=policy.int8.keep_float_max)
    converted = ov.convert_model(str(first.onnx_path))
    reverted = [op for op in info.excluded_nodes if op not in set(quantizer_ignored(converted, first.onnx_path,
                                                                                   policy))]
    nodes = tuple(onnx_nodes_of(converted, reverted, first.onnx_path))
    keep = tuple(dict.fromkeys((*cfg.keep_float, *nodes)))
    record(judge(ov_logits(xml, images, cfg.threads), ref, labels, int8_policy, keep, "nncf",
                 f"accuracy control, max_drop {tolerance:g} point(s): {len(reverted)} layer(s) reverted"))
    outcome = Outcome(backend=OPENVINO, model=spec.name, trials=trials, found=None,
                      seconds=time.perf_counter() - started, notes=[f"NNCF reverted: {', '.join(reverted) or 'none'}"])
    if keep == tuple(cfg.keep_float):
        outcome.found = keep if trials[0].passed else None
        return outcome
    again = workbench(cfg, policy, keep).evaluate(spec, chip_for(OPENVINO, "int8"), 8, SOURCE)
    record(judge(again.logits, ref, labels, int8_policy, keep, "reproduce", "--keep-float with nncf.quantize"))
    outcome.found = keep if trials[-1].passed else None
    outcome.seconds = time.perf_counter() - started
    return outcome


def on_ascend(cfg: Any, policy: Policy, spec: ModelSpec, work_dir: Path,
              on_trial: Callable[[Trial], None] | None = None, max_drop: float | None = None) -> Outcome:
    """AMCT's accuracy-based auto calibration (:mod:`harness.backends.ascend_tools.amct_auto`), validated by
    top-1 on the scored images with ``max_drop`` points (default: the policy's tolerance); the layers it
    rolled back are then reproduced with ``--keep-float`` (``amct_onnx calibration``, as skip_layers) and
    judged. Without ATC and an NPU, every model is judged as its fake-quant ONNX on ONNX Runtime (:data:`SIMULATED`)."""
    import onnx

    from harness.backends.ascend import AscendBackend
    from harness.backends.ascend_tools import amct, amct_auto
    from harness.backends.quantization import QuantizationError
    from harness.localize.keep_float import ort_logits
    from harness.run import int8

    started = time.perf_counter()
    trials: list[Trial] = []
    record = recorder(trials, on_trial)

    int8_policy = policy.for_precision("int8")
    bench = workbench(cfg, policy, cfg.keep_float)
    loaded = bench.model(spec, calibration_source=SOURCE)
    onnx_path = bench.onnx(loaded)
    prepared = int8.scored_dataset(bench, spec, SOURCE)
    ref, labels, images = bench.reference(loaded, prepared)[0], prepared.labels, Images.from_prepared(prepared)
    backend, start_keep = AscendBackend(check_device=False), tuple(cfg.keep_float)

    def fake_quant_logits(keep: tuple[str, ...]) -> np.ndarray:
        quantized = int8.quantize(bench, backend, spec, onnx_path, SOURCE, int8.settings_of(policy, keep))
        return ort_logits(quantized.path.parent / amct.FAKE_QUANT_NAME, images, cfg.threads)

    outcome = Outcome(backend=ASCEND, model=spec.name, trials=trials, found=None, seconds=0.0,
                      notes=[SIMULATED, "speed not measured: the deploy model runs only on an NPU"])
    try:
        record(judge(fake_quant_logits(start_keep), ref, labels, int8_policy, start_keep, "start",
                     "amct_onnx calibration (fake-quant on ONNX Runtime)"))
    except QuantizationError as exc:
        outcome.notes.append(f"start not judged: {exc}")
    calibration = int8.prepared_listing(bench, spec, int8.calibration_split(bench, SOURCE).calibration)
    tolerance = int8_policy.accuracy.tolerance.points if max_drop is None else max_drop
    skip = amct.AmctQuantizer.excluded(onnx.load(str(onnx_path), load_external_data=False),
                                       int8.settings_of(policy, start_keep))
    auto = amct_auto.run(onnx_path, int8.calibration_batches(calibration, False), images.pixels, labels, images.mean,
                         images.std, skip, tolerance, Path(work_dir) / "amct_auto", threads=cfg.threads)
    outcome.notes += [f"AMCT rolled back: {', '.join(auto.rolled_back) or 'none'} ({auto.steps} history "
                      f"record(s), {auto.seconds:.0f} s)",
                      "AMCT's evaluations (top-1 % on the scored images, ONNX Runtime CPU): "
                      + ", ".join(f"{e.get('model')} {e.get('top1')}" for e in auto.evaluations)]
    keep = tuple(dict.fromkeys((*start_keep, *auto.rolled_back)))
    if auto.logits is None:
        outcome.notes.append("AMCT rolled back every layer and wrote no model: the tolerance cannot be met in int8")
    else:
        record(judge(auto.logits, ref, labels, int8_policy, keep, "amct",
                     f"accuracy-based auto calibration, max drop {tolerance:g} point(s): "
                     f"{len(auto.rolled_back)} layer(s) rolled back"))
        if keep != start_keep:
            record(judge(fake_quant_logits(keep), ref, labels, int8_policy, keep, "reproduce",
                         "--keep-float with amct_onnx calibration (skip_layers)"))
        outcome.found = keep if trials[-1].passed else None
    outcome.seconds = time.perf_counter() - started
    return outcome


def quantizer_ignored(converted: Any, onnx_path: Path, policy: Policy) -> list[str]:
    """The IR operations the policy's quantization keeps float anyway (the logits layer)."""
    from harness.backends.openvino_quantize import ignored_ops
    from harness.run import int8

    return ignored_ops(converted, onnx_path, int8.settings_of(policy))


def speeds(cfg: Any, policy: Policy, spec: ModelSpec, backend: str, found: tuple[str, ...] | None,
           batch_sizes: tuple[int, ...]) -> dict[str, tuple[int, float]]:
    """Images/s at the best of ``batch_sizes`` (the suite's timing loop) of fp32, the INT8 model as
    quantized, and the setting found: one run, back to back."""
    from harness.run.sweep import run_sweep

    runs = [("fp32", "fp32", ()), ("int8", "int8", tuple(cfg.keep_float))]
    if found is not None and found != tuple(cfg.keep_float):
        runs.append(("int8 --keep-float", "int8", found))
    measured = {}
    for label, precision, keep in runs:
        sweep = run_sweep(workbench(cfg, policy, keep), spec, chip_for(backend, precision), list(batch_sizes), SOURCE)
        top = max(sweep.measurements, key=lambda m: m.images_per_s)
        measured[label] = (top.batch_size, float(top.images_per_s))
    return measured
