"""The environment fingerprint recorded once per run (issue 6 item 4)."""

from __future__ import annotations

import json

import pytest

from harness.environment import fingerprint
from tests.doubles import ascend_env


def test_fingerprint_names_machine_and_packages():
    env = fingerprint()
    assert env["cores"] >= 1 and env["usable_cores"] >= 1
    assert env["cpu"] and env["os"] and env["python"].count(".") == 2
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(env["packages"])
    json.dumps(env)  # goes into the results file as is


def test_fingerprint_records_npu_smi_chips_when_the_driver_is_there(monkeypatch: pytest.MonkeyPatch):
    """Through the npu-smi TEST DOUBLE printing seed 002's table: two 310P3 devices."""
    for key, value in ascend_env().items():
        monkeypatch.setenv(key, value)
    npu = fingerprint()["ascend"]["npu_smi"]
    assert npu["chips"] == ["310P3"]
    assert [d["device_id"] for d in npu["devices"]] == [0, 1]


def test_fingerprint_keeps_going_when_npu_smi_prints_garbage(monkeypatch: pytest.MonkeyPatch, tmp_path):
    garbage = tmp_path / "npu-smi.txt"
    garbage.write_text("dcmi module initialize failed. ret is -8005\n")
    for key, value in ascend_env(FAKE_NPU_SMI_TEXT=str(garbage)).items():
        monkeypatch.setenv(key, value)
    npu = fingerprint()["ascend"]["npu_smi"]
    assert "chips" not in npu and npu["error"]


def test_fingerprint_has_no_ascend_section_without_the_driver(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = fingerprint()
    assert "npu_smi" not in env.get("ascend", {})


def test_cann_version_files_are_read_by_their_version_line(tmp_path):
    from harness.versions import version_from_file

    cfg = tmp_path / "version.cfg"
    cfg.write_text("# CANN\npackage_name=Ascend-cann-toolkit\nversion=7.0.RC1\ninnerversion=V100R001C13\n")
    assert version_from_file(cfg) == "7.0.RC1"
    assert version_from_file(tmp_path / "absent.cfg") is None
    (tmp_path / "empty.cfg").write_text("no versions here\n")
    assert version_from_file(tmp_path / "empty.cfg") is None


def test_cpu_features_are_read_from_the_flags_line():
    """The two CPUs these machines alternate between, as /proc/cpuinfo shows them."""
    from harness.environment import cpu_features

    bf16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 avx512bw\n"
    plain = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    assert cpu_features(bf16) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert cpu_features(plain) == ["avx2"]
    assert cpu_features("Hardware\t: some arm board\n") == []
    assert isinstance(fingerprint()["cpu_features"], list)
