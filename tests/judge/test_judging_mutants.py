"""Issue 24 ("No wrong PASS"): semantic mutants of the judging code that no test noticed.

Each test below fails for one plausible developer's mistake (docs/mutation.md, "Issue 24's
semantic mutants", names the mistake and shows it killed) and passes on the code as it is. All are
data-free: no ImageNet, no model built; logits and counts are made up in the test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from harness.data.coverage import Coverage
from harness.judge.gates import (
    agreement_verdict_gate,
    paired_accuracy_gates,
    published_gates,
    verdict_fields,
)
from harness.judge.metrics import Accuracy, accuracy, parity
from harness.judge.paired import agreement_verdict
from harness.judge.predictions import (
    PredictionScore,
    PredictionsError,
    ReportedAccuracy,
    pair_with_reference,
    score_folder,
)
from harness.records.results import results_of
from harness.records.schema import PerfRecord, record_from_json
from harness.report.build import terminal_table
from harness.report.tables import key_figure, summary_rows
from harness.report.throughput import throughput_table
from harness.run import workbench as workbench_mod
from harness.run.workbench import RunConfig, Workbench
from harness.specs import AccuracyRef, load_chips, load_models, load_policy
from harness.specs.policy import AccuracyTolerance

POLICY = load_policy()  # absolute 1 point, 95%, Tango, inconclusive fails, agreement >= 99%
FULL = Coverage("full", 50000, 50000, "all of them", "SHA-256 ... matches fixtures/imagenet_val.toml")
CLASSES = 10


def correctness(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and candidate per-image correctness of the paired table (a, b, c, d): both right,
    only the reference right, only the candidate right, both wrong."""
    ref = np.array([True] * (a + b) + [False] * (c + d))
    got = np.array([True] * a + [False] * b + [True] * c + [False] * d)
    return ref, got


def ranked(*order: int) -> np.ndarray:
    """One image's logits over CLASSES classes: ``order`` first (best first), then the others."""
    rest = [k for k in range(CLASSES) if k not in order]
    row = np.zeros(CLASSES, dtype=np.float32)
    for rank, k in enumerate([*order, *rest]):
        row[k] = float(CLASSES - rank)
    return row


# --------------------------------------------------------------------------------------------
# 1. verdict_fields: published_gate from the published gates only


def test_published_gate_field_ignores_a_failing_paired_gate_beside_it() -> None:
    """Catches published_gate computed from every gate (the paired fail) rather than the published ones."""
    ref, got = correctness(7600, 300, 0, 2100)  # drop 3 points on 10,000 images
    paired_fail = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY)
    acc = Accuracy(count=50000, top1=76.0, top5=93.0, correct1=38000, correct5=46500)
    published = published_gates(acc, AccuracyRef(76.13, 92.86, "paper"), FULL, AccuracyTolerance(points=1.0))
    assert [g.verdict for g in paired_fail] == ["fail"] and [g.verdict for g in published] == ["pass", "pass"]
    fields = verdict_fields([*paired_fail, *published])
    assert fields["verdict"] == "fail"
    assert fields["published_gate"] == "pass"


# --------------------------------------------------------------------------------------------
# 2. paired_accuracy_gates: the relative rule takes the fraction of the reference's accuracy


def test_relative_tolerance_is_taken_of_the_reference_not_the_compiled_accuracy() -> None:
    """Catches the relative rule's fraction taken of the compiled model's accuracy (79.41%) instead
    of the reference's (80%): 0.7941 points allowed instead of 0.8, and the verdict turns inconclusive."""
    # 10,000 images: reference right on 8,000 (80%), compiled on 7,941 (79.41%); drop 0.59 points,
    # Tango 95% upper bound 0.798: below 0.8 (pass), above 0.7941 (would be inconclusive).
    ref, got = correctness(7921, 79, 20, 1980)
    (gate,) = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY,
                                    AccuracyTolerance(rule="relative", fraction=0.99))
    allowed = (1.0 - 0.99) * 80.0
    assert gate.threshold == pytest.approx(allowed, abs=1e-12)
    assert gate.values["tolerance_top1_points"] == pytest.approx(allowed, abs=1e-12)
    assert gate.verdict == "pass" and "tolerance 0.800 points" in gate.detail
    high = gate.values["paired_drop_top1_high95"]
    assert isinstance(high, float) and (1.0 - 0.99) * 79.41 < high < allowed  # the case tells the two apart


