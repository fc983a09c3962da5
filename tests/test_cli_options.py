"""Backend, precision and input-dtype choices flow from the command line into what runs and
into the records, and bad choices are usage errors that list what exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from suite_runner import ROOT, run_suite

from harness.specs import load_policy

VAL1300 = ROOT.parent / "shared" / "datasets" / "imagenet-val-1300"


def test_unknown_backend_is_a_usage_error_listing_the_known_ones(tmp_path: Path) -> None:
    proc, _ = run_suite(tmp_path, "acceptance", "--backend", "tensorflow", "--collect-only")
    assert proc.returncode == 4
    assert "unknown --backend 'tensorflow'; known backends:" in proc.stderr and "onnxruntime" in proc.stderr


@pytest.mark.slow
def test_openvino_bf16_certifies_real_images_and_records_what_ran(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")
    from harness.backends.openvino import OpenVinoBackend

    capabilities = OpenVinoBackend().capabilities()
    if "BF16" not in capabilities:
        # The run would skip (the backend refuses bf16); test_cpu_features.py checks that it does.
        pytest.skip(f"this CPU has no native bf16: OpenVINO CPU OPTIMIZATION_CAPABILITIES are "
                    f"{', '.join(capabilities)}, no BF16 (x86 needs AVX512_BF16 or AMX)")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300}")
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "--backend", "openvino", "--precision", "bf16",
                            "--models", "efficientnet_lite0", "--imagenet", str(VAL1300), "--limit", "200",
                            "--inconclusive", "allow")
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
    assert (case["backend"], case["precision"], case["env_backend"]) == ("openvino", "bf16", "openvino")
    assert int(case["images"]) == 200
    delta = float(case["delta_top1_vs_reference"])
    assert delta == pytest.approx(float(case["top1"]) - float(case["reference_top1"]), abs=1e-3)
    # bf16 moves logits; its agreement is judged from its interval like any other precision's
    # (on 200 images a 99% minimum is usually inconclusive: allowed here, recorded as such).
    low, high, need = float(case["agreement_top1_low95"]), float(case["agreement_top1_high95"]), load_policy().agreement_min_top1
    expected = "pass" if low >= need else "fail" if high < need else "inconclusive"
    assert case["gate_top1_agreement"] == expected, (low, high, case["gate_top1_agreement"])


@pytest.mark.slow
def test_uint8_input_agrees_with_torch_on_project_images(tmp_path: Path) -> None:
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "agreement", "--input", "uint8", "--models", "efficientnet_lite0")
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = cases["test_agreement[efficientnet_lite0-cpu-bs8]"]
    assert case["input_dtype"] == "uint8" and float(case["top1_agreement"]) == 100.0
    assert float(case["max_abs_diff"]) < 1e-3
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert any(r.get("input_dtype") == "uint8" for r in records)
