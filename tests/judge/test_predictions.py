"""Reading ais_bench output folders and ModelZoo result.json files produced on other machines.

The folders are written here in ais_bench's documented layout (``<input stem>_<output index>``
with ``--outfmt TXT|NPY|BIN``) from logits whose top-1/top-5 hits are known, joined to the real
ImageNet label file's names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.judge.gates import paired_accuracy_gates, topk_correct
from harness.judge.paired import discordance
from harness.judge.predictions import (
    PredictionsError,
    pair_with_reference,
    read_result_json,
    score_folder,
)
from harness.specs import load_policy
from tests.conftest import REAL_SUBSET as LIMIT
from tests.conftest import VAL1300
from tests.suite_runner import run_suite

LABELS_50K = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "ilsvrc2012_val_label_50000.txt"
CLASSES = 1000


def _labels(n: int) -> dict[str, int]:
    """The first ``n`` lines of the real 50,000-line val label file (synthetic names if absent)."""
    if LABELS_50K.is_file():
        lines = LABELS_50K.read_text().split("\n")[:n]
        return {name: int(label) for name, label in (line.split() for line in lines)}
    return {f"ILSVRC2012_val_{i + 1:08d}.JPEG": (i * 7) % CLASSES for i in range(n)}


def _logits(labels: dict[str, int], top1_hits: int, top5_hits: int) -> dict[str, np.ndarray]:
    """Logits: the first ``top1_hits`` images right at top-1, the next ones right within top-5, the rest wrong."""
    out = {}
    for i, (name, label) in enumerate(labels.items()):
        wrong = [c for c in range(CLASSES) if c != label]
        if i < top1_hits:
            rank = 0
        elif i < top5_hits:
            rank = 3
        else:
            rank = 50
        order = wrong[:rank] + [label] + wrong[rank:]
        row = np.empty(CLASSES, dtype=np.float32)
        row[order] = np.linspace(10.0, -10.0, CLASSES, dtype=np.float32)
        out[Path(name).stem] = row
    return out


def _write(folder: Path, logits: dict[str, np.ndarray], fmt: str = "txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, row in logits.items():
        path = folder / f"{stem}_0.{fmt}"
        if fmt == "txt":
            path.write_text(" ".join(f"{v:.6f}" for v in row) + "\n")
        elif fmt == "npy":
            np.save(path, row.reshape(1, -1))
        elif fmt == "bin":
            path.write_bytes(row.astype("<f4").tobytes())
        elif fmt == "bin16":
            path.with_suffix(".bin").write_bytes(row.astype("<f2").tobytes())
            path.unlink(missing_ok=True)
    (folder / "20261123_010203_summary.json").write_text(json.dumps({"NPU_compute_time": {"mean": 1.0}}))
    return folder


@pytest.mark.parametrize("fmt", ["txt", "npy", "bin", "bin16"])
def test_scores_each_output_format(tmp_path: Path, fmt: str) -> None:
    labels = _labels(40)
    folder = _write(tmp_path / "out", _logits(labels, top1_hits=30, top5_hits=36), fmt)
    score = score_folder(folder, labels, CLASSES)
    assert (score.accuracy.count, score.accuracy.top1, score.accuracy.top5) == (40, 75.0, 90.0)
    assert score.formats == {"bin" if fmt == "bin16" else fmt: 40}


def test_rules_for_missing_extra_other_outputs_and_timestamp_folder(tmp_path: Path) -> None:
    labels = _labels(40)
    logits = _logits(labels, 40, 40)
    ts = tmp_path / "out" / "2026_11_23-01_02_03"  # ais_bench's timestamped output folder
    _write(ts, {k: v for i, (k, v) in enumerate(logits.items()) if i != 3})
    (ts / "ILSVRC2012_val_99999999_0.txt").write_text(" ".join(["0"] * CLASSES))  # an image with no label
    (ts / f"{next(iter(logits))}_1.txt").write_text("1 2 3")  # a second model output: ignored, counted
    with pytest.raises(
        PredictionsError, match=r"1 labelled image\(s\) have no prediction.*1 prediction\(s\) have no label"
    ):
        score_folder(tmp_path / "out", labels, CLASSES)
    score = score_folder(tmp_path / "out", labels, CLASSES, on_mismatch="intersect")
    assert (score.accuracy.count, score.missing, score.extra, score.other_outputs_ignored) == (39, 1, 1, 1)
    assert score.accuracy.top1 == 100.0


@pytest.mark.parametrize("case, match", [
    ("padded", "holds 2 rows"),
    ("misnamed", "do not follow ais_bench's"),
    ("duplicate", "two predictions for image"),
    ("short", "expected 1000 logits"),
    ("nan", "NaN or Inf"),
    ("odd_bin", "neither 1000 float32"),
    ("empty", "no prediction files"),
])
def test_bad_folders_are_clear_errors(tmp_path: Path, case: str, match: str) -> None:
    labels = _labels(4)
    logits = _logits(labels, 4, 4)
    folder = _write(tmp_path / "out", logits)
    first = next(iter(logits))
    if case == "padded":  # a whole batch of 2 (image + padding copy) in one file
        (folder / f"{first}_0.txt").write_text(" ".join(["0.5"] * 2 * CLASSES))
    elif case == "misnamed":
        (folder / "predictions.txt").write_text("1")
    elif case == "duplicate":
        np.save(folder / f"{first}_0.npy", logits[first])
    elif case == "short":
        (folder / f"{first}_0.txt").write_text("1 2 3")
    elif case == "nan":
        (folder / f"{first}_0.txt").write_text(" ".join(["nan"] * CLASSES))
    elif case == "odd_bin":
        (folder / f"{first}_0.txt").unlink()
        (folder / f"{first}_0.bin").write_bytes(b"\x00" * 4001)
    elif case == "empty":
        for p in folder.glob("*_0.txt"):
            p.unlink()
    with pytest.raises(PredictionsError, match=match):
        score_folder(folder, labels, CLASSES)


def _write_devices(ts: Path, logits: dict[str, np.ndarray], names: tuple[str, ...], fmt: str = "txt") -> Path:
    """A multi-device ais_bench output: the images dealt round-robin to ``ts/<name>/`` with each device's
    ``<name>_summary.json`` beside its folder (summary.py writes ``output_prefix + "_summary.json"``)."""
    for k, name in enumerate(names):
        part = {stem: row for i, (stem, row) in enumerate(logits.items()) if i % len(names) == k}
        _write(ts / name, part, fmt)
        (ts / name / "20261123_010203_summary.json").unlink()
        (ts / f"{name}_summary.json").write_text(json.dumps({"NPU_compute_time": {"mean": 1.0}}))
    return ts


# Ascend/tools ais_bench writes <output>/<timestamp>/device<N>/, ait / msit <output>/<timestamp>/device<N>_<i>/
DEVICE_LAYOUTS = {"tools-2023": ("device0", "device1", "device3"), "ait": ("device0_0", "device1_1", "device3_2")}


@pytest.mark.parametrize("generation", sorted(DEVICE_LAYOUTS))
def test_multi_device_output_is_read_as_one_set(tmp_path: Path, generation: str) -> None:
    labels = _labels(40)
    names = DEVICE_LAYOUTS[generation]
    ts = _write_devices(tmp_path / "out" / "2026_11_23-01_02_03", _logits(labels, 30, 36), names)
    for given in (tmp_path / "out", ts):  # the --output folder, or the timestamped folder in it
        score = score_folder(given, labels, CLASSES)
        assert (score.accuracy.count, score.accuracy.top1, score.accuracy.top5) == (40, 75.0, 90.0)
        assert score.device_folders == names and score.formats == {"txt": 40}
    single = score_folder(ts / names[0], {k: v for i, (k, v) in enumerate(labels.items()) if i % 3 == 0}, CLASSES)
    assert single.accuracy.count == 14 and single.device_folders == ()  # one device folder, given as such


def test_an_image_in_two_device_folders_is_an_error_naming_both_files(tmp_path: Path) -> None:
    labels = _labels(12)
    logits = _logits(labels, 12, 12)
    ts = _write_devices(tmp_path / "out" / "2026_11_23-01_02_03", logits, ("device0_0", "device1_1"))
    stem = next(iter(logits))  # dealt to device0_0; ait without --divide-input runs it on device1_1 too
    np.save(ts / "device1_1" / f"{stem}_0.npy", logits[stem])
    with pytest.raises(PredictionsError) as info:
        score_folder(tmp_path / "out", labels, CLASSES)
    message = str(info.value)
    assert f"image {stem!r} has predictions in two device folders" in message
    assert str(ts / "device0_0" / f"{stem}_0.txt") in message and str(ts / "device1_1" / f"{stem}_0.npy") in message
    assert "--divide-input" in message


@pytest.mark.parametrize("case, match", [
    ("spread", r"multi-device output under 2 timestamped folders .*<output>/<timestamp>/device<N>\[_<i>\]/"),
    ("mixed", r"holds prediction files and device folders \(device1_1\)"),
])
def test_multi_device_layouts_that_cannot_be_read_are_refused_naming_the_layout(
    tmp_path: Path, case: str, match: str
) -> None:
    labels = _labels(8)
    logits = _logits(labels, 8, 8)
    first = dict(list(logits.items())[:4])
    second = dict(list(logits.items())[4:])
    if case == "spread":  # ait takes the timestamp in each device's process: a second apart
        _write_devices(tmp_path / "out" / "2026_11_23-01_02_03", first, ("device0_0",))
        _write_devices(tmp_path / "out" / "2026_11_23-01_02_04", second, ("device1_1",))
        given = tmp_path / "out"
    else:
        given = _write(tmp_path / "out", first)
        _write(given / "device1_1", second)
    with pytest.raises(PredictionsError, match=match):
        score_folder(given, labels, CLASSES)


def _result_json(path: Path, top1: str = "77.62%", top5: str | None = "93.69%", images: str = "50000") -> Path:
    value = [{"key": "Number of images", "value": images}, {"key": "Number of classes", "value": "1000"},
             {"key": "Top1 accuracy", "value": top1}]
    if top5 is not None:
        value.append({"key": "Top5 accuracy", "value": top5})
    path.write_text(json.dumps({"title": "Overall statistical evaluation", "value": value}))
    return path


def test_result_json(tmp_path: Path) -> None:
    r = read_result_json(_result_json(tmp_path / "result.json"))
    assert (r.top1, r.top5, r.count, r.classes) == (77.62, 93.69, 50000, 1000)
    for bad, match in [("{", "not a readable JSON"), ('{"value": 3}', "ModelZoo layout"),
                       ('{"value": [{"key": "Top1 accuracy", "value": "7%"}]}', "Number of images")]:
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(PredictionsError, match=match):
            read_result_json(tmp_path / "bad.json")
    with pytest.raises(PredictionsError, match="within 0..100"):
        read_result_json(_result_json(tmp_path / "r2.json", top1="177%"))


def test_suite_certifies_predictions_made_elsewhere(tmp_path: Path) -> None:
    """`pytest -m accuracy --predictions DIR` without --imagenet: the folders are read and scored, but
    no gate can decide (200 images are a subset, a result.json names no images, and there are no
    images here to compute the torch reference on), so every test says so and skips; with
    --strict-certification the same run fails."""
    labels = _labels(200)
    label_file = tmp_path / "val_label.txt"
    label_file.write_text("".join(f"{k} {v}\n" for k, v in labels.items()))
    root = tmp_path / "preds"
    _write_devices(root / "efficientnet_lite0" / "2026_11_23-01_02_03", _logits(labels, top1_hits=152, top5_hits=186),
                   ("device0_0", "device1_1"))  # 76.0 / 93.0 from a two-device ait run
    _write(root / "ghostnet_100", _logits(labels, top1_hits=120, top5_hits=170))  # 60.0: far below 73.98
    (root / "resnext50_32x4d").mkdir()
    _result_json(root / "resnext50_32x4d" / "result.json")  # seed 000's 310P figures
    (root / "se_resnext50_32x4d").mkdir()
    _result_json(root / "se_resnext50_32x4d" / "result.json", top1="79.06%", top5=None)  # states no top-5
    args = ("-m", "accuracy", "-p", "no:xdist", "--predictions", str(root), "--imagenet-labels", str(label_file),
            "--chip", "310P3", "--models", "efficientnet_lite0,ghostnet_100,resnext50_32x4d,se_resnext50_32x4d",
            "acceptance/test_predictions.py")
    proc, cases = run_suite(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    no_reference = "not checked: no --imagenet images to compute the torch reference on"
    ok = cases["test_predictions_accuracy[efficientnet_lite0-Ascend310P3]"]
    assert ok["outcome"] == "skipped" and float(ok["top1"]) == 76.0 and ok["images"] == "200", ok
    assert ok["device_folders"] == "device0_0,device1_1" and ok["verdict"] == "not applicable"
    assert ok["dataset_coverage"] == "subset" and ok["gate_published_top1"] == "not applicable: subset of 200 images"
    assert ok["gate_paired_top1"].startswith(no_reference) and ok["gate_paired_top5"].startswith(no_reference)
    assert ok["published_gate"] == "not applicable: subset of 200 images" and "paired_drop_top1" not in ok
    low, high = float(ok["top1_low95"]), float(ok["top1_high95"])
    assert 69.0 < low < 76.0 < high < 82.0  # the subset's Wilson interval, beside the published figure
    bad = cases["test_predictions_accuracy[ghostnet_100-Ascend310P3]"]
    assert bad["outcome"] == "skipped" and bad["verdict"] == "not applicable" and float(bad["top1_high95"]) < 72.98
    assert ("NOT CERTIFIED predictions: no gate could decide: paired gate not run: no --imagenet images to compute "
            "the torch reference on") in proc.stdout
    assert "efficientnet_lite0 predictions from {} (subset".format(root / "efficientnet_lite0") in proc.stdout
    seed = cases["test_predictions_accuracy[resnext50_32x4d-Ascend310P3]"]
    assert seed["outcome"] == "skipped" and seed["source_format"] == "result.json" and float(seed["top1"]) == 77.62
    assert (
        seed["dataset_coverage"] == "unknown"
        and seed["gate_published_top1"] == "not applicable: result.json names no images"
    )
    assert seed["gate_paired_top1"].startswith("not checked: result.json states figures only")
    no_top5 = cases["test_predictions_accuracy[se_resnext50_32x4d-Ascend310P3]"]
    assert no_top5["gate_published_top5"] == "not checked: result.json states no Top5 accuracy"
    assert "certification: 0 of 4 model(s) certified" in proc.stdout
    (tmp_path / "strict").mkdir()
    strict, cases = run_suite(tmp_path / "strict", *args, "--strict-certification")
    assert strict.returncode == 1 and {c["outcome"] for c in cases.values()} == {"failed"}, strict.stdout[-3000:]
    assert (
        "--strict-certification: not certified, the test could not run: no gate could decide" in strict.stdout
    )


# --------------------------------------------------------------------------------------------
# Real efficientnet_lite0 outputs on real validation images, as an NPU's ais_bench folder: the images of
# `--limit LIMIT` (tests.conftest.REAL_SUBSET, which the other real-image suite runs take: one dataset and
# reference a session; the wrong-answer counts below are worked out for its 400)


MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class RealOutputs:
    """ONNX Runtime's and the torch reference's logits of efficientnet_lite0 on the ``LIMIT`` images."""

    cache: Path
    names: tuple[str, ...]
    labels: np.ndarray
    logits: np.ndarray
    reference: np.ndarray

    def both_right(self) -> np.ndarray:
        """The images both the outputs and the reference classify right at top-1."""
        return ((self.logits.argmax(1) == self.labels) & (self.reference.argmax(1) == self.labels)).nonzero()[0]

    def with_wrong_answers(self, count: int, seed: int = 14) -> np.ndarray:
        """The outputs with ``count`` right top-1 answers made wrong: the right class's logit swapped
        with the best wrong class's (so top-5 stays right), on images picked at random."""
        out = self.logits.copy()
        for i in np.random.default_rng(seed).choice(self.both_right(), count, replace=False):
            row, label = out[i], self.labels[i]
            rival = int(np.argsort(row)[-2])
            row[label], row[rival] = row[rival], row[label]
        return out

    def folder(self, path: Path, logits: np.ndarray, fmt: str) -> Path:
        return _write(path, {Path(n).stem: row for n, row in zip(self.names, logits, strict=True)}, fmt)


