"""On a CPU without bf16 every bf16 path skips or refuses with the missing capability named, and
nothing errors.

The CPU of these machines changes between days (DESIGN.md, "Measured on these machines"): an
EPYC with AVX-512-BF16, or one without any AVX-512, whose OpenVINO CPU plugin lists only
``FP32, INT8, BIN, EXPORT_IMPORT``. These tests are that second CPU on either machine, two ways:

- in this process, the backend's capability query (``OPTIMIZATION_CAPABILITIES`` asked of the
  ``openvino.Core`` that :meth:`OpenVinoBackend.core` returns) gets that list; the rest is the
  real OpenVINO;
- in subprocesses, OpenVINO's own ISA caps ``OV_CPU_MAX_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``: the
  real CPU plugin then lists exactly that and compiles bf16 and f16 hints as f32, as the other
  machine does. The conformance suite, tests/test_openvino.py and an acceptance run with
  ``--backend openvino --precision bf16`` run that way and must skip their bf16 parts, saying why.

Any part of the suite runs as on the CPU without AVX-512 the same way:
``OV_CPU_MAX_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python -m pytest tests/conformance``.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from suite_runner import ROOT, run_suite
from test_backends import CLASSES, SHAPE, expected

from harness.backends.base import BackendUnavailable
from tests.conftest import one_process_env

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'openvino>=2024.0'")

import test_openvino  # noqa: E402

# The same tiny model, weights and targets as test_openvino.py (fixtures bound here to be found).
onnx_path, weight, target = test_openvino.onnx_path, test_openvino.weight, test_openvino.target

from harness.backends.openvino import ISA_CAP_VARIABLES, OpenVinoBackend  # noqa: E402

# What OpenVINO's CPU plugin lists on the EPYC without AVX-512 these machines sometimes are.
NO_AVX512 = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]
CAPPED = dict.fromkeys(ISA_CAP_VARIABLES, "AVX2")


class CoreOfACpuWithoutAvx512:
    """The real ``openvino.Core``, except that its devices answer OPTIMIZATION_CAPABILITIES with
    :data:`NO_AVX512`."""

    def __init__(self, core: Any) -> None:
        self._core = core

    def get_property(self, device: str, name: str, *args: Any) -> Any:
        if name == "OPTIMIZATION_CAPABILITIES":
            return list(NO_AVX512)
        return self._core.get_property(device, name, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


@pytest.fixture
def without_bf16(monkeypatch: pytest.MonkeyPatch) -> OpenVinoBackend:
    """An OpenVINO backend whose capability query gets the no-AVX-512 CPU's answer."""
    backend = OpenVinoBackend(threads=1)
    core = CoreOfACpuWithoutAvx512(ov.Core())
    monkeypatch.setattr(backend, "core", lambda: core)
    return backend


def out_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


# --------------------------------------------------------------------------------------------
# The backend, in this process


@pytest.mark.parametrize("precision, capability, isa", [("bf16", "BF16", "AVX512_BF16 or AMX"),
                                                         ("fp16", "FP16", "AVX512_FP16 or AMX-FP16")])
def test_a_reduced_precision_is_refused_before_converting_and_the_capability_named(
        without_bf16: OpenVinoBackend, onnx_path: Path, tmp_path: Path, precision: str, capability: str,
        isa: str) -> None:
    assert without_bf16.capabilities() == NO_AVX512 == without_bf16.describe()["capabilities"]
    out = out_dir(tmp_path, precision)
    with pytest.raises(BackendUnavailable) as refused:
        without_bf16.compile(onnx_path, target(precision), out)
    message = str(refused.value)
    assert f"openvino CPU cannot run {precision} natively" in message
    assert f"OPTIMIZATION_CAPABILITIES are FP32, INT8, BIN, EXPORT_IMPORT, no {capability}" in message
    assert f"x86 CPUs list it with {isa}" in message
    # The fix offered is a precision this CPU runs, not the other reduced one it lacks as well.
    assert "use --precision fp32, or set backend_options allow_precision_fallback" in message
    assert not any(out.iterdir())


def test_an_ir_made_on_a_bf16_day_does_not_open_as_bf16(without_bf16: OpenVinoBackend, onnx_path: Path,
                                                        tmp_path: Path) -> None:
    # The IR holds f32 weights whatever the precision (it is chosen at open), so a cached IR from a
    # machine with bf16 reaches open() on one without: open must refuse by itself.
    artifact = OpenVinoBackend(threads=1).compile(onnx_path, target("fp32"), out_dir(tmp_path, "ir"))
    with pytest.raises(BackendUnavailable, match=r"cannot run bf16 natively.*no BF16"):
        with without_bf16.open(artifact, target("bf16"), num_classes=CLASSES):
            pass
    assert without_bf16.opened == {}


