"""Certify accuracy from results produced elsewhere: `pytest -m accuracy --predictions DIR`.

DIR is an ais_bench output folder (``<image>_0.txt|.npy|.bin`` per image, or a multi-device run's
``device<N>[_<i>]/`` folders; see harness/judge/predictions.py for the rules) or holds the ModelZoo's
``result.json``; with several models, one sub-folder per model name. The labels come from
``--imagenet-labels FILE`` (or the ``val_label.txt`` of ``--imagenet DIR``).

The verdict is decided as for a run measured here (acceptance/test_accuracy.py, issue 14):

- **paired gate**: where ``--imagenet DIR`` holds the predicted images and the model's pretrained
  weights are here, the torch reference is computed on those images (``Workbench.reference_logits``,
  cached) and joined to the predictions by image name; drop = reference - predictions on the same
  images and labels, with its interval. The reference sees this suite's preprocessing, the
  predictions whatever the other machine did: a preprocessing difference is part of the drop.
  ``--limit N`` keeps the reference to that subset of ``--imagenet``'s images (the record says on
  how many of the predicted images the gate was decided).
- **published gate**: decides on the full validation set only (recognised by content,
  harness.data.coverage); on a subset it is ``not applicable: subset of N images``. A ``result.json``
  names no images, so its figures are never recognised as the validation set.
- **reference gate** (harness.judge.reference_check): the torch reference's own accuracy on the
  paired images must be plausible beside the published figure before it judges; reference logits
  not computed in this session are first checked against torch on a fresh random sample.
- **unpaired gate** (harness.judge.unpaired): predicted images the reference was not computed on
  (not among ``--imagenet``'s) are judged too, unless the published gate decides every image (full
  validation set): the reference's accuracy on the paired images against the predictions' on the
  others, as independent samples. The record says how many were paired (``images_paired``,
  ``images_unpaired``).
- agreement with the reference is recorded (``top1_agreement``), not gated: the predictions were
  preprocessed elsewhere, and the paired gate already compares what matters, the accuracy.

When no gate can decide, the test skips saying which gate could decide and what it needs (so
``--strict-certification`` fails it); the record says it too (``gate_paired_top1``, ``verdict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acceptance._records import configuration, published, reference_provenance
from harness.data import (
    Coverage,
    DataError,
    coverage_of,
    label_file_is_canonical,
    list_dataset,
    read_labels,
)
from harness.judge.gates import (
    NOT_APPLICABLE,
    Gate,
    certify,
    paired_accuracy_gates,
    passes_by_policy,
    published_gates,
    tolerance_for,
    verdict_fields,
)
from harness.judge.metrics import wilson_interval
from harness.judge.paired import z_value
from harness.judge.predictions import (
    ReferencePairing,
    ReportedAccuracy,
    pair_with_reference,
    read_result_json,
    result_json_only,
    score_folder,
)
from harness.judge.reference_check import likely_cause, reference_gates
from harness.judge.unpaired import unpaired_gates
from harness.model.errors import WeightsNotFound
from harness.pytest.fixtures import RecordWriter
from harness.records.parts import (
    PREDICTIONS,
    Judgement,
    PredictionsInput,
    Reference,
    Scores,
    Verdicts,
)
from harness.records.schema import AccuracyRecord
from harness.run.reference import COMPUTED_HERE
from harness.run.workbench import Workbench
from harness.specs import AccuracyRef, ChipSpec, ModelSpec, Policy

AGREEMENT_NOT_GATED = ("not checked: predictions made elsewhere were preprocessed there; the paired gate compares "
                       "their accuracy with the torch reference instead")


def _folder(root: Path, spec: ModelSpec, selected: int) -> Path:
    if (root / spec.name).is_dir():
        return root / spec.name
    if selected == 1:
        return root
    pytest.skip(f"no predictions for {spec.name}: with several models, --predictions {root} needs a sub-folder "
                f"{root / spec.name}")


def _labels(workbench: Workbench, num_classes: int) -> tuple[str, dict[str, int], bool]:
    """Where the labels come from, the labels, and whether their file is the canonical full ground
    truth (by content): --imagenet-labels FILE, else --imagenet DIR in either layout (its
    val_label.txt, or an ImageFolder tree's wnid folders)."""
    cfg = workbench.cfg
    if cfg.imagenet_labels is not None:
        return (str(cfg.imagenet_labels), read_labels(cfg.imagenet_labels, num_classes),
                label_file_is_canonical(cfg.imagenet_labels))
    if cfg.imagenet is not None:
        listing = list_dataset(cfg.imagenet, num_classes=num_classes)
        canonical = listing.label_file is not None and label_file_is_canonical(listing.label_file)
        return listing.label_source, dict(zip(listing.names, listing.labels, strict=True)), canonical
    raise DataError("--predictions needs the labels: pass --imagenet-labels FILE (a ModelZoo val_label.txt) "
                    "or --imagenet DIR")


def _reference(workbench: Workbench, spec: ModelSpec) -> tuple[Sequence[str], np.ndarray, Mapping[str, Any]] | str:
    """The torch reference's logits on --imagenet's images (names, logits, origin), or why there are none."""
    cfg = workbench.cfg
    if cfg.imagenet is None:
        return "no --imagenet images to compute the torch reference on (pass --imagenet DIR with the predicted images)"
    if cfg.weights != "pretrained":
        return (f"--weights {cfg.weights}: the torch reference needs the pretrained weights the predictions were "
                "made with")
    try:
        loaded = workbench.model(spec)
    except WeightsNotFound as exc:
        prepared = workbench.dataset(spec, "imagenet")
        found = workbench.unverified_reference(spec, prepared)  # imported where the weights are not
        if found is None:
            return f"weights not available: {exc.short} (--weights-dir DIR)"
        return (prepared.listing.names, *found)
    prepared = workbench.dataset(spec, "imagenet")
    return (prepared.listing.names, *workbench.reference(loaded, prepared))


def _unverified(origin: Mapping[str, Any], policy: Policy) -> Gate:
    """``reference_verified``: inconclusive, since a reference nothing here could check may not
    decide a verdict better than that (issue 24)."""
    imported = origin.get("imported_from")
    where = f"the reference file {imported.get('file')}" if isinstance(imported, Mapping) else "the cached reference"
    return Gate(name="reference_verified", measured=0.0, threshold=0.0, verdict="inconclusive",
                passed=passes_by_policy("inconclusive", policy),
                summary="the reference could not be checked here (its weights are not here: --weights-dir DIR)",
                detail=(f"reference not verified: the weights are not here, so torch could not recompute a sample of "
                        f"{where} (computed by torch {origin.get('torch')} on {origin.get('computed_host')}); "
                        "a verdict "
                        "resting on it is at best inconclusive: pass --weights-dir with the checkpoint to verify it"))


def _judge_pairing(pairing: ReferencePairing, coverage: Coverage, label_path: str,
                   canonical: bool, spec: ModelSpec, policy: Policy, origin: Mapping[str, Any]) -> list[Gate]:
    """The reference's own gate on the paired images, the paired gates, and, unless the published
    gate decides every predicted image (full validation set), the unpaired gates for the rest."""
    tolerance = tolerance_for(policy, spec)
    paired_coverage = coverage if not pairing.unpaired else coverage_of(
        pairing.names, pairing.labels.tolist(), chosen="the predicted images also in --imagenet",
        label_source=label_path, canonical_labels=canonical)
    gates = reference_gates(pairing.reference, spec.published, paired_coverage, tolerance, policy.reference,
                            policy.accuracy.confidence, cause=likely_cause(pairing.reference_logits, pairing.labels))
    gates += paired_accuracy_gates(pairing.reference_correct, pairing.candidate_correct, policy, tolerance,
                                   candidate="the predictions")
    if pairing.unpaired and not coverage.full:
        gates += unpaired_gates(pairing.reference_correct, pairing.unpaired_correct, policy, tolerance)
    if origin.get("origin") != COMPUTED_HERE and origin.get("check") is None:
        gates.append(_unverified(origin, policy))
    return gates


def _stated_gates(reported: ReportedAccuracy, ref: AccuracyRef, confidence: float) -> list[Gate]:
    """The published gates of a result.json: not applicable (its images cannot be recognised), with
    the stated figures' Wilson interval beside the published ones, for information."""
    acc = reported.as_accuracy()
    gates = []
    for metric, got, correct, published_figure in (("top1", reported.top1, acc.correct1, ref.top1),
                                                    ("top5", reported.top5, acc.correct5, ref.top5)):
        if got is None or published_figure is None:
            continue
        low, high = wilson_interval(correct, acc.count, z_value(confidence))
        gates.append(Gate(
            name=f"published_{metric}", measured=got, threshold=published_figure, passed=True,
            verdict=f"{NOT_APPLICABLE}: result.json names no images",
            values={f"{metric}_low95": low, f"{metric}_high95": high},
            detail=(f"stated {got:.3f}% on {acc.count:,} images that result.json does not name, so they cannot be "
                    f"recognised as the validation set; {confidence:.0%} Wilson interval [{low:.3f}, {high:.3f}]% "
                    f"beside published {published_figure:.3f}% ({ref.source}), for information only")))
    return gates


@pytest.mark.accuracy
@pytest.mark.requires_option("--predictions")
def test_predictions_accuracy(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec,
    pytestconfig: pytest.Config, record: RecordWriter,
) -> None:
    """Top-1/top-5 of predictions made on another machine: the paired gate against the torch
    reference on the same images, the published gate on the full validation set."""
    root = pytestconfig.getoption("--predictions")
    if not root:
        pytest.skip("no --predictions DIR given (an ais_bench output folder or a ModelZoo result.json to certify)")
    from harness.pytest.state import session_state

    folder = _folder(Path(root).resolve(), model_spec, len(session_state(pytestconfig).models))
    record.start(AccuracyRecord(config=configuration(workbench, model_spec, chip_spec, source=PREDICTIONS),
                                published=published(model_spec),
                                predictions=PredictionsInput(figures_from=f"predictions {folder}")))
    published_ref = model_spec.published
    tolerance, confidence = tolerance_for(policy, model_spec), policy.accuracy.confidence
    not_checked = {"top1_agreement": AGREEMENT_NOT_GATED}
    if published_ref.top5 is None:
        not_checked["published_top5"] = "not checked: no published top-5 in " + published_ref.source
    stated = result_json_only(folder)
    paired_counts: dict[str, int] = {}
    if stated is not None:
        reported = read_result_json(stated)
        record.update(predictions=replace(record.current.predictions, source_format="result.json",
                                          note="figures as stated by result.json: no logits to re-score"),
                      scores=Scores(images=reported.count, top1=reported.top1, top5=reported.top5))
        if reported.top5 is None and published_ref.top5 is not None:
            not_checked["published_top5"] = "not checked: result.json states no Top5 accuracy"
        gates = _stated_gates(reported, published_ref, confidence)
        covered = {"dataset_coverage": "unknown", "dataset_coverage_detail": (
            f"unknown: result.json states {reported.count:,} images and names none, so they cannot be recognised "
            "as (a part of) the ILSVRC2012 validation set")}
        paired_why = "result.json states figures only: no per-image predictions to pair with the torch reference"
        what, scope = f"{model_spec.name} figures stated by {stated}", covered["dataset_coverage_detail"]
        short = f"{reported.count:,} images (unknown)"
    else:
        label_path, labels, canonical = _labels(workbench, model_spec.num_classes)
        score = score_folder(folder, labels, model_spec.num_classes, workbench.cfg.on_label_mismatch)
        acc = score.accuracy
        chosen = f"the images predicted in {folder}" + (
            f", leaving out {score.missing} labelled images without a prediction (--on-label-mismatch intersect)"
            if score.missing else "")
        coverage = coverage_of(score.names, score.labels.tolist(), chosen=chosen, label_source=label_path,
                               canonical_labels=canonical)
        covered = coverage.as_record()
        record.update(
            predictions=replace(
                record.current.predictions,
                source_format="ais_bench " + ",".join(f"{k}:{v}" for k, v in sorted(score.formats.items())),
                labels=str(label_path), other_outputs_ignored=score.other_outputs_ignored,
                # a multi-device ais_bench run: its device<N>[_<i>] folders, read as one
                device_folders=",".join(score.device_folders) or None),
            scores=Scores(images=acc.count, skipped_missing=score.missing, skipped_unlabeled=score.extra,
                          top1=round(acc.top1, 4), top5=round(acc.top5, 4)))
        gates = published_gates(acc, published_ref, coverage, tolerance, confidence)
        reference = _reference(workbench, model_spec)
        pairing = None if isinstance(reference, str) else pair_with_reference(score, *reference[:2])
        paired_why = reference if isinstance(reference, str) else ""
        if pairing is None and not paired_why:
            paired_why = (f"none of the {acc.count:,} predicted images is among the {len(reference[0]):,} images of "
                          f"--imagenet {workbench.cfg.imagenet}")
        elif pairing is not None and not isinstance(reference, str):
            gates = _judge_pairing(pairing, coverage, str(label_path), canonical, model_spec, policy,
                                   reference[2]) + gates
            paired_counts = {"images_paired": pairing.reference.count, "images_unpaired": len(pairing.unpaired)}
            mine = {k: 100.0 * float(np.mean(v)) for k, v in pairing.candidate_correct.items()}
            ref = pairing.reference
            record.update(reference=Reference(
                reference_top1=round(ref.top1, 4), reference_top5=round(ref.top5, 4),
                delta_top1_vs_reference=round(mine["top1"] - ref.top1, 4),
                delta_top5_vs_reference=round(mine["top5"] - ref.top5, 4),
                top1_agreement=round(pairing.agreement.top1_agreement, 4),
                max_abs_diff=float(f"{pairing.agreement.max_abs_diff:.4g}"), **reference_provenance(reference[2])))
        what, scope = f"{model_spec.name} predictions from {folder}", coverage.describe()
        short = coverage.short()
        if pairing is not None and pairing.unpaired:
            paired_on = (f"paired with the torch reference on {pairing.reference.count:,} of {acc.count:,} images: "
                         f"{len(pairing.unpaired):,} predicted images are not among --imagenet's (e.g. "
                         f"{', '.join(pairing.unpaired[:3])}; --limit keeps the reference to its subset)")
            record.update(predictions=replace(record.current.predictions, note=paired_on))
            scope += f"; {paired_on}"
    if paired_why:
        not_checked.update({g: f"not checked: {paired_why}" for g in ("paired_top1", "paired_top5")})
    record.update(judgement=Judgement.of(gates, not_checked),
                  verdicts=Verdicts.of({**verdict_fields(gates), **paired_counts}, covered))
    if not any(g.decided for g in gates):
        published_why = "; ".join(f"{g.name} {g.verdict}" for g in gates) or "no published figure"
        pytest.skip(f"no gate could decide: paired gate not run: {paired_why}; published gate decides on the full "
                    f"validation set only ({published_why})\n{what} ({scope})")
    certify(gates, f"{what} ({scope})" + (f"; paired gate not run: {paired_why}" if paired_why else ""), short)
