"""The Ascend backend against the documented contracts of ATC, ais_bench and npu-smi.

No NPU, CANN or ais_bench exists here: the backend runs end to end through the test doubles in
tests/doubles/ (a fake `atc` that checks the documented options and writes a fake .om, a fake
ais_bench InferSession that runs it on ONNX Runtime, a fake `npu-smi`). What these tests prove is
our side of the contract: the commands we build, the files we read, the way we feed, pad, time
and certify. They prove nothing about Ascend hardware.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness.backends.ascend import AscendBackend
from harness.backends.ascend_tools import atc
from harness.backends.ascend_tools.infer_session import (
    AclFinalizer,
    AscendSession,
    exec_times_ms,
    finalize_kind,
)
from harness.backends.ascend_tools.npu_smi import (
    NpuSmiError,
    check_device_free,
    parse_npu_smi,
)
from harness.backends.ascend_tools.tools import ToolError
from harness.backends.base import BackendUnavailable, DeviceBusy, InferenceError
from harness.specs import CompileTarget, load_chips, load_models, resolve_chip
from tests.doubles import AIS_BENCH_GENERATIONS, DOUBLES, ascend_env

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
SEED_MODELS = {"000": "resnext50_32x4d", "001": "resnext101_32x8d", "002": "resnest50",
               "003": "se_resnext50_32x4d", "004": "ghostnet_100"}


def parse_aipp_config(text: str) -> dict[str, str]:
    """``key : value`` pairs of an ``aipp_op { ... }`` block (one block; comments with ``#``): what ATC reads
    of the config :func:`atc.aipp_config` writes."""
    body = re.search(r"aipp_op\s*\{(.*?)\}", text, re.S)
    if body is None:
        raise AssertionError("AIPP config has no `aipp_op { ... }` block")
    out: dict[str, str] = {}
    for raw in body.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AssertionError(f"AIPP config line {raw.strip()!r} is not `key : value`")
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------------------------
# The ATC command, against the seeds' own commands


def _seed_text(prefix: str) -> str:
    found = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not found:
        pytest.skip(f"seed guides not found in {SEEDS} (../shared/seeds beside the project)")
    return found[0].read_text(encoding="utf-8")


def _seed_atc_commands(text: str) -> list[list[str]]:
    """Every `atc ...` command of a seed, continuation lines joined, split as a shell would."""
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("atc "):
            commands.append(shlex.split(line))
    return commands


def _options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` options; the seeds' typos normalised: ``-soc_version`` and ``--soc_version= X``."""
    out: dict[str, str] = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = "--" + args[i].lstrip("-")
        key, _, value = arg.partition("=")
        if value == "" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]  # "--soc_version= Ascend710": a space after "="
            i += 1
        out[key] = value
        i += 1
    return out


def _soc(seed_value: str, chip_name: str) -> str:
    """The seed's soc_version with ${chip_name} filled, old names mapped (Ascend710 is the 310P3)."""
    value = seed_value.replace("${chip_name}", chip_name)
    return resolve_chip(load_chips(), value.removeprefix("Ascend")).backend_options["soc_version"]


@pytest.mark.parametrize("seed", sorted(SEED_MODELS))
def test_atc_command_matches_each_seed_command_for_every_batch_size(seed: str) -> None:
    commands = _seed_atc_commands(_seed_text(seed))
    assert commands, f"seed {seed} has no atc command"
    spec = load_models()[SEED_MODELS[seed]]
    for argv in commands:
        theirs = _options(argv)
        name, _, dims = theirs["--input_shape"].partition(":")
        assert name == spec.input_name, f"registry input_name differs from seed {seed}"
        seed_bs = dims.split(",")[0]
        sizes = spec.batch_sizes if seed_bs == "${bs}" else (int(seed_bs),)
        for bs in sizes:
            expected = {k: v.replace("${bs}", str(bs)) for k, v in theirs.items()}
            expected["--soc_version"] = _soc(theirs["--soc_version"], "310P3")
            target = CompileTarget(chip="Ascend310P3", batch_size=bs, input_shape=spec.input_shape,
                                   input_name=spec.input_name, precision="fp16")
            ours = atc.atc_command(
                theirs["--model"], expected["--output"], target, expected["--soc_version"],
                log_level=theirs.get("--log", "error"), aipp_config=theirs.get("--insert_op_conf"),
            )
            mine = _options(ours)
            if "--log" not in theirs:  # seed 002 leaves ATC's default log level; we always state ours
                assert mine.pop("--log") == "error"
            assert mine == expected, f"seed {seed} bs{bs}: {shlex.join(argv)}"
            assert ours[0] == "atc" and all(a.startswith("--") for a in ours[1:])