# --------------------------------------------------------------------------------------------
# 3. agreement_verdict_gate: a percentage back to a count is rounded, not truncated


@pytest.mark.parametrize(("agree", "images", "minimum", "truncated_verdict"), [
    (4881, 5000, 98.0, "fail"),   # 100 * (4881 / 5000) = 97.61999999999999: x 50 = 4880.999...
    (204, 208, 99.0, "fail"),     # at the default 99% minimum: 204 of 208 inconclusive, 203 fail
])
def test_agreement_count_is_recovered_exactly_from_the_percentage(agree: int, images: int, minimum: float,
                                                                   truncated_verdict: str) -> None:
    """Catches ``int()`` instead of ``round()`` turning the agreement percentage back into a count."""
    ref = np.tile(ranked(0, 1), (images, 1))
    got = ref.copy()
    got[agree:] = ranked(1, 0)  # the last images - agree rows disagree at top-1
    measured = parity(ref, got)
    assert measured.top1_agreement * images / 100.0 < agree  # the float is just below the count
    gate = agreement_verdict_gate(
        measured,
        dataclasses.replace(POLICY, accuracy=dataclasses.replace(POLICY.accuracy, agreement_min_top1=minimum)),
        "torch",
    )
    assert gate.verdict == "inconclusive"
    assert agreement_verdict(agree - 1, images, minimum).verdict == truncated_verdict  # what truncation would say
    assert gate.values["agreement_top1"] == 100.0 * agree / images
    assert gate.values["images_needed_agreement"] == agreement_verdict(agree, images, minimum).images_needed
    assert f"on {agree:,} of {images:,} images" in gate.detail


# --------------------------------------------------------------------------------------------
# 4. images_needed of the agreement verdict: the count at m images is rounded, not floored


def _first_deciding_size(agree: int, images: int, minimum: float, to_count: Any) -> int:
    """Solved here, apart from harness.judge: the smallest m > images at which agree/images of m
    images (``to_count`` of the exact fraction) has a 95% Wilson interval wholly on one side of
    ``minimum``, by the textbook formula and a plain scan."""
    z = NormalDist().inv_cdf(0.975)
    for m in range(images + 1, 100 * images):
        k = to_count(Fraction(agree * m, images))
        p = k / m
        centre, spread = p + z * z / (2 * m), z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
        low, high = 100 * (centre - spread) / (1 + z * z / m), 100 * (centre + spread) / (1 + z * z / m)
        if low >= minimum or (high < minimum and k < m):
            return m
    raise AssertionError("no size decides")


def test_agreement_images_needed_rounds_the_count_at_each_size() -> None:
    """Catches the agreement count at m images floored instead of rounded (299/300: 878, not 726)."""
    half_up = lambda x: math.floor(x + Fraction(1, 2))  # noqa: E731
    expected = _first_deciding_size(299, 300, 99.0, half_up)
    assert expected == 726 and _first_deciding_size(299, 300, 99.0, math.floor) == 878  # the case tells them apart
    v = agreement_verdict(299, 300, 99.0)
    assert v.verdict == "inconclusive" and v.images_needed == expected


# --------------------------------------------------------------------------------------------
# 5. The report's figures of a card of several chips: per card, never per chip


def _ascend310_perf() -> PerfRecord:
    """A sweep on one chip of a four-chip Ascend 310 card: 100 and 150 images/s per chip."""
    record = record_from_json({
        "run_id": "r310", "test": "acceptance/test_perf.py::test_throughput[efficientnet_lite0-Ascend310]",
        "outcome": "passed", "phase": "call", "time": "2026-11-30T12:00:00+0000", "host": "atlas", "kind": "perf",
        "model": "efficientnet_lite0", "chip": "Ascend310", "backend": "ascend", "precision": "fp16",
        "input_dtype": "float32", "source": "measured", "scenario": "single-stream", "figures_from": "measured here",
        "images_per_s_bs1": 100.0, "images_per_s_bs8": 150.0, "best_batch": 8, "best_images_per_s": 150.0,
        "best_images_per_s_per_card": 600.0, "unit": "per_chip", "clock": "device_compute", "devices_per_card": 4,
    })
    assert isinstance(record, PerfRecord)
    return record


