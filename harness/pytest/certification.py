"""A run that certifies nothing is not green: ``--strict-certification`` and the run's last line.

``--strict-certification`` (harness.options; the nightly recipe uses it; pytest owns ``--strict``) turns every
skipped accuracy, agreement or perf certification into a failure with the same reason: a runner
that lost its toolkit, its device or its data must not report success. Without it the run's last
line still says how many models were certified and how many were not, and why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Sequence
from typing import Any

import pytest

CERTIFYING_MARKERS = ("accuracy", "agreement", "perf")
CERTIFYING_KINDS = ("accuracy", "agreement", "perf", "perf_ratio")
RECORDER = "modelzoo-cert-results"  # harness.pytest.plugin registers its ResultsRecorder under this name
MAX_REASON = 110


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside harness.pytest.outcomes: sees its skips
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (report.skipped and isinstance(report.longrepr, tuple) and item.config.getoption("--strict-certification")
            and any(item.get_closest_marker(m) for m in CERTIFYING_MARKERS) and _asked(item)):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"--strict-certification: not certified, the test could not run: {reason}"
    return report


def _asked(item: pytest.Item) -> bool:
    """Whether the run asked for this certification: a ``requires_option("--predictions")``
    test certifies predictions made elsewhere only when they are given, and a case the plugin
    marked ``skip`` at collection (a chip without throughput rules) has nothing to certify."""
    if item.get_closest_marker("skip") is not None:
        return False
    marker = item.get_closest_marker("requires_option")
    return marker is None or bool(item.config.getoption(marker.args[0]))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def tally(records: Sequence[Any]) -> str | None:
    """``certification: 1 of 2 models certified (a); not certified: b (why)`` from the run's typed
    records (harness.records.schema); None when the run had no certification test. A model is
    certified when every certification test of it ran and passed."""
    why: dict[str, list[str]] = defaultdict(list)
    models: list[str] = []
    for r in records:
        if r.kind not in CERTIFYING_KINDS or r.model is None:
            continue
        if r.model not in models:
            models.append(r.model)
        if r.outcome != "passed":
            what = "skipped" if r.outcome == "skipped" else f"verdict {r.verdict}" if r.verdict else "not run"
            why[r.model].append(f"{r.kind} {what}: {_short(r.meta.reason or '')}")
    if not models:
        return None
    certified = [m for m in models if m not in why]
    line = f"certification: {len(certified)} of {len(models)} model(s) certified"
    if certified:
        line += f" ({', '.join(certified)})"
    if why:
        line += "; not certified: " + "; ".join(
            f"{m} ({reasons[0]}{f' and {len(reasons) - 1} more' if len(reasons) > 1 else ''})"
            for m, reasons in why.items())
    return line


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary line: the certification tally is the run's last line."""
    recorder = config.pluginmanager.get_plugin(RECORDER)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    line = tally(getattr(recorder, "records", ())) if recorder is not None else None
    if line and reporter is not None:
        reporter.write_line(line)
