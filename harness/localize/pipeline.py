"""Localisation from end to end: select the images, compare every tensor (or bisect), summarise.

:func:`localize` is the library entry point (the ``localize`` command and the suite's
``--localize-on-fail`` hook call it, the latter through :func:`localize_failure`). Steps:

1. the first pass (:mod:`.select`): reference and candidate final outputs on every image; the
   ``count`` most divergent images are kept;
2. ``method="auto"``: the expose method (:mod:`.expose`) when the candidate can expose tensors and
   exposing them leaves its final error as it was (within ``exposure_tolerance``); otherwise the
   bisect method (:mod:`.bisect`). ``expose`` or ``bisect`` force one;
3. the rows (one per node output, topological order; :mod:`.compare` metrics where compared), the
   first divergent node, the local / accumulated classification and the worst nodes (the
   :class:`~.summary.LocalizationSummary`);
4. with ``out_dir``: ``layers.csv`` and ``summary.json`` (:mod:`.write`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.errors import HarnessError, UsageError
from harness.localize.bisect import PrefixExtractor, search
from harness.localize.candidates import backend_target
from harness.localize.compare import (
    Metrics,
    TensorStats,
    classify,
    compare,
    over_threshold,
)
from harness.localize.graph import (
    Site,
    final_outputs,
    image_input,
    load_onnx,
    sites_of,
    topological_nodes,
)
from harness.localize.images import Images
from harness.localize.select import select
from harness.localize.summary import LayerRow, LocalizationSummary
from harness.localize.targets import Target, reference_target
from harness.localize.thresholds import Thresholds, load_thresholds
from harness.localize.write import write
from harness.progress import progress

METHODS = ("auto", "expose", "bisect")
EXPOSURE_FLOOR = 1e-4
WORST = 5


class NothingCompared(HarnessError, RuntimeError):
    """No tensor of the reference could be compared with the candidate (e.g. no shared tensor names)."""


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def _first_pass(ref: Target, cand: Target, ref_model: onnx.ModelProto, images: Images, dtype: np.dtype,
                batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and candidate final outputs (the graph's first output) on every image."""
    out_name = final_outputs(ref_model)[0]
    ref_run = ref.compile(ref_model, None, batch)
    cand_run = cand.compile(cand.source, None, batch)
    refs, cands = [], []
    with progress(len(images), "localize: first pass (final outputs)") as bar:
        for idx in _chunks(len(images), batch):
            x = images.batch(idx, dtype)
            refs.append(np.array(ref_run(x)[out_name]))
            got = cand_run(x)
            cands.append(np.array(got[out_name] if out_name in got else next(iter(got.values()))))
            bar.update(len(idx))
    return np.concatenate(refs), np.concatenate(cands)


def _metrics(row: LayerRow) -> Metrics:
    """A compared row's metrics (rows without metrics are never compared)."""
    assert row.metrics is not None
    return row.metrics


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| over everything (inf when a holds non-finite values)."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if not np.isfinite(a64).all():
        return math.inf
    return float(np.linalg.norm(a64 - b64) / max(float(np.linalg.norm(b64)), 1e-30))


def _expose(ref: Target, cand: Target, ref_model: onnx.ModelProto, names: Sequence[str], x: np.ndarray,
            batch: int) -> tuple[dict[str, TensorStats], np.ndarray | None]:
    """Stats of every tensor both runs computed, and the exposed candidate's final output."""
    out_name = final_outputs(ref_model)[0]
    ref_run = ref.compile(ref_model, names, batch)
    cand_run = cand.compile(cand.source, names, batch)
    stats: dict[str, TensorStats] = {}
    finals = []
    with progress(len(x), "localize: every tensor (expose)") as bar:
        for idx in _chunks(len(x), batch):
            r, c = ref_run(x[idx.start:idx.stop]), cand_run(x[idx.start:idx.stop])
            for name in names:
                if name in r and name in c:
                    stats.setdefault(name, TensorStats()).update(r[name], c[name])
            if out_name in c:
                finals.append(np.array(c[out_name]))
            bar.update(len(idx))
    return stats, (np.concatenate(finals) if finals else None)