@pytest.fixture(scope="module")
def real_outputs(tmp_path_factory: pytest.TempPathFactory) -> RealOutputs:
    """Compiled for the CPU with ONNX Runtime and run here, as an NPU would run it elsewhere."""
    if not VAL1300.is_dir():
        pytest.skip(f"needs the 1300 real validation images in {VAL1300} (../shared/datasets)")
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models, load_policy

    cache = Path(os.environ.get("MZC_CACHE_DIR") or tmp_path_factory.mktemp("cache"))
    bench = Workbench(RunConfig(imagenet=VAL1300, limit=LIMIT, cache_dir=cache), load_policy())
    spec = load_models()[MODEL]
    prepared = bench.dataset(spec, "imagenet")
    compiled = bench.compile(spec, load_chips()["cpu"], 8, "imagenet")
    with compiled.open() as session:
        logits = bench.infer_dataset(session, prepared, 8, f"{MODEL} on cpu")
    reference = bench.reference(compiled.loaded, prepared)[0]
    return RealOutputs(cache, tuple(prepared.listing.names), np.asarray(prepared.labels), logits, reference)


def _certify_real(tmp_path: Path, outputs: RealOutputs, *extra: str) -> tuple[str, dict[str, dict[str, str]]]:
    proc, cases = run_suite(tmp_path, "-m", "accuracy", "-p", "no:xdist", "--predictions", str(tmp_path / "preds"),
                            "--imagenet", str(VAL1300), "--limit", str(LIMIT), "--on-label-mismatch", "intersect",
                            "--chip", "310P3", *extra, "acceptance/test_predictions.py",
                            env={**os.environ, "MZC_CACHE_DIR": str(outputs.cache)})
    return proc.stdout, cases


