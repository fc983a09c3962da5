"""The way back to float on ONNX Runtime: the fewest layers to keep in float that make a failing INT8
quantization pass its paired gates.

1. Localise (:func:`harness.localize.pipeline.localize`, ``expose``): the reference ONNX against the QDQ
   model run without fusions (ORT basic level: the quantization emulated, every tensor named as in
   the reference), on the most divergent scored images. Each weighted layer (Conv, Gemm, MatMul) is
   ranked by the cosine it loses itself: the lowest cosine of its inputs minus its output's.
2. Greedy: keep the worst-ranked layer in float, re-quantize (the calibration ranges are computed
   once and reused from a JSON file), score the scored images and judge them with the suite's paired
   gates against the torch reference; add the next layer until every gate passes or
   ``[int8] keep_float_max`` layers are kept.
3. Prune: drop each kept layer in turn (the last added first) while the gates still pass.

The result is a ``--keep-float NODE,...`` setting that reproduces the model (harness.run.int8 keys
its cache by it). Selecting layers on the scored images tunes on the judged data: the search says
which layers matter; certify the setting it finds on other images where the data allows it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from harness.backends.onnxruntime.quantize import OrtQuantizer
from harness.backends.quantization import QuantizationSettings
from harness.judge.gates import Gate, overall_verdict, paired_accuracy_gates, topk_correct
from harness.localize.graph import topological_nodes
from harness.localize.images import Images
from harness.localize.pipeline import localize
from harness.localize.summary import LocalizationSummary
from harness.localize.targets import OrtTarget
from harness.progress import progress
from harness.specs import Policy

WEIGHTED = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Trial:
    """One quantization tried: the layers kept in float, its accuracy and its paired verdicts."""

    keep_float: tuple[str, ...]
    top1: float
    top5: float
    drop_top1: float
    drop_top1_high: float
    top1_agreement: float
    verdict: str  # "pass" when every paired gate passes, else the worst gate's verdict

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass(frozen=True)
class KeepFloatResult:
    """The search: the ranking it followed, every trial in order, and the fewest layers found (None:
    none within ``keep_float_max``)."""

    ranking: tuple[tuple[str, float], ...]
    trials: tuple[Trial, ...]
    found: tuple[str, ...] | None


def ranking(summary: LocalizationSummary, reference: onnx.ModelProto) -> list[tuple[str, float]]:
    """Weighted layers by the cosine they lose themselves (largest first), from a localisation's rows."""
    cosine = {r.output: r.metrics.cosine for r in summary.rows if r.metrics is not None}
    nodes = topological_nodes(reference)
    ranked = []
    for row in summary.rows:
        if row.op not in WEIGHTED or row.metrics is None or math.isnan(row.metrics.cosine):
            continue
        inputs = [cosine[t] for t in nodes[row.index].input if t in cosine]
        ranked.append((row.node, (min(inputs) if inputs else 1.0) - row.metrics.cosine))
    return sorted(ranked, key=lambda item: -item[1])


def judge(logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray, policy: Policy,
          keep_float: tuple[str, ...]) -> Trial:
    """A trial's figures and verdict: the suite's paired gates, candidate vs torch reference."""
    ref_correct, correct = topk_correct(reference_logits, labels), topk_correct(logits, labels)
    gates: list[Gate] = paired_accuracy_gates(ref_correct, correct, policy)
    top1 = gates[0].values
    agreement = float((logits.argmax(1) == reference_logits.argmax(1)).mean() * 100)
    drop, high = (float(str(top1[k])) for k in ("paired_drop_top1", "paired_drop_top1_high95"))
    return Trial(keep_float=keep_float, top1=float(correct["top1"].mean() * 100),
                 top5=float(correct["top5"].mean() * 100), drop_top1=drop, drop_top1_high=high,
                 top1_agreement=agreement, verdict=overall_verdict(gates))


def ort_logits(model_path: Path, images: Images, threads: int | None, batch: int = 32) -> np.ndarray:
    """The model's logits on every image, on ONNX Runtime CPU at every optimization (as the suite runs it)."""
    run = OrtTarget(onnx.load(str(model_path)), str(model_path), "all", threads).compile(
        onnx.load(str(model_path)), None, batch)
    out = []
    for start in range(0, len(images), batch):
        values = run(images.batch(range(start, min(start + batch, len(images))), np.dtype(np.float32)))
        out.append(next(iter(values.values())))
    return np.concatenate(out)


def search(reference_onnx: Path, settings: QuantizationSettings, calibration: Callable[[], Iterable[np.ndarray]],
           scored: Images, labels: np.ndarray, reference_logits: np.ndarray, policy: Policy,
           threads: int | None = None, work_dir: Path | None = None) -> KeepFloatResult:
    """The fewest layers of ``reference_onnx`` to keep in float for ``settings``' quantization to pass.

    ``calibration``: a fresh iterator of calibration batches (used once: the ranges are then reused);
    ``scored``: the scored images, ``labels`` and ``reference_logits`` (the torch reference's) in the
    same order."""
    quantizer = OrtQuantizer()
    reference = onnx.load(str(reference_onnx))
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        cache = Path(tmp) / "calibration.json"

        def trial(keep: tuple[str, ...]) -> tuple[Trial, Path]:
            out = Path(tmp) / f"q{len(trials)}"
            out.mkdir()
            path, _info = quantizer.quantize(reference_onnx, calibration(), replace(settings, keep_float=keep), out,
                                             calibration_cache=cache)
            return judge(ort_logits(path, scored, threads), reference_logits, labels, policy, keep), path

        trials: list[Trial] = []
        start, start_path = trial(tuple(settings.keep_float))
        trials.append(start)
        if start.passed:
            return KeepFloatResult(ranking=(), trials=tuple(trials), found=tuple(settings.keep_float))
        candidate = OrtTarget(onnx.load(str(start_path)), "onnxruntime QDQ (basic: quantization emulated)", "basic",
                              threads)
        summary = localize(reference, candidate, scored, method="expose", thresholds=None,
                           outputs=(reference_logits, ort_logits(start_path, scored, threads)))
        ranked = ranking(summary, reference)
        kept = list(settings.keep_float)
        found: list[str] | None = None
        budget = policy.int8.keep_float_max
        with progress(budget, "keep-float: layers tried") as bar:
            for node, _loss in ranked:
                if len(kept) - len(settings.keep_float) >= budget:
                    break
                kept.append(node)
                result, _ = trial(tuple(kept))
                trials.append(result)
                bar.update(1)
                if result.passed:
                    found = list(kept)
                    break
        if found is not None:
            for node in reversed(found[len(settings.keep_float):-1]):  # the last one added was needed
                fewer = tuple(n for n in found if n != node)
                result, _ = trial(fewer)
                trials.append(result)
                if result.passed:
                    found = list(fewer)
        return KeepFloatResult(ranking=tuple(ranked), trials=tuple(trials),
                               found=tuple(found) if found is not None else None)


def describe(result: KeepFloatResult, limit: int = 8) -> Sequence[str]:
    """Lines for a benchmark's or a note's output."""
    lines = ["ranked layers (cosine lost): " + ", ".join(f"{n} {loss:.4f}" for n, loss in result.ranking[:limit])]
    for t in result.trials:
        lines.append(f"keep {len(t.keep_float)} float: top-1 {t.top1:.2f} top-5 {t.top5:.2f} drop {t.drop_top1:.2f} "
                     f"(high {t.drop_top1_high:.2f}) agreement {t.top1_agreement:.2f}% -> {t.verdict}")
    lines.append("found: " + (",".join(result.found) if result.found is not None else "none within keep_float_max"))
    return lines