def test_summary_key_figure_of_a_310_card_is_per_card() -> None:
    """Catches the summary's per-card figure taken from the per-chip one (4x low on a 310 card)."""
    record = _ascend310_perf()
    assert load_chips()["Ascend310"].devices_per_card == 4
    assert key_figure(record) == "best 600 images/s per card (bs8)"
    results = results_of([record], "results.jsonl")
    (row,) = summary_rows(results)
    assert row[3] == "best 600 images/s per card (bs8)"
    assert "best 600 images/s per card (bs8)" in terminal_table(results)


def test_throughput_column_of_a_310_card_is_per_card() -> None:
    """Catches the throughput table's measured column showing the per-chip figures under 'per card'."""
    table = throughput_table(results_of([_ascend310_perf()], "results.jsonl"), "efficientnet_lite0")
    assert table is not None
    column = table.column("Ascend310")
    assert column.figures == {1: 400.0, 8: 600.0} and column.best == (8, 600.0)
    assert "per-chip figures x 4 chips per card" in column.notes


# --------------------------------------------------------------------------------------------
# 6-7. Predictions made elsewhere joined to the reference: by name, each side scored by its own logits


def _score() -> PredictionScore:
    """Five images scored from a folder: the candidate right at top-1 on a and b, within top-5 on c,
    wrong on d and f (f has no reference row)."""
    names = ("a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "f.JPEG")
    labels = np.array([0, 1, 2, 3, 4])
    logits = np.stack([ranked(0), ranked(1), ranked(9, 2), ranked(9, 8, 7, 6, 5, 3), ranked(9, 8, 7, 6, 5, 4)])
    return PredictionScore(accuracy=accuracy(logits, labels), folder=Path("preds"), formats={"npy": 5},
                           other_outputs_ignored=0, names=names, labels=labels, logits=logits)


# The reference, listed in another order (and without the extension): right on a, c, d at top-1,
# on b only within top-5; e was not scored.
REFERENCE = {"d": ranked(3), "e": ranked(0), "c": ranked(2), "b": ranked(9, 8, 1), "a": ranked(0)}


def test_predictions_are_paired_with_the_reference_by_name_not_position() -> None:
    """Catches reference rows taken by position in the scored order instead of joined by image name."""
    pairing = pair_with_reference(_score(), list(REFERENCE), np.stack(list(REFERENCE.values())))
    assert pairing is not None
    assert pairing.reference_correct["top1"].tolist() == [True, False, True, True]  # a, b, c, d
    assert pairing.reference_correct["top5"].tolist() == [True, True, True, True]
    assert pairing.names == ("a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG") and pairing.labels.tolist() == [0, 1, 2, 3]
    assert np.array_equal(pairing.reference_logits, np.stack([REFERENCE[k] for k in "abcd"]))
    assert pairing.unpaired == ("f.JPEG",)
    assert {k: v.tolist() for k, v in pairing.unpaired_correct.items()} == {"top1": [False], "top5": [False]}


def test_the_reference_figures_come_from_the_reference_logits() -> None:
    """Catches the reference's accuracy or correctness scored from the candidate's logits."""
    pairing = pair_with_reference(_score(), list(REFERENCE), np.stack(list(REFERENCE.values())))
    assert pairing is not None
    assert (pairing.reference.correct1, pairing.reference.correct5, pairing.reference.count) == (3, 4, 4)
    assert pairing.reference.top1 == 75.0 and pairing.reference.top5 == 100.0
    assert pairing.reference_correct["top1"].tolist() == [True, False, True, True]
    assert pairing.candidate_correct["top1"].tolist() == [True, True, False, False]
    assert pairing.candidate_correct["top5"].tolist() == [True, True, True, False]
    assert pairing.agreement.top1_agreement == 25.0  # only a: the same top-1 class on both sides
    assert pairing.agreement.count == 4


# --------------------------------------------------------------------------------------------
# Found while adding predictions.py to the mutation run: the folder's images, result.json's counts


def test_a_folder_without_some_labelled_images_is_refused_not_scored_on_the_rest(tmp_path: Path) -> None:
    """Catches predictions missing for labelled images (and nothing extra) scored silently on the rest."""
    labels = {"ILSVRC2012_val_00000001.JPEG": 0, "ILSVRC2012_val_00000002.JPEG": 1, "ILSVRC2012_val_00000003.JPEG": 2}
    folder = tmp_path / "preds"
    folder.mkdir()
    np.save(folder / "ILSVRC2012_val_00000002_0.npy", ranked(1))  # ais_bench's <image>_0 files, 3 not predicted
    np.save(folder / "ILSVRC2012_val_00000001_0.npy", ranked(0))
    with pytest.raises(PredictionsError, match="1 labelled image.s. have no prediction"):
        score_folder(folder, labels, CLASSES)
    score = score_folder(folder, labels, CLASSES, on_mismatch="intersect")
    assert (score.missing, score.extra, score.accuracy.count, score.accuracy.correct1) == (1, 0, 2, 2)
    # the scored images in label-file order, each with its own label and logits (the pairing's inputs)
    assert score.names == ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG")
    assert score.labels.tolist() == [0, 1] and np.array_equal(score.logits, np.stack([ranked(0), ranked(1)]))


def test_result_json_percentages_become_the_nearest_counts() -> None:
    """Catches a result.json's percentages turned back into counts with ``int()`` instead of ``round()``."""
    # 76.92% of 1,300 is 999.96 images in floating point: 1,000 right, not 999 (89.69%: 1,166, not 1,165).
    stated = ReportedAccuracy(top1=76.92, top5=89.69, count=1300, classes=1000, path=Path("result.json"))
    acc = stated.as_accuracy()
    assert (acc.count, acc.top1, acc.top5, acc.correct1, acc.correct5) == (1300, 76.92, 89.69, 1000, 1166)
    no_top5 = ReportedAccuracy(top1=76.92, top5=None, count=1300, classes=None, path=Path("result.json")).as_accuracy()
    assert math.isnan(no_top5.top5) and (no_top5.correct1, no_top5.correct5) == (1000, 0)


# --------------------------------------------------------------------------------------------
# 7 in Workbench.evaluate: a Workbench whose data, compile, run and reference return canned arrays


class _Backend:
    name, describe, version = "fake", staticmethod(lambda: {}), staticmethod(lambda: "0")


class _Compiled:
    backend, loaded, precision = _Backend(), type("Loaded", (), {"provenance": {}})(), "fp32"
    quantization = None  # a float model (harness.run.workbench.Compiled)

    @contextmanager
    def open(self, device_id: int = 0) -> Iterator[None]:
        yield None


class _Listing:
    image_dir, label_source, skipped_unlabeled, skipped_missing = Path("imgs"), "labels.txt", 0, 0


class _Prepared:
    listing, decode, key, spec = _Listing(), "exact", "k", None
    labels = np.array([0, 1, 2, 3])


class _CannedWorkbench(Workbench):
    """Workbench.evaluate on canned logits: the compiled model's and the reference's (no model, no data)."""

    candidate = np.stack([ranked(0), ranked(1), ranked(9, 2), ranked(9, 8, 7, 6, 5, 3)])
    reference_logits_canned = np.stack([ranked(0), ranked(9, 8, 1), ranked(2), ranked(3)])

    def dataset(self, spec: Any, source: str) -> Any:
        return _Prepared()

    def compile(self, spec: Any, chip: Any, batch_size: int, source: str, backend: Any = None,
                weights: Any = None) -> Any:
        return _Compiled()

    def infer_dataset(self, session: Any, prepared: Any, batch_size: int, desc: str) -> np.ndarray:
        return self.candidate

    def reference(self, loaded: Any, prepared: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return self.reference_logits_canned, {}

    def onnx(self, loaded: Any, chip: Any = None) -> Path:
        return Path("model.onnx")


def test_workbench_evaluate_scores_the_reference_from_its_own_logits(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches Workbench.evaluate scoring the reference (accuracy, correctness) from the compiled model's logits."""
    monkeypatch.setattr(workbench_mod, "coverage", lambda listing, limit: FULL)
    bench = _CannedWorkbench(RunConfig(cache_dir=tmp_path), POLICY)
    ev = bench.evaluate(load_models()["efficientnet_lite0"], load_chips()["cpu"], 1, "embedded")
    assert (ev.reference.correct1, ev.reference.correct5) == (3, 4)
    assert (ev.accuracy.correct1, ev.accuracy.correct5) == (2, 3)
    assert ev.reference_correct["top1"].tolist() == [True, False, True, True]
    assert ev.compiled_correct["top1"].tolist() == [True, True, False, False]
    assert ev.agreement.top1_agreement == 25.0
