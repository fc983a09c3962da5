"""The one place where the harness's exceptions become test outcomes (see harness.errors).

A :class:`~harness.errors.NotApplicable` raised anywhere in a test or its fixtures is a skip with
the exception's message as the reason; a :class:`~harness.errors.NotCertified` or
:class:`~harness.errors.UsageError` or :class:`~harness.errors.NotReady` is a failure whose text
is the message, without a traceback (a verdict, a wrong option or a busy device, not a bug). Any other
exception keeps pytest's report.
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
        report.longrepr = f"{type(error).__name__}: {error}"
    return report
