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
from typing import Callable

import pytest

from harness.data import DataError, list_dataset, read_labels
from harness.judge.gates import accuracy_gates, failures
from harness.judge.predictions import (
    read_result_json,
    result_json_only,
    score_folder,
)
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
def test_predictions_accuracy(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec,
    pytestconfig: pytest.Config, record: Callable[..., None],
) -> None:
    """Top-1/top-5 of predictions made on another machine vs the published figures."""
    root = pytestconfig.getoption("--predictions")
    if not root:
        pytest.skip("no --predictions DIR given (an ais_bench output folder or a ModelZoo result.json to certify)")
    from harness.pytest.plugin import selection

    folder = _folder(Path(root).resolve(), model_spec, len(selection(pytestconfig)["models"]))
    record(kind="accuracy", model=model_spec.name, chip=chip_spec.name, figures_from=f"predictions {folder}",
           published_top1=model_spec.published.top1, published_top5=model_spec.published.top5,
           published_source=model_spec.published.source, gate_top1_agreement="not checked: no torch reference "
           "for predictions made elsewhere")
    published = model_spec.published
    stated = result_json_only(folder)
    if stated is not None:
        reported = read_result_json(stated)
        acc = reported.as_accuracy()
        record(source_format="result.json", images=reported.count, top1=reported.top1, top5=reported.top5,
               note="figures as stated by result.json: no logits to re-score")
        if reported.top5 is None:
            published = replace(published, top5=None)  # no top-5 gate
            record(gate_top5="not checked: result.json states no Top5 accuracy")
    else:
        label_path, labels = _labels(workbench, model_spec.num_classes)
        score = score_folder(folder, labels, model_spec.num_classes, workbench.cfg.on_label_mismatch)
        acc = score.accuracy
        record(source_format="ais_bench " + ",".join(f"{k}:{v}" for k, v in sorted(score.formats.items())),
               labels=str(label_path), images=acc.count, top1=round(acc.top1, 4), top5=round(acc.top5, 4),
               skipped_missing=score.missing, skipped_unlabeled=score.extra,
               other_outputs_ignored=score.other_outputs_ignored)
        if score.device_folders:  # a multi-device ais_bench run: its device<N>[_<i>] folders, read as one
            record(device_folders=",".join(score.device_folders))
    gates = accuracy_gates(acc, published, policy)
    record(**{f"gate_{g.name}": "pass" if g.passed else "fail" for g in gates})
    problems = failures(gates)
    assert not problems, f"{model_spec.name} predictions from {folder} are not certified:\n{problems}"