def test_atc_command_is_an_argument_list_that_shell_text_cannot_escape(tmp_path: Path) -> None:
    target = CompileTarget(chip="Ascend310P3", batch_size=1, input_shape=(3, 224, 224), input_name="image")
    hostile = tmp_path / "model; touch pwned $(id).onnx"
    argv = atc.atc_command(hostile, tmp_path / "out", target, "Ascend310P3")
    assert f"--model={hostile}" in argv  # one argument, spaces and all
    bad = CompileTarget(chip="Ascend310P3", batch_size=1, input_shape=(3, 224, 224), input_name="x:1;y")
    with pytest.raises(atc.AtcConfigError, match="input_name"):
        atc.atc_command("m.onnx", "out", bad, "Ascend310P3")
    with pytest.raises(atc.AtcConfigError, match="soc_version"):
        atc.atc_command("m.onnx", "out", target, "Ascend310P3; rm -rf /")
    with pytest.raises(atc.AtcConfigError, match="--log"):
        atc.atc_command("m.onnx", "out", target, "Ascend310P3", log_level="verbose")


def test_precision_modes() -> None:
    assert atc.precision_mode_for("fp16") is None  # ATC's default on 310 / 310P: force_fp16
    assert atc.precision_mode_for("fp32") == "force_fp32"
    assert atc.precision_mode_for("fp16", "allow_mix_precision") == "allow_mix_precision"
    with pytest.raises(atc.AtcConfigError, match="bf16"):
        atc.precision_mode_for("bf16")
    with pytest.raises(atc.AtcConfigError, match="unknown ATC precision_mode"):
        atc.precision_mode_for("fp16", "fastest")


