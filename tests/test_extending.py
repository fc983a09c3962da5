"""The lab hooks (harness/pytest/hookspec.py, docs/extending.md): the documented example runs with the
real suite, and what a plugin returns is checked like outside data, never overwriting the suite's
own fields."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from suite_runner import ROOT, run_suite

from harness.environment import fingerprint
from harness.pytest.extensions import SUITE_ENVIRONMENT_FIELDS, ExtensionError, environment_fields

pytest_plugins = ["pytester"]

EXAMPLE = ROOT / "docs" / "examples" / "conftest.py"
SEED_310P = ROOT / "fixtures" / "baselines" / "Ascend310P3.csv"
PERF = ("acceptance", "-m", "perf", "--chip", "310P3", "--models", "resnext50_32x4d", "--measurements", str(SEED_310P))


def _run_with_plugin(tmp_path: Path, module: str, source: str, **env: str) -> tuple[int, str, list[dict[str, object]]]:
    """The perf suite on the seeds' figures (no model runs) with ``source`` loaded as ``-p module``."""
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / f"{module}.py").write_text(source)
    path = os.pathsep.join(p for p in (str(lab), os.environ.get("PYTHONPATH", "")) if p)
    proc, _ = run_suite(tmp_path, *PERF, "-p", module, env={**os.environ, **env, "PYTHONPATH": path})
    results = tmp_path / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, records


def test_the_documented_example_adds_its_fields_and_sees_every_record(tmp_path: Path) -> None:
    code, output, records = _run_with_plugin(tmp_path, "lab_hooks", EXAMPLE.read_text(),
                                             LAB_SITE="bench 7", LAB_RACK="r12\x1b[2J\nu3")
    assert code == 0, output[-3000:]
    run = records[-1]
    assert run["kind"] == "run" and [r["kind"] for r in records].count("run") == 1
    environment = run["environment"]
    assert environment["lab_site"] == "bench 7"
    assert environment["lab_rack"] == "r12\\x1b[2J\\nu3"  # outside data: recorded escaped, one line
    assert environment["host"] and "packages" in environment  # the suite's own fields, as before
    summary = json.loads((tmp_path / "lab-summary.json").read_text())  # the finish hook ran, last
    kinds: dict[str, int] = {}
    for record in records:
        kinds[str(record["kind"])] = kinds.get(str(record["kind"]), 0) + 1
    assert summary == {"results": str(tmp_path / "results.jsonl"), "exit_status": 0, "records": kinds}
    assert kinds["run"] == 1 and sum(kinds.values()) == len(records) > 1  # every record, each once


CLASH = '''
def pytest_mzc_environment_fields(config):
    return {"host": "lab-host-name"}
'''


@pytest.mark.slow
def test_a_field_the_suite_records_is_refused_naming_the_plugin_and_the_run_fails(tmp_path: Path) -> None:
    code, output, records = _run_with_plugin(tmp_path, "lab_clash", CLASH)
    assert code == 1, output[-3000:]
    assert ("error: plugin lab_clash: pytest_mzc_environment_fields returned the field 'host', the suite's own "
            "environment field") in output
    assert "Traceback" not in output
    run = records[-1]  # the records and the run record are kept, with the suite's own fields only
    assert run["kind"] == "run" and run["environment"]["host"] != "lab-host-name"
    assert all(r["outcome"] == "passed" for r in records[:-1])


class _Lab:
    def __init__(self, fields: object):
        self.fields = fields

    def pytest_mzc_environment_fields(self, config: pytest.Config) -> object:
        if isinstance(self.fields, Exception):
            raise self.fields
        return self.fields


@pytest.mark.parametrize(("fields", "message"), [
    ({"cpu": "x"}, "plugin lab-a: pytest_mzc_environment_fields returned the field 'cpu', the suite's own environment "
                   "field; a plugin adds fields and never replaces one: name it otherwise (like lab_cpu)"),
    ({"ascend": "x"}, "the field 'ascend', the suite's own"),  # recorded on Ascend hosts only: reserved everywhere
    ({"Lab Rack": "x"}, "returned the field name 'Lab Rack'; expected lower-case letters, digits and _"),
    ({"lab_rack": 12}, "returned int for the field 'lab_rack'; expected text of at most 512 characters"),
    ({"lab_rack": "x" * 513}, "returned 513 characters for the field 'lab_rack'"),
    (["lab_rack"], "plugin lab-a: pytest_mzc_environment_fields returned list; expected a dict of name: text"),
    (RuntimeError("no rack file\x1b[2J"), "plugin lab-a: pytest_mzc_environment_fields raised RuntimeError: "
                                          "no rack file\\x1b[2J"),
])
def test_what_a_plugin_returns_is_checked(pytester: pytest.Pytester, fields: object, message: str) -> None:
    config = pytester.parseconfigure()
    config.pluginmanager.register(_Lab(fields), "lab-a")
    with pytest.raises(ExtensionError) as info:
        environment_fields(config, fingerprint())
    assert message in str(info.value)


def test_two_plugins_never_share_a_field_and_good_fields_are_kept(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    config.pluginmanager.register(_Lab({"lab_site": "a", "lab_rack": "r1\tb"}), "lab-a")
    assert environment_fields(config, fingerprint()) == {"lab_site": "a", "lab_rack": "r1\\tb"}
    config.pluginmanager.register(_Lab({"lab_rack": "r2"}), "lab-b")
    with pytest.raises(ExtensionError) as info:  # the last registered is called first (pluggy's order)
        environment_fields(config, fingerprint())
    assert str(info.value) == ("plugin lab-a: pytest_mzc_environment_fields returned the field 'lab_rack', already "
                               "returned by plugin lab-b; a field has one owner: rename it in one of the two")


def test_the_reserved_names_are_every_field_the_suite_records() -> None:
    assert set(fingerprint()) <= SUITE_ENVIRONMENT_FIELDS


def test_the_example_is_a_valid_conftest(pytester: pytest.Pytester) -> None:
    """As a conftest.py (not -p): pytest takes its hooks, checked against the plugin's specifications."""
    shutil.copy(EXAMPLE, pytester.path / "conftest.py")
    config = pytester.parseconfigure()
    assert environment_fields(config, fingerprint()) == {"lab_site": os.environ.get("LAB_SITE", "unknown"),
                                                         "lab_rack": os.environ.get("LAB_RACK", "unknown")}
