"""harness.pytest.outcomes: the harness's exceptions become skips and failures by their class alone,
in a test body or in a fixture, in a real pytest run (a subprocess on a generated test file)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TESTS = '''
import pytest
from harness.errors import HarnessError, NotApplicable, NotCertified, NotReady, UsageError
from harness.backends.base import BackendUnavailable


def deep_helper():
    raise HarnessError("the tool crashed: exit 139")


@pytest.fixture
def needs_npu():
    raise BackendUnavailable("no Ascend driver here: install CANN")


def test_not_applicable():
    raise NotApplicable("no GPU: run on a host with an NVIDIA driver")


def test_not_applicable_in_a_fixture(needs_npu):
    pass


def test_not_certified():
    raise NotCertified("top-1 73.1 < floor 76.618")


def test_usage_error():
    raise UsageError("--limit must be positive, got 0")


def test_not_ready():
    raise NotReady("device 0 is busy: process 4242 runs on it")


def test_other_harness_error():
    deep_helper()


def test_plain_assertion():
    assert 1 == 2
'''


def test_each_family_has_its_outcome(tmp_path: Path) -> None:
    (tmp_path / "test_generated.py").write_text(TESTS)
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "MZC_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={junit}",
         "--no-report", f"--results={tmp_path / 'results.jsonl'}", "-rs", "test_generated.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}

    def skipped(name: str) -> str:
        element = cases[name].find("skipped")
        assert element is not None, (name, proc.stdout[-3000:])
        return element.get("message", "")

    def failure(name: str) -> str:
        element = cases[name].find("failure")
        assert element is not None, (name, proc.stdout[-3000:])
        return element.text or ""

    assert "no GPU: run on a host with an NVIDIA driver" in skipped("test_not_applicable")
    assert "no Ascend driver here: install CANN" in skipped("test_not_applicable_in_a_fixture")
    assert cases["test_not_applicable_in_a_fixture"].find("error") is None  # a skip, not a setup error
    for name, message, kind in (
            ("test_not_certified", "FAIL: top-1 73.1 < floor 76.618", "certification failure"),
            ("test_usage_error", "ERROR UsageError: --limit must be positive, got 0", "error"),
            ("test_not_ready", "ERROR NotReady: device 0 is busy: process 4242 runs on it", "error")):
        text = failure(name)
        assert text.strip() == message, text  # the verdict alone, its word first: no traceback
        element = cases[name].find("failure")
        assert element is not None and element.get("message") == message and element.get("type") == kind
    assert "def deep_helper" in failure("test_other_harness_error")  # a broken tool keeps its traceback
    assert "assert 1 == 2" in failure("test_plain_assertion")  # pytest's own reports are untouched
    assert proc.returncode == 1