def _bisect(ref: Target, cand: Target, ref_model: onnx.ModelProto, sites: list[Site], x: np.ndarray,
            batch: int, thresholds: Thresholds, exhaustive: bool) -> dict[str, TensorStats]:
    """Stats of the tensors bisection probed (each a prefix sub-graph compiled on both targets)."""
    ref_prefixes, cand_prefixes = PrefixExtractor(ref_model), PrefixExtractor(cand.source)
    cand_tensors = {o for n in cand.source.graph.node for o in n.output}
    stats: dict[str, TensorStats] = {}

    estimate = len(sites) if exhaustive else int(math.log2(len(sites) + 1)) + 8  # the search's usual cost
    with progress(estimate, "localize: prefix sub-graphs (bisect)", unit="probe") as bar:
        def probe(site: Site) -> tuple[Metrics, bool] | None:
            if site.output not in cand_tensors:
                return None
            ref_run = ref.compile(ref_prefixes.prefix(site.output), None, batch)
            cand_run = cand.compile(cand_prefixes.prefix(site.output), None, batch)
            s = TensorStats()
            for idx in _chunks(len(x), batch):
                xb = x[idx.start:idx.stop]
                r, c = ref_run(xb), cand_run(xb)
                s.update(r[site.output], c[site.output] if site.output in c else next(iter(c.values())))
            stats[site.output] = s
            bar.update(1)
            m = s.metrics()
            return m, bool(over_threshold(m, thresholds))

        search(sites, probe, exhaustive=exhaustive)
    return stats


