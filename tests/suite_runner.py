"""Run the real acceptance suite in a subprocess, as a user would, and read its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, str]]]:
    """``env``: the subprocess environment (default: this one), e.g. tests.doubles.ascend_env()."""
    junit = tmp_path / "junit.xml"
    env = {**(os.environ if env is None else env), "MZC_PROGRESS": "0"}
    env.setdefault("MZC_CACHE_DIR", str(tmp_path / "cache"))
    proc = subprocess.run(
        # (the certification suite uses no Hypothesis: its pytest plugin is not loaded, ~0.2 s a run)
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", f"--junitxml={junit}",
         f"--results={tmp_path / 'results.jsonl'}",
         f"--report-dir={tmp_path / 'report'}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    cases: dict[str, dict[str, str]] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
            outcome = "skipped" if case.find("skipped") is not None else "failed" if (
                case.find("failure") is not None or case.find("error") is not None) else "passed"
            cases[case.get("name", "")] = {"outcome": outcome, **props}
    return proc, cases