@pytest.mark.slow
def test_real_npu_folder_with_a_dozen_wrong_answers_fails_the_paired_gate(
    tmp_path: Path, real_outputs: RealOutputs
) -> None:
    """12 of the 400 right answers made wrong: drop 12/400 = 3.00 points, Tango 95% interval
    [1.72, 5.17], wholly above the 1-point tolerance: fail. ghostnet_100 beside it has no weights here."""
    real_outputs.folder(tmp_path / "preds" / MODEL, real_outputs.with_wrong_answers(12), "npy")
    few = {n: row for i, (n, row) in enumerate(zip(real_outputs.names, real_outputs.logits, strict=True)) if i < 50}
    _write(tmp_path / "preds" / "ghostnet_100", {Path(n).stem: row for n, row in few.items()}, "txt")
    base = discordance(topk_correct(real_outputs.reference, real_outputs.labels)["top1"],
                       topk_correct(real_outputs.logits, real_outputs.labels)["top1"])
    stdout, cases = _certify_real(tmp_path, real_outputs, "--models", f"{MODEL},ghostnet_100", "--no-download",
                                  "--weights-dir", str(tmp_path / "no-weights"))
    case = cases[f"test_predictions_accuracy[{MODEL}-Ascend310P3]"]
    assert case["outcome"] == "failed" and case["verdict"] == "fail", stdout[-3000:]
    assert (int(case["discordant_ref_only"]), int(case["discordant_compiled_only"])) == (
        base.reference_only + 12, base.candidate_only)
    assert case["gate_paired_top1"] == "fail" and case["gate_paired_top5"] == "pass"  # top-5 still right
    drop, low, high = (float(case[f"paired_drop_top1{s}"]) for s in ("", "_low95", "_high95"))
    assert drop == pytest.approx(100 * (12 + base.reference_only - base.candidate_only) / LIMIT, abs=1e-4)
    assert 1.0 < low < drop < high and "images_needed" not in case
    assert case["dataset_coverage"] == "subset"
    assert case["published_gate"] == f"not applicable: subset of {LIMIT} images"
    assert case["images"] == str(LIMIT) and float(case["reference_top1"]) > float(case["top1"])
    assert "FAIL paired_top1: top1 drop 3.000 points vs the torch reference" in stdout
    ghost = cases["test_predictions_accuracy[ghostnet_100-Ascend310P3]"]
    # the label file's 1300 images, 50 of them predicted
    assert ghost["outcome"] == "skipped" and ghost["images"] == "50" and ghost["skipped_missing"] == "1250"
    assert ghost["gate_paired_top1"].startswith(
        "not checked: weights not available: ghostnet_100: state_dict_73.98.pth"
    )
    assert "paired gate not run: weights not available" in stdout