def localize(
    reference: Path | onnx.ModelProto,
    candidate: Target,
    images: Images,
    *,
    count: int | None = None,
    thresholds: Thresholds | None = None,
    method: str = "auto",
    out_dir: Path | None = None,
    batch: int = 8,
    exhaustive: bool = False,
    reference_label: str | None = None,
    outputs: tuple[np.ndarray, np.ndarray] | None = None,
) -> LocalizationSummary:
    """Compare ``candidate`` with the ``reference`` ONNX (run on ONNX Runtime, CPU, fp32) layer by
    layer on the most divergent of ``images``; write layers.csv and summary.json into ``out_dir``.

    ``count``: images compared (default: the policy's ``images``, 16); ``method``: auto, expose or
    bisect; ``exhaustive``: bisection probes every tensor (slow: one compilation per node);
    ``outputs``: (reference, candidate) final outputs of every image, in ``images``' order, when the
    caller has them (a failed accuracy run has): the first pass is then skipped.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"localisation method {method!r}: expected one of {', '.join(METHODS)}")
    thresholds = thresholds or load_thresholds()
    count = count or thresholds.images
    if len(images) == 0:
        raise UsageError("no images to localise on")
    ref_model = reference if isinstance(reference, onnx.ModelProto) else load_onnx(Path(reference))
    label = reference_label or (str(reference) if not isinstance(reference, onnx.ModelProto) else "reference ONNX")
    _name, elem = image_input(ref_model)
    dtype = np.dtype(np.uint8 if elem == onnx.TensorProto.UINT8 else np.float32)
    sites = sites_of(ref_model)
    comparable = [s for s in sites if not s.constant]
    ref = reference_target(ref_model)

    if outputs is not None:
        ref_final, cand_final = (np.asarray(o) for o in outputs)
        if len(ref_final) != len(images) or len(cand_final) != len(images):
            raise UsageError(f"outputs for {len(ref_final)} and {len(cand_final)} images, expected {len(images)}")
    else:
        ref_final, cand_final = _first_pass(ref, candidate, ref_model, images, dtype, batch)
    chosen = select(ref_final, cand_final, count)
    x = images.batch(chosen.indices, dtype)
    sel = np.asarray(chosen.indices)
    plain_error = _distance(cand_final[sel], ref_final[sel])

    exposure: dict[str, float] | None = None
    stats: dict[str, TensorStats] = {}
    use = "bisect" if method == "bisect" or not candidate.can_expose else "expose"
    reason = ("asked for (--method bisect)" if method == "bisect" else
              f"{candidate.label} cannot expose intermediate tensors" if not candidate.can_expose else
              "asked for (--method expose)" if method == "expose" else "")
    if use == "expose":
        stats, exposed_final = _expose(ref, candidate, ref_model, [s.output for s in comparable], x, batch)
        exposed_error = _distance(exposed_final, ref_final[sel]) if exposed_final is not None else math.inf
        exposure = {"final_distance_plain": plain_error, "final_distance_exposed": exposed_error}
        # The floor: below a relative L2 of 1e-4 (cosine ~ 1 - 5e-9) fusion noise is not a change.
        changed = abs(exposed_error - plain_error) > thresholds.exposure_tolerance * plain_error + EXPOSURE_FLOOR
        if method == "auto":
            if changed:
                use, stats = "bisect", {}
                reason = (f"exposing every tensor changed the candidate's final error from {plain_error:.3g} to "
                          f"{exposed_error:.3g} (relative L2), beyond exposure_tolerance "
                          f"{thresholds.exposure_tolerance:g}: fusions matter, prefix sub-graphs compiled instead")
            else:
                reason = (f"exposing every tensor left the candidate's final error at {exposed_error:.3g} "
                          f"(plain {plain_error:.3g}, relative L2), within exposure_tolerance "
                          f"{thresholds.exposure_tolerance:g}")
        elif changed:
            reason += f"; note: exposing changed the final error from {plain_error:.3g} to {exposed_error:.3g}"
    if use == "bisect":
        stats = _bisect(ref, candidate, ref_model, comparable, x, batch, thresholds, exhaustive)

    rows = []
    for s in sites:
        st = stats.get(s.output) if not s.constant else None
        m = st.metrics() if st is not None and st.elements else None
        shape = (len(x), *st.shape) if st is not None and st.shape is not None else None
        rows.append(LayerRow(s.index, s.node, s.op, s.output, shape, m,
                             over_threshold(m, thresholds) if m is not None else ()))
    compared = [r for r in rows if r.metrics is not None]
    if not compared:
        raise NothingCompared(
            f"no tensor of the reference was compared with {candidate.label}: do the two graphs share tensor "
            "names? (a candidate ONNX must be the reference with changed numbers, not a re-export)"
        )
    first_pos = next((i for i, r in enumerate(compared) if r.over), None)
    first = compared[first_pos] if first_pos is not None else None
    input_cosine = None
    if first is not None:
        node = topological_nodes(ref_model)[first.index]
        by_output = {r.output: r for r in compared}
        cosines = [_metrics(by_output[t]).cosine for t in node.input if t in by_output]
        input_cosine = min(cosines) if cosines else 1.0
    worst = sorted(compared, key=lambda r: (not math.isnan(_metrics(r).cosine), _metrics(r).cosine, r.index))[:WORST]
    summary = LocalizationSummary(
        reference=label,
        candidate=candidate.label,
        method=use,
        method_reason=reason,
        first_divergent_node=first.node if first else None,
        first_divergent_op=first.op if first else None,
        first_divergent_output=first.output if first else None,
        first_divergent_index=first.index if first else None,
        first_divergent_cosine=first.metrics.cosine if first and first.metrics else None,
        first_divergent_reasons=first.reasons if first else (),
        input_cosine=input_cosine,
        classification=classify([(_metrics(r), bool(r.over)) for r in compared], first_pos, thresholds),
        thresholds=thresholds.as_dict(),
        images=tuple(images.names[i] for i in chosen.indices),
        images_considered=len(images),
        top1_disagreements=chosen.disagreements,
        final_cosine=compare(ref_final[sel], cand_final[sel]).cosine,
        nodes=len({s.index for s in sites}),
        tensors_compared=len(compared),
        worst_nodes=tuple(worst),
        cosine_by_depth=tuple((r.index, _metrics(r).cosine) for r in compared),
        rows=tuple(rows),
        candidate_details=candidate.describe(),
        exposure_check=exposure,
    )
    if out_dir is not None:
        summary = write(summary, Path(out_dir), seconds=time.perf_counter() - started)
    else:
        summary = replace(summary, seconds=time.perf_counter() - started)
    return summary


def localize_failure(
    onnx_path: Path,
    backend: str,
    precision: str,
    prepared: Any,
    out_dir: Path | None,
    *,
    backend_options: Mapping[str, str] | None = None,
    threads: int | None = None,
    count: int | None = None,
    method: str = "auto",
    thresholds: Thresholds | None = None,
    outputs: tuple[np.ndarray, np.ndarray] | None = None,
) -> LocalizationSummary:
    """For the suite, on a failed gate: the ONNX the chip compiled (``onnx_path``), compiled again
    for ``backend`` at ``precision`` (with the chip's ``backend_options``), against that ONNX on
    ONNX Runtime CPU fp32, on the most divergent of ``prepared``'s images (a
    :class:`harness.data.PreparedDataset`). ``outputs``: the failed run's (reference, candidate)
    logits of every image of ``prepared``, in its order, to skip the first pass (the torch
    reference's logits do: they only rank the images). Raises NotApplicable (a skip) where the
    backend cannot run here."""
    model = load_onnx(Path(onnx_path))
    images = Images.from_prepared(prepared)
    with ExitStack() as stack:
        target = backend_target(model, backend, precision, images.input_shape, backend_options, threads)
        stack.callback(target.close)
        return localize(model, target, images, count=count, thresholds=thresholds, method=method,
                        out_dir=out_dir, reference_label=str(onnx_path), outputs=outputs)
