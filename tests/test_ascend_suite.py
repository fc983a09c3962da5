"""The acceptance suite on an Ascend chip, run as a user runs it, with the tools replaced by the
test doubles of tests/doubles/ (no NPU here): compile with `atc`, run through ais_bench, time with
its compute-time list, certify. Figures measured this way are ONNX Runtime CPU figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.doubles import AIS_BENCH_GENERATIONS, BIN, ascend_env
from tests.suite_runner import run_suite

VAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenet-val-1300"

pytestmark = pytest.mark.slow


@pytest.fixture
def imagenet() -> Path:
    if not (VAL / "val_label.txt").is_file():
        pytest.skip(f"real ImageNet validation images not found at {VAL}")
    return VAL


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's cache (CI's, or one for this module): the ONNX export, the images and the torch
    reference are made once; each test compiles anew with an `atc` of its own (below)."""
    return os.environ.get("MZC_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))


def own_atc(tmp_path: Path) -> str:
    """A PATH entry holding an `atc` that runs the double: the compile key holds the `atc` a run finds
    (its path: another toolkit compiles anew), so this test's ATC calls are its own, in a shared cache."""
    folder = tmp_path / "toolkit"
    folder.mkdir()
    atc = folder / "atc"
    atc.write_text(f'#!/bin/sh\nexec "{BIN / "atc"}" "$@"\n')
    atc.chmod(0o755)
    return str(folder)


def compiled_here(cache: str, tmp_path: Path) -> list[dict]:
    """The manifests of the ATC models this test's `atc` compiled."""
    atc = str(tmp_path / "toolkit" / "atc")
    return [m for m in (json.loads(p.read_text()) for p in Path(cache).glob("compiled-ascend/*/manifest.json"))
            if m["inputs"]["backend_fields"]["atc"] == atc]


API_SHAPES = {"tools-2023": "finalize instance, sumary", "ait": "finalize static, summary, free_resource"}


@pytest.mark.parametrize("generation", AIS_BENCH_GENERATIONS)
def test_accuracy_and_perf_through_atc_and_ais_bench(tmp_path: Path, imagenet: Path, cache: str,
                                                     generation: str) -> None:
    env = ascend_env(generation=generation, FAKE_ATC_LOG=str(tmp_path / "atc.jsonl"), MZC_CACHE_DIR=cache)
    env["PATH"] = f"{own_atc(tmp_path)}{os.pathsep}{env['PATH']}"
    proc, cases = run_suite(
        tmp_path, "-m", "accuracy or perf", "-p", "no:xdist", "--chip", "310P3", "--imagenet", str(imagenet),
        "--limit", "48", "--inconclusive", "allow", "--models", "efficientnet_lite0", "--batch-sizes", "1,8",
        "--device-ids", "1",
        "acceptance/test_accuracy.py", "acceptance/test_perf.py", env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    acc = cases["test_accuracy[efficientnet_lite0-Ascend310P3-bs8]"]
    assert acc["outcome"] == "passed" and acc["backend"] == "ascend"
    # the mode ATC compiled (its default for --precision fp16), never the bare "fp16"
    assert acc["precision"] == "force_fp16"  # ATC's default mode, asked for as fp16
    assert acc["env_ais_bench_api"] == API_SHAPES[generation]
    assert float(acc["top1_agreement"]) == 100.0
    perf = cases["test_throughput[efficientnet_lite0-Ascend310P3]"]
    assert perf["outcome"] == "passed" and perf["clock"] == "device_compute" and perf["device_id"] == "1"
    assert perf["precision"] == "force_fp16"
    for bs in (1, 8):  # ais_bench's figure (1000 * bs / mean compute ms) and the wall clock, side by side
        assert float(perf[f"device_images_per_s_bs{bs}"]) > 0 and float(perf[f"wall_images_per_s_bs{bs}"]) > 0
        assert perf[f"images_per_s_bs{bs}"] == perf[f"device_images_per_s_bs{bs}"]
        assert float(perf[f"computed_top1_agreement_bs{bs}"]) == 100.0
    assert "idle: 310P3" in perf["env_device_checks"]
    calls = [json.loads(line) for line in (tmp_path / "atc.jsonl").read_text().splitlines()]
    shapes = sorted(a for c in calls for a in c if a.startswith("--input_shape="))
    assert shapes == ["--input_shape=input:1,3,224,224", "--input_shape=input:8,3,224,224"]  # each compiled once
    manifests = compiled_here(cache, tmp_path)
    assert len(manifests) == 2 and all(
        m["atc_command"][0] == "atc" and m["inputs"]["compile_key"]["atc_command"] == m["atc_command"]
        for m in manifests
    ), manifests[:1]
    assert "force_fp16" in (tmp_path / "report" / "report.md").read_text()  # the report shows the mode too


@pytest.mark.parametrize("generation", AIS_BENCH_GENERATIONS)
def test_uint8_input_compiles_aipp_in_at_fp32(tmp_path: Path, imagenet: Path, cache: str, generation: str) -> None:
    env = ascend_env(generation=generation, FAKE_ATC_LOG=str(tmp_path / "atc.jsonl"), MZC_CACHE_DIR=cache)
    env["PATH"] = f"{own_atc(tmp_path)}{os.pathsep}{env['PATH']}"  # ATC must run, to be checked
    proc, cases = run_suite(
        tmp_path, "-m", "accuracy", "-p", "no:xdist", "--chip", "310P3", "--imagenet", str(imagenet), "--limit", "32",
        "--inconclusive", "allow",
        "--models", "efficientnet_lite0", "--input", "uint8", "--precision", "fp32", "acceptance/test_accuracy.py",
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    acc = cases["test_accuracy[efficientnet_lite0-Ascend310P3-bs8]"]
    assert acc["input_dtype"] == "uint8" and float(acc["top1_agreement"]) == 100.0
    assert acc["precision"] == "force_fp32"  # asked for as fp32; cube inputs stay fp16
    (call,) = [json.loads(line) for line in (tmp_path / "atc.jsonl").read_text().splitlines()]
    assert "--precision_mode=force_fp32" in call
    assert call[-2].startswith("--insert_op_conf=") and call[-2].endswith("aipp.cfg")
    assert call[-1] == "--enable_small_channel=1"  # static AIPP on a 3-channel input (docs/ascend.md)


def test_without_the_tools_every_ascend_test_skips_saying_what_to_install(tmp_path: Path, imagenet: Path) -> None:
    proc, cases = run_suite(
        tmp_path, "-m", "accuracy or perf", "-p", "no:xdist", "--chip", "310P3", "--imagenet", str(imagenet),
        "--limit", "8", "--models", "efficientnet_lite0", "--batch-sizes", "8",
        "acceptance/test_accuracy.py", "acceptance/test_perf.py",
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "ImportError" not in proc.stdout and "ModuleNotFoundError" not in proc.stdout
    acc = cases["test_accuracy[efficientnet_lite0-Ascend310P3-bs8]"]
    assert acc["outcome"] == "skipped"
    assert "`atc` is not on PATH" in proc.stdout and "ais_bench is not installed" in proc.stdout