@pytest.mark.slow
def test_real_npu_folder_untouched_passes_the_paired_gate(tmp_path: Path, real_outputs: RealOutputs) -> None:
    real_outputs.folder(tmp_path / "preds", real_outputs.logits, "bin")
    stdout, cases = _certify_real(tmp_path, real_outputs, "--models", MODEL)
    case = cases[f"test_predictions_accuracy[{MODEL}-Ascend310P3]"]
    assert case["outcome"] == "passed" and case["verdict"] == "pass", stdout[-3000:]
    assert float(case["paired_drop_top1_high95"]) < 1.0 and float(case["paired_drop_top1_low95"]) > -1.0
    assert float(case["top1_agreement"]) > 99.0 and case["source_format"] == f"ais_bench bin:{LIMIT}"
    assert case["gate_top1_agreement"].startswith("not checked: predictions made elsewhere")


@pytest.mark.slow
@pytest.mark.parametrize("wrong, verdict, needed", [(3, "inconclusive", 6127), (6, "inconclusive", 1576),
                                                     (8, "fail", None)])
def test_real_outputs_paired_by_name_decide_by_the_counts(
    tmp_path: Path, real_outputs: RealOutputs, wrong: int, verdict: str, needed: int | None
) -> None:
    """The same join the suite makes, in-process: predictions scored from an ais_bench folder, paired
    with the reference by image name (the reference listed in reverse order: names, not positions)."""
    base = discordance(topk_correct(real_outputs.reference, real_outputs.labels)["top1"],
                       topk_correct(real_outputs.logits, real_outputs.labels)["top1"])
    assert (base.reference_only, base.candidate_only) == (0, 0)  # ONNX Runtime's top-1 is torch's on every image
    folder = real_outputs.folder(tmp_path / "out", real_outputs.with_wrong_answers(wrong), "npy")
    labels = dict(zip(real_outputs.names, real_outputs.labels.tolist(), strict=True))
    score = score_folder(folder, labels, CLASSES)
    pairing = pair_with_reference(score, real_outputs.names[::-1], real_outputs.reference[::-1])
    assert pairing is not None and pairing.unpaired == () and pairing.reference.count == LIMIT
    gate = paired_accuracy_gates(pairing.reference_correct, pairing.candidate_correct, load_policy())[0]
    assert (gate.verdict, gate.images_needed) == (verdict, needed)
    assert (gate.values["discordant_ref_only"], gate.values["discordant_compiled_only"]) == (wrong, 0)
    half = LIMIT // 2
    paired = pair_with_reference(score, real_outputs.names[:half], real_outputs.reference[:half])
    assert paired is not None and len(paired.unpaired) == LIMIT - half and paired.reference.count == half
    assert pair_with_reference(score, ["ILSVRC2012_val_99999999.JPEG"], real_outputs.reference[:1]) is None