def test_precision_mode_lists_are_atcs_own() -> None:
    """Exactly what ATC validates (hicann/ge option_utils.cc CheckPrecisionMode[V2]ParamValid), no more."""
    assert set(atc.PRECISION_MODES) == {
        "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_mix_precision", "allow_fp32_to_fp16",
        "must_keep_origin_dtype", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16"}
    assert set(atc.PRECISION_MODES_V2) == {
        "fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16", "cube_hif8", "mixed_hif8"}
    for not_atc in ("force_lowerprecision", "allow_fp32_to_lowprecision"):  # framework values ATC refuses
        with pytest.raises(atc.AtcConfigError, match="unknown ATC precision_mode"):
            atc.precision_mode_for("fp16", not_atc)
    assert atc.precision_flags("fp32") == ("force_fp32", None)
    assert atc.precision_flags("fp32", precision_mode_v2="origin") == (None, "origin")  # chips.toml wins
    assert atc.precision_flags("bf16", precision_mode_v2="mixed_bfloat16") == (None, "mixed_bfloat16")
    with pytest.raises(atc.AtcConfigError, match="E10056"):
        atc.precision_flags("fp16", "force_fp32", "origin")
    with pytest.raises(atc.AtcConfigError, match="unknown ATC precision_mode_v2 'force_fp32'"):
        atc.precision_flags("fp16", precision_mode_v2="force_fp32")


def test_the_compiled_mode_is_named_never_fp32() -> None:
    target = CompileTarget(chip="Ascend310P3", batch_size=1, input_shape=(3, 224, 224), input_name="image")
    assert atc.precision_label(None, None) == "force_fp16"  # no flag: ATC's default
    assert atc.precision_label("force_fp32", None) == "force_fp32"
    assert atc.precision_label(None, "origin") == "precision_mode_v2=origin"
    v2 = atc.atc_command("m.onnx", "o", target, "Ascend310P3", precision_mode_v2="origin")
    assert "--precision_mode_v2=origin" in v2
    with pytest.raises(atc.AtcConfigError, match="not both"):
        atc.atc_command("m.onnx", "o", target, "Ascend310P3", precision_mode="force_fp16", precision_mode_v2="fp16")


def test_aipp_config_encodes_torchvision_normalization() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    conf = parse_aipp_config(atc.aipp_config((3, 224, 224), mean, std))
    assert conf["aipp_mode"] == "static" and conf["input_format"] == "RGB888_U8"
    assert (conf["src_image_size_w"], conf["src_image_size_h"]) == ("224", "224")
    pixels = np.array([0.0, 17.0, 128.0, 255.0])
    for i in range(3):
        aipp = (pixels - float(conf[f"mean_chn_{i}"]) - float(conf[f"min_chn_{i}"])) * float(conf[f"var_reci_chn_{i}"])
        np.testing.assert_allclose(aipp, (pixels / 255.0 - mean[i]) / std[i], rtol=1e-6, atol=1e-6)


def _target(**changes: object) -> CompileTarget:
    base = dict(chip="Ascend310P3", batch_size=8, input_shape=(3, 224, 224), input_name="image", precision="fp16",
                options={})
    base.update(changes)
    return CompileTarget(**base)  # type: ignore[arg-type]


def test_compile_key_changes_with_every_option() -> None:
    aipp = {"aipp": "static", "mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
    variants = {
        "base": (AscendBackend(), _target()),
        "soc": (AscendBackend(soc_version="Ascend310"), _target()),
        "log": (AscendBackend(log="info"), _target()),
        "precision": (AscendBackend(), _target(precision="fp32")),
        "precision_mode": (AscendBackend(precision_mode="allow_mix_precision"), _target()),
        "precision_mode_v2": (AscendBackend(precision_mode_v2="origin"), _target()),
        "batch": (AscendBackend(), _target(batch_size=16)),
        "input_name": (AscendBackend(), _target(input_name="actual_input_1")),
        "shape": (AscendBackend(), _target(input_shape=(3, 256, 256))),
        "aipp": (AscendBackend(), _target(options=aipp)),
        "aipp_mean": (AscendBackend(), _target(options={**aipp, "mean": "0.5,0.5,0.5"})),
        "aipp_no_small_channel": (AscendBackend(small_channel="false"), _target(options=aipp)),
    }
    keys = {name: json.dumps([b.compile_key(t), dict(b.compile_fields()), t.cache_fields()], sort_keys=True)
            for name, (b, t) in variants.items()}
    assert len(set(keys.values())) == len(keys), keys
    key = AscendBackend().compile_key(_target(options=aipp))
    assert "--insert_op_conf=<dir>/aipp.cfg" in key["atc_command"] and "min_chn_0" in key["aipp_config"]
    assert key["atc_command"][-1] == "--enable_small_channel=1"  # the ATC guide's advice for static AIPP
    assert "--enable_small_channel=1" not in AscendBackend().compile_key(_target())["atc_command"]  # no AIPP
    assert "--enable_small_channel=1" not in AscendBackend(small_channel="false").compile_key(
        _target(options=aipp))["atc_command"]


# --------------------------------------------------------------------------------------------
# npu-smi info


def _seed_npu_table() -> str:
    text = _seed_text("002")
    start = text.index("+-------------------+")
    end = text.index("```", start)
    return text[start:end]


def test_npu_smi_parses_the_seed_table() -> None:
    chips = parse_npu_smi(_seed_npu_table())
    assert [(c.npu_id, c.device_id, c.name, c.health) for c in chips] == [(0, 0, "310P3", "OK"), (1, 1, "310P3", "OK")]
    assert chips[0].bus_id == "0000:82:00.0" and chips[0].memory_used_mb == 1074 and chips[0].memory_total_mb == 21534
    assert resolve_chip(load_chips(), chips[0].name).name == "Ascend310P3"
    assert check_device_free(chips, 1) is None
    assert "not in npu-smi info" in check_device_free(chips, 5)


def _table(row1: str, row2: str, processes: str = "") -> str:
    head = ("| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |\n"
            "| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |\n"
            "+===================+=================+======================================================+\n")
    return head + row1 + "\n" + row2 + "\n" + processes


def test_npu_smi_busy_and_unhealthy_devices_are_refused() -> None:
    ok1 = "| 0       310       | OK              | 12.8         45                0    / 0              |"
    ok2 = "| 0       0         | 0000:05:00.0    | 0            2621 / 8192                             |"
    procs = ("| NPU     Chip      | Process id      | Process name             | Process memory(MB)        |\n"
             "+===================+=================+======================================================+\n"
             "| 0       0         | 4242            | python3                  | 1800                      |\n")
    assert "used by: pid 4242 python3 1800 MB" in check_device_free(parse_npu_smi(_table(ok1, ok2, procs)), 0)
    busy = ok2.replace("| 0            2621", "| 87           2621")
    assert "87% busy" in check_device_free(parse_npu_smi(_table(ok1, busy)), 0)
    sick = ok1.replace("OK     ", "Warning")
    assert "health is Warning" in check_device_free(parse_npu_smi(_table(sick, ok2)), 0)


@pytest.mark.parametrize("text, match", [
    ("", "expected a table"),
    ("command not found", "expected a table"),
    (_table("| 0  310 | OK | 1 2 3 |", ""), "pairs"),
    (_table("| 0  310 | OK | 12 45 0 / 0 |", "| 0  0 | 0000:05:00.0 | x 2621 / 8192 |"), "number for NPU 0 AICore"),
    (_table("| 0  310 | OK | 12 45 0 / 0 |", "| 0  0 | 0000:05:00.0 | 0 lots |"), "used / total"),
    (_table("| zero  310 | OK | 12 45 0 / 0 |", "| 0  0 | bus | 0 1 / 2 |"), "integer for NPU zero id"),
])
def test_npu_smi_malformed_text_is_a_clear_error(text: str, match: str) -> None:
    with pytest.raises(NpuSmiError, match=match):
        parse_npu_smi(text)


# --------------------------------------------------------------------------------------------
# The backend, end to end through the doubles


@pytest.fixture(params=AIS_BENCH_GENERATIONS)
def doubles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The fake atc / npu-smi on PATH and the fake ais_bench importable, for this test only, once per
    published ais_bench API generation (Ascend/tools 2023 and ait / msit)."""
    log = tmp_path / "atc_calls.jsonl"
    env = ascend_env(generation=request.param, FAKE_ATC_LOG=str(log),
                     FAKE_AIS_BENCH_LOG=str(tmp_path / "ais_bench_calls.jsonl"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(DOUBLES))
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, name)
    return log


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real classifier exported to opset-11 ONNX (input "image", 10 classes)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, which opset 11 needs
        torch.onnx.export(model, torch.zeros(1, 3, 32, 32), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}}, opset_version=11, dynamo=False)
    return path


def _ort_logits(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


TINY = dict(chip="Ascend310P3", batch_size=4, input_shape=(3, 32, 32), input_name="image", precision="fp16")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_compile_run_pad_and_time_through_the_doubles(doubles: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    backend = AscendBackend()
    assert backend.unavailable_reason() is None
    target = CompileTarget(**TINY)
    om = backend.compile(tiny_onnx, target, tmp_path)
    assert om == tmp_path / "model.om"
    recorded = json.loads((tmp_path / "atc_command.json").read_text())["command"]
    assert recorded[1:] == json.loads(doubles.read_text().splitlines()[-1])  # what ran is what we recorded
    assert "--input_shape=image:4,3,32,32" in recorded and "--soc_version=Ascend310P3" in recorded
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    with backend.open(om, target, device_id=1, num_classes=10) as session:
        assert isinstance(session, AscendSession) and session.input_dtype == np.float32
        full = session.infer(x[:4])
        short = session.infer(x[4:])  # 3 images: padded to the static 4, padding dropped
        assert short.shape == (3, 10)
        assert len(session.compute_times_ms()) == 2  # one NPU compute time per infer()
        with pytest.raises(InferenceError, match="expected float32"):
            session.infer(x[:4].astype(np.float64))
        with pytest.raises(InferenceError, match="1..4"):
            session.infer(np.concatenate([x, x]))
    np.testing.assert_allclose(np.concatenate([full, short]), _ort_logits(tiny_onnx, x), rtol=1e-5, atol=1e-5)
    assert backend.compiled_precision(target) == "force_fp16"  # what the records show: ATC's default here
    assert backend.describe()["ais_bench_api"] == {"tools-2023": "finalize instance, sumary",
                                          "ait": "finalize static, summary, free_resource"}[os.environ[
                                              "FAKE_AIS_BENCH_GENERATION"]]


@pytest.mark.parametrize("options, precision, expected", [
    ({}, "fp32", "force_fp32"),
    ({"precision_mode": "cube_fp16in_fp32out"}, "fp32", "cube_fp16in_fp32out"),
    ({"precision_mode_v2": "origin"}, "fp32", "precision_mode_v2=origin"),
])
def test_the_recorded_precision_is_the_mode_atc_was_given(
    doubles: Path, tiny_onnx: Path, tmp_path: Path, options: dict[str, str], precision: str, expected: str
) -> None:
    backend = AscendBackend(**options)
    target = CompileTarget(**{**TINY, "precision": precision})
    om = backend.compile(tiny_onnx, target, tmp_path)
    assert om.is_file() and backend.compiled_precision(target) == expected
    ran = json.loads(doubles.read_text().splitlines()[-1])  # the argv the fake atc was given
    assert [a for a in ran if a.startswith("--precision_mode")] == [
        f"--precision_mode_v2={expected.partition('=')[2]}" if "=" in expected else f"--precision_mode={expected}"]


def test_aipp_takes_uint8_pixels_and_matches_host_normalization(doubles: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    backend = AscendBackend()
    options = {"aipp": "static", "mean": ",".join(map(str, MEAN)), "std": ",".join(map(str, STD))}
    target = CompileTarget(**TINY, options=options)
    om = backend.compile(tiny_onnx, target, tmp_path)
    assert parse_aipp_config((tmp_path / "aipp.cfg").read_text())["input_format"] == "RGB888_U8"
    assert json.loads(doubles.read_text().splitlines()[-1])[-1] == "--enable_small_channel=1"
    pixels = np.random.default_rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    with backend.open(om, target, num_classes=10) as session:
        assert session.input_dtype == np.uint8
        got = session.infer(pixels)
    normalized = ((pixels / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]).astype(np.float32)
    np.testing.assert_allclose(got, _ort_logits(tiny_onnx, normalized), rtol=1e-4, atol=1e-4)


def test_atc_failure_carries_its_message(doubles: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    target = CompileTarget(**{**TINY, "input_name": "actual_input_1"})  # not the model's input name
    with pytest.raises(ToolError) as info:
        AscendBackend().compile(tiny_onnx, target, tmp_path)
    message = str(info.value)
    assert "exit status 1" in message and "E10016" in message and "actual_input_1" in message
    assert "--input_shape=actual_input_1:4,3,32,32" in message  # the command, pasteable


def test_wrong_device_and_wrong_model_are_clear(doubles: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    backend = AscendBackend()
    target = CompileTarget(**TINY)
    om = backend.compile(tiny_onnx, target, tmp_path)
    with pytest.raises(InferenceError, match=r"device 7.*107001.*lists device\(s\) \[0, 1\], not 7: fix --device-ids"):
        with backend.open(om, target, device_id=7, num_classes=10):
            pass
    with pytest.raises(InferenceError, match="compiled for another batch size"):
        with backend.open(om, CompileTarget(**{**TINY, "batch_size": 8}), num_classes=10):
            pass


def test_without_a_driver_a_failed_load_is_unavailable(doubles: Path, tiny_onnx: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A compile-only host: CANN's atc and ais_bench installed, no driver (no npu-smi, no device)."""
    backend = AscendBackend()
    target = CompileTarget(**TINY)
    om = backend.compile(tiny_onnx, target, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "atc").symlink_to(DOUBLES / "bin" / "atc")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("FAKE_NPU_DEVICES", "")
    with pytest.raises(BackendUnavailable, match="107001.*no Ascend driver on this host: install the Ascend driver"):
        with backend.open(om, target, device_id=0, num_classes=10):
            pass


def test_preflight_refuses_a_busy_device(doubles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = AscendBackend()
    backend.preflight(0)
    assert backend.device_checks[0].startswith("idle: 310P3")
    busy = _seed_npu_table().replace("| 0            1074", "| 55           1074")
    (tmp_path / "busy.txt").write_text(busy)
    monkeypatch.setenv("FAKE_NPU_SMI_TEXT", str(tmp_path / "busy.txt"))
    with pytest.raises(DeviceBusy, match="device 0 .*55% busy.*--device-ids"):
        backend.preflight(0)
    AscendBackend(check_device="false").preflight(0)


def test_unavailable_without_the_tools_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    reason = AscendBackend().unavailable_reason()
    assert "`atc` is not on PATH" in reason and "set_env.sh" in reason
    assert "ais_bench is not installed" in reason and "aclruntime" in reason


# --------------------------------------------------------------------------------------------
# ACL finalize, in both ais_bench generations


def _fake_interface(monkeypatch: pytest.MonkeyPatch, generation: str):
    """The fake ais_bench interface module of ``generation``, freshly imported."""
    monkeypatch.setenv("FAKE_AIS_BENCH_GENERATION", generation)
    monkeypatch.syspath_prepend(str(DOUBLES))
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, name)
    import ais_bench.infer.interface as interface

    return interface


def test_finalize_kind_of_each_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert finalize_kind(_fake_interface(monkeypatch, "tools-2023").InferSession) == "instance"
    assert finalize_kind(_fake_interface(monkeypatch, "ait").InferSession) == "static"
    assert finalize_kind(object) == "absent"


def test_finalizer_calls_the_generations_finalize_once() -> None:
    calls: list[str] = []

    class Old:  # Ascend/tools: finalize(self)
        def finalize(self) -> None:
            calls.append(f"old {id(self)}")

    class New:  # ait: @staticmethod finalize()
        @staticmethod
        def finalize() -> None:
            calls.append("new")

    finalizer = AclFinalizer()
    first, last = Old(), Old()
    finalizer.track(Old, first)
    finalizer.track(Old, last)  # the most recent session is the one finalized
    finalizer.finalize()
    finalizer.finalize()  # a second run has nothing left to do
    assert calls == [f"old {id(last)}"]
    finalizer.track(New, New())
    finalizer.finalize()
    assert calls[-1] == "new" and len(calls) == 2


_OPEN_TWICE_AND_EXIT = """
import sys
from pathlib import Path

import numpy as np

from harness.backends.ascend import AscendBackend
from harness.specs import CompileTarget

onnx, out = Path(sys.argv[1]), Path(sys.argv[2])
backend = AscendBackend()
target = CompileTarget(chip="Ascend310P3", batch_size=4, input_shape=(3, 32, 32), input_name="image", precision="fp16")
om = backend.compile(onnx, target, out)
for _ in range(2):  # a run opens many sessions: ACL must outlive each of them
    with backend.open(om, target, num_classes=10) as session:
        session.infer(np.zeros((4, 3, 32, 32), np.float32))
"""


@pytest.mark.parametrize("generation", AIS_BENCH_GENERATIONS)
def test_a_process_that_opened_sessions_exits_cleanly_with_acl_finalized_once(
    tiny_onnx: Path, tmp_path: Path, generation: str
) -> None:
    """Registering ``InferSession.finalize`` itself with atexit raises TypeError at exit with the
    Ascend/tools generation (an instance method) and leaves ACL un-finalized: not any more."""
    log = tmp_path / "ais_bench.jsonl"
    env = ascend_env(generation=generation, FAKE_AIS_BENCH_LOG=str(log))
    proc = subprocess.run([sys.executable, "-c", _OPEN_TWICE_AND_EXIT, str(tiny_onnx), str(tmp_path)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.count("finalize") == 1 and events[-1] == "finalize", events
    assert events == {"tools-2023": ["init", "init", "finalize"],  # no free_resource in this generation
                      "ait": ["init", "free_resource", "init", "free_resource", "finalize"]}[generation]


def test_exec_time_list_in_both_documented_forms() -> None:
    class S:
        exec_time_list = [1.5, 2.5]

    class Pairs:
        exec_time_list = [(100.0, 101.5), (200.0, 202.0)]

    assert exec_times_ms(S()) == [1.5, 2.5]
    assert exec_times_ms(Pairs()) == [1.5, 2.0]
