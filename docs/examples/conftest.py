"""An example of a lab's ``conftest.py``: the modelzoo-cert hooks (docs/extending.md).

Put these functions in a ``conftest.py`` pytest loads (next to the tests, e.g. ``acceptance/``), or
in a module loaded as a plugin: ``PYTHONPATH=lab pytest -p lab_hooks -m perf ...``. This one

- adds two fields to the run record's ``environment``: the lab's site and the machine's rack, from
  the environment variables ``LAB_SITE`` and ``LAB_RACK``;
- counts the records the run appends to the results file, by kind;
- at the end writes ``lab-summary.json`` beside the results file: the counts, the exit status and
  the results file's path (where a lab would upload the results to its own database).

tests/test_extending.py runs the suite with it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

_RECORDS = pytest.StashKey[Counter[str]]()


def pytest_mzc_environment_fields(config: pytest.Config) -> dict[str, str]:
    """Recorded in the run record's environment beside the suite's host, cpu, packages...; a name the
    suite records itself (``host``) would be refused, so the lab's fields carry a ``lab_`` prefix."""
    return {"lab_site": os.environ.get("LAB_SITE", "unknown"), "lab_rack": os.environ.get("LAB_RACK", "unknown")}


def pytest_mzc_record(config: pytest.Config, record: Mapping[str, Any]) -> None:
    """Every record as appended to the results file (a read-only copy), the run record last."""
    config.stash.setdefault(_RECORDS, Counter())[str(record.get("kind"))] += 1


def pytest_mzc_session_finished(config: pytest.Config, results_path: Path, exitstatus: int) -> None:
    """The end of the run, after the run record and the report were written."""
    counts = config.stash.get(_RECORDS, None)
    summary = {"results": str(results_path), "exit_status": exitstatus, "records": dict(counts or {})}
    results_path.parent.mkdir(parents=True, exist_ok=True)  # absent when the run recorded nothing
    results_path.with_name("lab-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
