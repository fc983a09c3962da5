"""The way back to float on ONNX Runtime: the fewest layers to keep in float that make a failing INT8
quantization pass its paired gates, found by measuring what keeping each one in float gains.

Why measured gains and not the localisation's ranking (which this module followed before): on
efficientnet_lite0 quantized per tensor the damage is spread over the 16 depthwise convolutions'
weights; the layers that lose the most cosine on their own, kept in float 1 to 16 at a time, moved
top-1 between 80.0 and 80.8 and never passed (docs/int8.md).

1. **Start**: quantize (MinMax ranges computed once, then reused from a JSON file), score every
   scored image, judge with the suite's gates against the torch reference (paired top-1 and top-5
   drops, top-1 agreement against ``[int8] agreement_min_top1``). Passing: done.
2. **Measure candidates** on the ``[int8] keep_float_images`` most divergent scored images (top-1
   disagreements with the reference first, then by KL divergence): each weighted layer alone, and
   groups (every depthwise convolution; each block, by node-name prefix) for when no single layer
   can do it. A candidate's gain: images whose top-1 it brings back to the reference's, minus those
   it loses (then correct top-1s, as a tie-break).
3. **Greedy**: add candidates in the order of their gain per layer kept (positive gains only: a
   layer that does most of its group's work goes before the group), judging every scored image
   after each, until the gates pass or ``[int8] keep_float_max`` layers are kept.
4. **Prune**: drop each kept layer in turn (the least gain first) while the gates still pass.

A kept layer is excluded from ORT's quantizer (``nodes_to_exclude``: float weights) and reads float
activations (:mod:`harness.backends.onnxruntime.float_inputs`). The result is a
``--keep-float NODE,...`` setting that reproduces the model (harness.run.int8 keys its cache by it).
Selecting layers on the scored images tunes on the judged data: certify the setting it finds on
other images where the data allows it.
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
from harness.judge.gates import Gate, agreement_verdict_gate, overall_verdict, paired_accuracy_gates, topk_correct
from harness.judge.metrics import parity
from harness.localize.images import Images
from harness.localize.targets import OrtTarget
from harness.progress import progress
from harness.specs import Policy

WEIGHTED = ("Conv", "Gemm", "MatMul")
SUBSET = "subset"  # a candidate's trial on the most divergent images: measured, not judged


@dataclass(frozen=True)
class Trial:
    """One quantization tried: the layers kept in float, its accuracy on ``images`` scored images and
    its paired verdict (``subset`` for a candidate's trial on the divergent images: not judged)."""

    stage: str  # start | candidate | greedy | prune
    label: str  # what this trial changed
    keep_float: tuple[str, ...]
    images: int
    top1: float
    top5: float
    drop_top1: float
    drop_top1_high: float
    top1_agreement: float
    verdict: str
    gain: tuple[int, int] = (0, 0)  # candidates: (top-1 agreements, correct top-1s) won on the subset

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass(frozen=True)
class Candidate:
    label: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class KeepFloatResult:
    """The search: every trial in order, and the fewest layers found (None: none within ``keep_float_max``)."""

    trials: tuple[Trial, ...]
    found: tuple[str, ...] | None
    subset: int

    @property
    def final(self) -> Trial | None:
        """The judged trial of the setting found (the last full trial that passed with it)."""
        if self.found is None:
            return None
        return next(t for t in reversed(self.trials) if t.stage != "candidate" and t.keep_float == self.found)


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def candidates(model: onnx.ModelProto, already: Iterable[str]) -> list[Candidate]:
    """Each weighted layer with a weight initializer (not ``already`` float), then the groups:
    every depthwise convolution, each block (the name prefix two levels above the node's own)."""
    inits = {i.name for i in model.graph.initializer}
    skip = set(already)
    weighted = [n for n in model.graph.node
                if n.op_type in WEIGHTED and n.name not in skip and len(n.input) > 1 and n.input[1] in inits]
    found = [Candidate(n.name, (n.name,)) for n in weighted]
    depthwise = tuple(n.name for n in weighted if n.op_type == "Conv" and _group(n) > 1)
    if len(depthwise) > 1:
        found.append(Candidate(f"every depthwise conv ({len(depthwise)})", depthwise))
    blocks: dict[str, list[str]] = {}
    for n in weighted:
        prefix = n.name.rsplit("/", 2)[0]
        if prefix:
            blocks.setdefault(prefix, []).append(n.name)
    found += [Candidate(f"block {prefix} ({len(names)})", tuple(names))
              for prefix, names in blocks.items() if len(names) > 1]
    return found


def divergent(reference_logits: np.ndarray, logits: np.ndarray, count: int) -> np.ndarray:
    """The indices of the ``count`` images where ``logits`` depart most from the reference's: top-1
    disagreements first, then by the KL divergence of the softmaxes."""
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    p, q = log_softmax(reference_logits), log_softmax(logits)
    kl = (np.exp(p) * (p - q)).sum(axis=1)
    differ = reference_logits.argmax(1) != logits.argmax(1)
    order = np.lexsort((-kl, ~differ))
    return np.sort(order[:count])


def judge(logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray, policy: Policy,
          keep_float: tuple[str, ...], stage: str = "start", label: str = "") -> Trial:
    """A trial's figures and verdict: the suite's gates against the torch reference, the paired top-1
    and top-5 drops and the top-1 agreement (its Wilson interval against ``agreement_min_top1``)."""
    ref_correct, correct = topk_correct(reference_logits, labels), topk_correct(logits, labels)
    gates: list[Gate] = paired_accuracy_gates(ref_correct, correct, policy)
    gates.append(agreement_verdict_gate(parity(reference_logits, logits), policy, "torch"))
    top1 = gates[0].values
    agreement = float((logits.argmax(1) == reference_logits.argmax(1)).mean() * 100)
    drop, high = (float(str(top1[k])) for k in ("paired_drop_top1", "paired_drop_top1_high95"))
    return Trial(stage=stage, label=label, keep_float=keep_float, images=len(labels),
                 top1=float(correct["top1"].mean() * 100), top5=float(correct["top5"].mean() * 100),
                 drop_top1=drop, drop_top1_high=high, top1_agreement=agreement, verdict=overall_verdict(gates))


def measure(logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray, keep_float: tuple[str, ...],
            label: str, base: tuple[np.ndarray, np.ndarray]) -> Trial:
    """A candidate's trial on the subset: figures, and its gain over the start's ``base`` (agree, correct)."""
    agree = logits.argmax(1) == reference_logits.argmax(1)
    correct = topk_correct(logits, labels)
    ref_top1 = topk_correct(reference_logits, labels)["top1"].mean() * 100
    gain = (int(agree.sum() - base[0].sum()), int(correct["top1"].sum() - base[1].sum()))
    return Trial(stage="candidate", label=label, keep_float=keep_float, images=len(labels),
                 top1=float(correct["top1"].mean() * 100), top5=float(correct["top5"].mean() * 100),
                 drop_top1=float(ref_top1 - correct["top1"].mean() * 100), drop_top1_high=math.nan,
                 top1_agreement=float(agree.mean() * 100), verdict=SUBSET, gain=gain)


def ort_logits(model_path: Path, images: Images, threads: int | None, batch: int = 32) -> np.ndarray:
    """The model's logits on every image, on ONNX Runtime CPU at every optimization (as the suite runs it)."""
    model = onnx.load(str(model_path))
    run = OrtTarget(model, str(model_path), "all", threads).compile(model, None, batch)
    out = []
    for start in range(0, len(images), batch):
        values = run(images.batch(range(start, min(start + batch, len(images))), np.dtype(np.float32)))
        out.append(next(iter(values.values())))
    return np.concatenate(out)


def subset_of(images: Images, indices: np.ndarray) -> Images:
    return replace(images, pixels=np.asarray(images.pixels[indices]), names=tuple(images.names[i] for i in indices))


class _Search:
    """The trials' shared state: the quantizer, its calibration ranges' file, the images, the policy."""

    def __init__(self, reference_onnx: Path, settings: QuantizationSettings,
                 calibration: Callable[[], Iterable[np.ndarray]], scored: Images, labels: np.ndarray,
                 reference_logits: np.ndarray, policy: Policy, threads: int | None, tmp: Path,
                 on_trial: Callable[[Trial], None] | None):
        self.source, self.settings, self.calibration = reference_onnx, settings, calibration
        self.scored, self.labels, self.reference_logits = scored, labels, reference_logits
        self.policy, self.threads, self.tmp, self.on_trial = policy, threads, tmp, on_trial
        self.cache = tmp / "calibration.json"
        self.quantizer = OrtQuantizer()
        self.trials: list[Trial] = []
        self.made = 0
        self.judged: dict[frozenset[str], Trial] = {}

    def quantized(self, keep: tuple[str, ...]) -> Path:
        self.made += 1
        out = self.tmp / f"q{self.made}"
        out.mkdir()
        path, _info = self.quantizer.quantize(self.source, self.calibration(), replace(self.settings, keep_float=keep),
                                              out, calibration_cache=self.cache)
        return path

    def record(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        if self.on_trial is not None:
            self.on_trial(trial)
        return trial

    def full(self, keep: tuple[str, ...], stage: str, label: str) -> tuple[Trial, np.ndarray]:
        path = self.quantized(keep)
        logits = ort_logits(path, self.scored, self.threads)
        trial = self.record(judge(logits, self.reference_logits, self.labels, self.policy, keep, stage, label))
        self.judged[frozenset(keep)] = trial
        return trial, logits

    def passes(self, keep: tuple[str, ...], stage: str, label: str) -> bool:
        known = self.judged.get(frozenset(keep))
        return (known if known is not None else self.full(keep, stage, label)[0]).passed


def search(reference_onnx: Path, settings: QuantizationSettings, calibration: Callable[[], Iterable[np.ndarray]],
           scored: Images, labels: np.ndarray, reference_logits: np.ndarray, policy: Policy,
           threads: int | None = None, work_dir: Path | None = None,
           on_trial: Callable[[Trial], None] | None = None) -> KeepFloatResult:
    """The fewest layers of ``reference_onnx`` to keep in float for ``settings``' quantization to pass.

    ``calibration``: a fresh iterator of calibration batches (used once: the ranges are then reused);
    ``scored``: the scored images, ``labels`` and ``reference_logits`` (the torch reference's) in the
    same order; ``on_trial`` sees every trial as it ends."""
    policy = policy.for_precision("int8")
    base_keep = tuple(settings.keep_float)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        s = _Search(reference_onnx, settings, calibration, scored, labels, reference_logits, policy, threads,
                    Path(tmp), on_trial)
        start, start_logits = s.full(base_keep, "start", "as quantized")
        subset = divergent(reference_logits, start_logits, min(policy.int8.keep_float_images, len(labels)))
        if start.passed:
            return KeepFloatResult(trials=tuple(s.trials), found=base_keep, subset=len(subset))
        reference = onnx.load(str(reference_onnx), load_external_data=False)
        already = set(base_keep) | set(s.quantizer.excluded(reference, settings))
        found = _greedy(s, _ranked(s, candidates(reference, already), subset, start_logits[subset]), base_keep)
        if found is not None:
            found = _prune(s, found, base_keep)
        return KeepFloatResult(trials=tuple(s.trials), found=found, subset=len(subset))


def _ranked(s: _Search, cands: Sequence[Candidate], subset: np.ndarray,
            start: np.ndarray) -> list[tuple[Candidate, Trial]]:
    """Every candidate's trial on the subset, the best gain per layer first (positive gains only);
    ``start``: the start's logits on the subset."""
    images, labels, ref = subset_of(s.scored, subset), s.labels[subset], s.reference_logits[subset]
    base_keep = tuple(s.settings.keep_float)
    base = (start.argmax(1) == ref.argmax(1), topk_correct(start, labels)["top1"])
    measured = []
    with progress(len(cands), "keep-float: candidates measured", unit="trial") as bar:
        for c in cands:
            keep = base_keep + c.nodes
            logits = ort_logits(s.quantized(keep), images, s.threads)
            measured.append((c, s.record(measure(logits, ref, labels, keep, c.label, base))))
            bar.update(1)
    positive = [(c, t) for c, t in measured if t.gain > (0, 0) and t.gain[0] >= 0]
    return sorted(positive, key=lambda ct: (-ct[1].gain[0] / len(ct[0].nodes), -ct[1].gain[0], -ct[1].gain[1]))


def _greedy(s: _Search, ranked: Sequence[tuple[Candidate, Trial]],
            base_keep: tuple[str, ...]) -> tuple[str, ...] | None:
    budget = s.policy.int8.keep_float_max
    kept = list(base_keep)
    with progress(len(ranked), "keep-float: greedy", unit="trial") as bar:
        for c, _t in ranked:
            bar.update(1)
            new = [n for n in c.nodes if n not in kept]
            if not new or len(kept) - len(base_keep) + len(new) > budget:
                continue
            kept += new
            if s.passes(tuple(kept), "greedy", f"+ {c.label}"):
                return tuple(kept)
    return None


def _prune(s: _Search, found: tuple[str, ...], base_keep: tuple[str, ...]) -> tuple[str, ...]:
    """Drop each layer the search added while the gates still pass, the least useful alone first."""
    alone = {t.keep_float[len(base_keep):]: t.gain for t in s.trials if t.stage == "candidate"}
    added = [n for n in found if n not in base_keep]
    order = sorted(added, key=lambda n: alone.get((n,), (0, 0)))
    kept = list(found)
    with progress(len(order), "keep-float: prune", unit="trial") as bar:
        for node in order:
            bar.update(1)
            fewer = tuple(n for n in kept if n != node)
            if len(fewer) > len(base_keep) and s.passes(fewer, "prune", f"- {node}"):
                kept = list(fewer)
    return tuple(kept)


def trial_rows(result: KeepFloatResult) -> list[list[str]]:
    """The trials as table rows: stage, change, layers kept, images, top-1, top-5, drop [high], agreement, verdict."""
    rows = []
    for t in result.trials:
        drop = f"{t.drop_top1:.2f}" + ("" if math.isnan(t.drop_top1_high) else f" (<= {t.drop_top1_high:.2f})")
        verdict = f"gain {t.gain[0]:+d} agree, {t.gain[1]:+d} correct" if t.stage == "candidate" else t.verdict
        rows.append([t.stage, t.label, str(len(t.keep_float)), str(t.images), f"{t.top1:.2f}", f"{t.top5:.2f}", drop,
                     f"{t.top1_agreement:.2f}%", verdict])
    return rows
