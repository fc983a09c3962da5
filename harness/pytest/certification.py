"""A run that certifies nothing is not green: verdict-first skips, ``--strict-certification`` and the run's last line.

Every skipped certification (accuracy, agreement, conversion, perf, perf ratio, predictions) the run
asked for reads ``NOT CERTIFIED <kind>: <reason>`` on its first line (harness.judge.headline), as
its verdicts read ``FAIL ...`` / ``INCONCLUSIVE ...`` (harness.judge.gates.certify).
``--strict-certification`` (harness.options; the nightly recipe uses it; pytest owns ``--strict``)
turns every skipped accuracy, agreement or perf certification into a failure with the same reason:
a runner that lost its toolkit, its device or its data must not report success. Without it the
run's last line (:func:`tally`) still says how many models were certified, how many only
inconclusive (allowed), how many not, and why, grouped by kind with the option that fixes it; the
per-model list (:func:`per_model`) is in the summary above it (harness.pytest.recorder).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Sequence
from typing import Any

import pytest

from harness.judge.headline import (
    ALLOWED,
    FAIL,
    INCONCLUSIVE,
    MAX_HEADLINE,
    NOT_CERTIFIED,
    clip,
    first_line,
    fix_of,
    skip_headline,
    verdict_word,
)
from harness.pytest.junit import finish as finish_junit
from harness.records.certified import CERTIFIED, MODEL_STATUSES, certifications, model_status, record_status
from harness.records.certified import NOT_CERTIFIED as MODEL_NOT_CERTIFIED

CERTIFYING_MARKERS = ("accuracy", "agreement", "perf")
HEADLINE_MARKERS = ("conversion", "agreement", "accuracy", "perf")  # tests whose skips say NOT CERTIFIED
RECORDER = "modelzoo-cert-results"  # harness.pytest.plugin registers its ResultsRecorder under this name
NOT_RUN_CLAUSE = 48  # characters of a reason shown in the last line when it names no option
NEXT_COMMAND = ".venv/bin/python -m pytest -m accuracy --imagenet DIR"
NO_DATA = "need --imagenet DIR"  # the reason of an accuracy test without --imagenet (acceptance/test_accuracy.py)
EXPECTED = f"without data (expected; next: {NEXT_COMMAND})"


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside harness.pytest.outcomes: sees its skips
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not (report.skipped and isinstance(report.longrepr, tuple) and _asked(item)
            and any(item.get_closest_marker(m) for m in HEADLINE_MARKERS)):
        return report
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    headline = skip_headline(kind_of(item, report), reason)
    if item.config.getoption("--strict-certification") and any(item.get_closest_marker(m) for m in CERTIFYING_MARKERS):
        report.outcome = "failed"
        report.longrepr = (f"{first_line(headline)}\n"
                           f"--strict-certification: not certified, the test could not run: {reason}")
    else:
        path, lineno, _ = report.longrepr
        report.longrepr = (path, lineno, f"Skipped: {headline}")
    return report


def kind_of(item: pytest.Item, report: pytest.TestReport) -> str:
    """What the test certifies, as messages name it: its record's kind (``perf ratio``; ``predictions``
    for an accuracy record of --predictions), else its marker (a skip before the record started)."""
    props = dict(report.user_properties)
    kind = props.get("kind")
    if kind == "accuracy" and props.get("source") == "predictions":
        return "predictions"
    if isinstance(kind, str):
        return kind.replace("_", " ")
    return next((m for m in HEADLINE_MARKERS if item.get_closest_marker(m)), "certification")


def _asked(item: pytest.Item) -> bool:
    """Whether the run asked for this certification: a ``requires_option("--predictions")``
    test certifies predictions made elsewhere only when they are given, and a case the plugin
    marked ``skip`` at collection (a chip without throughput rules) has nothing to certify."""
    if item.get_closest_marker("skip") is not None:
        return False
    marker = item.get_closest_marker("requires_option")
    return marker is None or bool(item.config.getoption(marker.args[0]))


# --------------------------------------------------------------------------------------------
# The run's last line and the per-model list above it


def status_of(record: Any) -> str:
    """``certified``, ``inconclusive (allowed)`` (passed on an inconclusive verdict: never certified)
    or the reason it is not certified, short, with the option that fixes it when it names one."""
    reason = str(record.meta.reason or "")
    if record.outcome == "passed":
        return record_status(record)
    word = verdict_word(reason) if record.outcome == "failed" else NOT_CERTIFIED
    if word == FAIL or (word is None and record.verdict == "fail"):
        gate = first_line(reason).removeprefix(f"{FAIL} ").split(":", 1)[0] if word else ""
        return f"fail ({gate})" if gate and " " not in gate else "fail"
    if word == INCONCLUSIVE or (word is None and record.verdict == "inconclusive"):
        return "inconclusive: need more images (--imagenet with the full val set)"
    if word == NOT_CERTIFIED:
        fix = fix_of(reason)
        body = first_line(reason).split(": ", 1)[-1] if reason.startswith(NOT_CERTIFIED) else first_line(reason)
        body = body.replace(record.model, "the model") if record.model else body  # groups across models
        return f"need {fix}" if fix else f"not run: {clip(body.split(';')[0], NOT_RUN_CLAUSE)}"
    return "error"


def _label(kind: str) -> str:
    return kind.replace("_", " ")


def per_model(records: Sequence[Any]) -> list[str]:
    """One line per model: certified, inconclusive (allowed), or not certified with every reason."""
    lines = []
    for model, rs in certifications(records).items():
        status = model_status(rs)
        why = [f"{_label(r.kind)} {status_of(r)}" for r in rs if status_of(r) != CERTIFIED]
        lines.append(f"{model}: {status}" + (f" ({'; '.join(dict.fromkeys(why))})" if why else ""))
    return lines


def tally(records: Sequence[Any], embedded: bool = False, limit: int = MAX_HEADLINE) -> str | None:
    """``certification: 1 of 6 model(s) certified, 1 inconclusive (allowed), 4 not certified: 4 accuracy
    need --imagenet DIR`` from the run's typed records (harness.records.schema): one grouped reason
    per kind (the most common, and how many others; kinds with the same reason share it), at most
    ``limit`` characters. ``embedded``: the run had no data (the embedded default), so when every miss
    is a skip, the accuracy tests' "need --imagenet DIR" reads as the expected outcome with the command
    to run next. None when the run had no certification test."""
    models = certifications(records)
    if not models:
        return None
    status = {m: model_status(rs) for m, rs in models.items()}
    counts = {s: sum(1 for v in status.values() if v == s) for s in MODEL_STATUSES}
    line = (f"certification: {counts[CERTIFIED]} of {len(models)} model(s) certified, {counts[ALLOWED]} {ALLOWED}, "
            f"{counts[MODEL_NOT_CERTIFIED]} {MODEL_NOT_CERTIFIED}")
    groups: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for model, rs in models.items():
        for r in rs:
            if status_of(r) not in (CERTIFIED, ALLOWED):
                groups[r.kind][status_of(r)].add(model)
    by_cause: dict[str, list[str]] = {}  # kinds that share their reason say it once: "5 agreement, 5 perf need ..."
    for kind, causes in groups.items():
        cause, who = max(causes.items(), key=lambda c: len(c[1]))
        others = len(causes) - 1
        by_cause.setdefault(cause + (f" (+{others} other)" if others else ""), []).append(f"{len(who)} {_label(kind)}")
    skips_only = (all(not s.startswith(("fail", "inconclusive", "error")) for c in groups.values() for s in c)
                  and not any(r.outcome == "failed" for r in records))  # a failed conversion is no expected outcome
    if embedded and skips_only and NO_DATA in by_cause:  # the embedded default: what it gives, and what next
        by_cause = {EXPECTED: by_cause.pop(NO_DATA), **by_cause}
    reasons = [f"{', '.join(kinds)} {cause}" for cause, kinds in by_cause.items()]
    return _fit(line, reasons, limit)


def _fit(line: str, reasons: list[str], limit: int) -> str:
    """``line: reasons; ...`` within ``limit``: the last reasons give way to ``+N more above`` (the
    summary above lists every model), then the rest is clipped."""
    for keep in range(len(reasons), -1, -1):
        shown = reasons[:keep] + ([f"+{len(reasons) - keep} more above"] if keep < len(reasons) else [])
        text = line + (": " + "; ".join(shown) if shown else "")
        if len(text) <= limit:
            return text
    return clip(line, limit)


def _embedded(config: pytest.Config) -> bool:
    """The run had no data of its own: no --imagenet, --predictions or --measurements."""
    return not any(config.getoption(o, None) for o in ("--imagenet", "--predictions", "--measurements"))


@pytest.hookimpl(trylast=True)  # after pytest's junitxml has written its file
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The JUnit file as dashboards read it (harness.pytest.junit)."""
    finish_junit(session.config)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary line: the certification tally is the run's last line."""
    recorder = config.pluginmanager.get_plugin(RECORDER)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    line = tally(getattr(recorder, "records", ()), _embedded(config)) if recorder is not None else None
    if line and reporter is not None:
        reporter.write_line(line)
