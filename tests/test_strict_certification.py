"""--strict-certification (harness/pytest/certification.py): a skipped certification the run asked
for fails with its reason; a case with nothing to certify, and any other test, keeps its skip."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GENERATED = '''
import pytest

@pytest.mark.accuracy
def test_accuracy_without_data():
    pytest.skip("accuracy not certified: no ImageNet given; pass --imagenet DIR")

@pytest.mark.perf
@pytest.mark.skip(reason="cpu has no throughput rules in fixtures/chips.toml (nothing to compare with)")
def test_ratio_without_rules():
    pass

@pytest.mark.accuracy
@pytest.mark.requires_option("--predictions")
def test_predictions_not_given():
    pytest.skip("no --predictions DIR given")

def test_not_a_certification():
    pytest.skip("no GPU here")
'''


def _outcomes(tmp_path: Path, *extra: str) -> tuple[dict[str, tuple[str, str]], str]:
    (tmp_path / "test_generated.py").write_text(GENERATED)
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--no-report",
            f"--results={tmp_path / 'r.jsonl'}",
            f"--junitxml={junit}",
            "test_generated.py",
            *extra,
        ],
        cwd=tmp_path,
        env={**os.environ, "MZC_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure, skipped = case.find("failure"), case.find("skipped")
        found[case.get("name", "")] = (
            ("failed", failure.get("message", "") + (failure.text or ""))
            if failure is not None
            else ("skipped", skipped.get("message", ""))
            if skipped is not None
            else ("passed", "")
        )
    return found, proc.stdout


def test_without_the_option_every_skip_stays_a_skip(tmp_path: Path) -> None:
    found, _ = _outcomes(tmp_path)
    assert {name: outcome for name, (outcome, _) in found.items()} == dict.fromkeys(found, "skipped")
    assert len(found) == 4


def test_with_it_only_an_asked_certification_fails_with_its_reason(tmp_path: Path) -> None:
    found, out = _outcomes(tmp_path, "--strict-certification")
    outcome, text = found["test_accuracy_without_data"]
    assert outcome == "failed" and "--strict-certification" in text and "no ImageNet given" in text, out[-2000:]
    for name in ("test_ratio_without_rules", "test_predictions_not_given", "test_not_a_certification"):
        assert found[name][0] == "skipped", (name, found[name])
