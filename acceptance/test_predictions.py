"""Certify accuracy from results produced elsewhere: `pytest -m accuracy --predictions DIR`.

DIR is an ais_bench output folder (``<image>_0.txt|.npy|.bin`` per image, or a multi-device run's
``device<N>[_<i>]/`` folders; see harness/judge/predictions.py for the rules) or holds the ModelZoo's
``result.json``; with several models, one sub-folder per model name. The labels come from
``--imagenet-labels FILE`` (or the ``val_label.txt`` of ``--imagenet DIR``). The gates are the
accuracy gates of every run; there is no torch reference to agree with, so the agreement gate is
recorded as not checked.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from acceptance._records import configuration, published
from harness.data import DataError, list_dataset, read_labels
from harness.judge.gates import accuracy_gates, failures
from harness.judge.predictions import (
    read_result_json,
    result_json_only,
    score_folder,
)
from harness.pytest.fixtures import RecordWriter
from harness.records.parts import PREDICTIONS, Judgement, PredictionsInput, Scores
from harness.records.schema import AccuracyRecord
from harness.run.workbench import Workbench
from harness.specs import ChipSpec, ModelSpec, Policy


def _folder(root: Path, spec: ModelSpec, selected: int) -> Path:
    if (root / spec.name).is_dir():
        return root / spec.name
    if selected == 1:
        return root
    pytest.skip(f"no predictions for {spec.name}: with several models, --predictions {root} needs a sub-folder "
                f"{root / spec.name}")


def _labels(workbench: Workbench, num_classes: int) -> tuple[str, dict[str, int]]:
    """Where the labels come from and the labels: --imagenet-labels FILE, else --imagenet DIR in
    either layout (its val_label.txt, or an ImageFolder tree's wnid folders)."""
    cfg = workbench.cfg
    if cfg.imagenet_labels is not None:
        return str(cfg.imagenet_labels), read_labels(cfg.imagenet_labels, num_classes)
    if cfg.imagenet is not None:
        listing = list_dataset(cfg.imagenet, num_classes=num_classes)
        return listing.label_source, dict(zip(listing.names, listing.labels))
    raise DataError("--predictions needs the labels: pass --imagenet-labels FILE (a ModelZoo val_label.txt) "
                    "or --imagenet DIR")


@pytest.mark.accuracy
@pytest.mark.requires_option("--predictions")
def test_predictions_accuracy(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec,
    pytestconfig: pytest.Config, record: RecordWriter,
) -> None:
    """Top-1/top-5 of predictions made on another machine vs the published figures."""
    root = pytestconfig.getoption("--predictions")
    if not root:
        pytest.skip("no --predictions DIR given (an ais_bench output folder or a ModelZoo result.json to certify)")
    from harness.pytest.plugin import selection

    folder = _folder(Path(root).resolve(), model_spec, len(selection(pytestconfig)["models"]))
    not_checked = {"top1_agreement": "not checked: no torch reference for predictions made elsewhere"}
    record.start(AccuracyRecord(config=configuration(workbench, model_spec, chip_spec, source=PREDICTIONS),
                                published=published(model_spec),
                                predictions=PredictionsInput(figures_from=f"predictions {folder}")))
    published_ref = model_spec.published
    stated = result_json_only(folder)
    if stated is not None:
        reported = read_result_json(stated)
        acc = reported.as_accuracy()
        record.update(predictions=replace(record.current.predictions, source_format="result.json",
                                          note="figures as stated by result.json: no logits to re-score"),
                      scores=Scores(images=reported.count, top1=reported.top1, top5=reported.top5))
        if reported.top5 is None:
            published_ref = replace(published_ref, top5=None)  # no top-5 gate
            not_checked["top5"] = "not checked: result.json states no Top5 accuracy"
    else:
        label_path, labels = _labels(workbench, model_spec.num_classes)
        score = score_folder(folder, labels, model_spec.num_classes, workbench.cfg.on_label_mismatch)
        acc = score.accuracy
        record.update(
            predictions=replace(
                record.current.predictions,
                source_format="ais_bench " + ",".join(f"{k}:{v}" for k, v in sorted(score.formats.items())),
                labels=str(label_path), other_outputs_ignored=score.other_outputs_ignored,
                # a multi-device ais_bench run: its device<N>[_<i>] folders, read as one
                device_folders=",".join(score.device_folders) or None),
            scores=Scores(images=acc.count, skipped_missing=score.missing, skipped_unlabeled=score.extra,
                          top1=round(acc.top1, 4), top5=round(acc.top5, 4)))
    gates = accuracy_gates(acc, published_ref, policy)
    record.update(judgement=Judgement.of(gates, not_checked))
    problems = failures(gates)
    assert not problems, f"{model_spec.name} predictions from {folder} are not certified:\n{problems}"
