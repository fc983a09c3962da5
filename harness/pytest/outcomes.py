"""The one place where the harness's exceptions become test outcomes (see harness.errors).

A :class:`~harness.errors.NotApplicable` raised anywhere in a test or its fixtures is a skip with
the exception's message as the reason; a :class:`~harness.errors.NotCertified` or
:class:`~harness.errors.UsageError` or :class:`~harness.errors.NotReady` is a failure whose text
is the message, without a traceback (a verdict, a wrong option or a busy device, not a bug). Any other
exception keeps pytest's report.

The text's first line starts with its verdict word (harness.judge.headline), as CI dashboards show
it: a verdict's own (``FAIL paired_top1: ...``, harness.judge.gates.certify), else ``FAIL`` for a
:class:`~harness.errors.NotCertified` and ``ERROR <class>`` for the other two.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from harness.errors import (
    HarnessError,
    NotApplicable,
    NotCertified,
    NotReady,
    UsageError,
)
from harness.judge.headline import ERROR, FAIL, compose, verdict_word


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    excinfo = call.excinfo
    if excinfo is None or not isinstance(excinfo.value, HarnessError) or report.outcome != "failed":
        return report
    error = excinfo.value
    if isinstance(error, NotApplicable):
        path, lineno, _name = item.location
        report.outcome = "skipped"
        report.longrepr = (str(path), (lineno or 0) + 1, f"Skipped: {error.reason()}")
    elif isinstance(error, (NotCertified, UsageError, NotReady)):
        report.longrepr = failure_text(error)
    return report


def failure_text(error: NotCertified | UsageError | NotReady) -> str:
    """The failure's text, verdict word first: a verdict's message as it is; else ``FAIL: ...`` for
    a NotCertified, ``ERROR UsageError: ...`` / ``ERROR NotReady: ...``; the first line clipped
    (harness.judge.headline.compose), the rest on later lines."""
    text = str(error)
    if verdict_word(text) is not None:
        return text
    head, _, rest = text.partition("\n")
    word = f"{FAIL}:" if isinstance(error, NotCertified) else f"{ERROR} {type(error).__name__}:"
    return compose(f"{word} {head}", rest)