def test_fp32_still_compiles_and_runs_exactly(without_bf16: OpenVinoBackend, onnx_path: Path, tmp_path: Path,
                                             weight: np.ndarray) -> None:
    batch = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    t = target("fp32")
    artifact = without_bf16.compile(onnx_path, t, out_dir(tmp_path, "ir"))
    with without_bf16.open(artifact, t, num_classes=CLASSES) as session:
        np.testing.assert_allclose(session.infer(batch), expected(batch, weight), rtol=1e-5, atol=1e-6)
    assert without_bf16.describe()["sessions"]["f32"]["inference_precision"] == "f32"


def test_a_run_under_isa_caps_records_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "isa_cap" not in OpenVinoBackend().describe()
    for name, value in CAPPED.items():
        monkeypatch.setenv(name, value)
    assert OpenVinoBackend().describe()["isa_cap"] == {"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


# --------------------------------------------------------------------------------------------
# The suites, in subprocesses on OpenVINO capped to AVX2


@pytest.fixture(scope="module")
def capped_env() -> dict[str, str]:
    """This environment plus OpenVINO's ISA caps, once they are shown to hide BF16 here."""
    env = {**one_process_env(), **CAPPED}
    probe = subprocess.run(
        [sys.executable, "-c",
         "from harness.backends.openvino import OpenVinoBackend; print(*OpenVinoBackend().capabilities())"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    listed = probe.stdout.split()
    if "BF16" in listed:
        pytest.skip(f"OpenVINO {ov.get_version()} still lists BF16 with {CAPPED} (capabilities: "
                    f"{', '.join(listed)}): its ISA caps do not work on this CPU or build")
    return env


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Test case name -> (passed | skipped | failed | error, skip or failure message)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("skipped", "failure", "error"):
            element = case.find(kind)
            if element is not None:
                outcome, message = kind.replace("failure", "failed"), element.get("message", "")
        found[case.get("name", "")] = (outcome, message)
    return found


def not_clean(results: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {name: result for name, result in results.items() if result[0] in ("failed", "error")}


@pytest.mark.slow
def test_the_openvino_suites_skip_bf16_with_the_reason_and_error_nowhere(tmp_path: Path,
                                                                         capped_env: dict[str, str]) -> None:
    proc, _ = run_suite(tmp_path, "tests/conformance/test_backend_conformance.py", "tests/test_openvino.py",
                        "-k", "openvino", env=capped_env)
    results = outcomes(tmp_path / "junit.xml")
    assert proc.returncode == 0 and not not_clean(results), (not_clean(results), proc.stdout[-3000:])
    bf16 = {name: result for name, result in results.items() if "[openvino-bf16" in name}
    f32 = {name: result for name, result in results.items() if "[openvino-f32" in name}
    assert bf16 and len(bf16) == len(f32)
    for name, (outcome, message) in bf16.items():
        assert outcome == "skipped", name
        assert "openvino CPU cannot run bf16 natively" in message and "no BF16" in message, message
    # f32 runs on that CPU: the whole contract, agreement with torch included.
    assert {outcome for outcome, _ in f32.values()} == {"passed"}
    outcome, message = results["test_the_precision_hint_is_set_explicitly_and_what_ran_is_recorded"]
    assert outcome == "skipped" and "OPTIMIZATION_CAPABILITIES are FP32, INT8, BIN, EXPORT_IMPORT, no BF16" in message
    # With the fallback allowed, what such a CPU picks for an f16 hint (f32) is run and recorded.
    assert results["test_a_precision_the_cpu_lacks_is_refused_or_recorded"][0] == "passed"


@pytest.mark.slow
def test_an_acceptance_run_at_bf16_skips_and_says_which_capability_is_missing(tmp_path: Path,
                                                                              capped_env: dict[str, str]) -> None:
    proc, _ = run_suite(tmp_path, "acceptance", "-m", "agreement or perf", "--backend", "openvino",
                        "--precision", "bf16", "--models", "efficientnet_lite0", env=capped_env)
    results = outcomes(tmp_path / "junit.xml")
    assert proc.returncode == 0 and not not_clean(results), (not_clean(results), proc.stdout[-3000:])
    runs = {name: result for name, result in results.items()
            if name.startswith(("test_agreement[", "test_throughput[")) and "efficientnet_lite0" in name}
    assert {name.split("[")[0] for name in runs} == {"test_agreement", "test_throughput"}
    for name, (outcome, message) in runs.items():
        assert outcome == "skipped", name
        assert "backend unavailable: openvino CPU cannot run bf16 natively" in message, message
        assert "no BF16" in message and "use --precision fp32" in message, message
    assert "Traceback" not in proc.stdout + proc.stderr
