"""The modelzoo-cert plugin's own hooks: how a lab extends a run without editing the suite.

Registered by :func:`harness.pytest.plugin.pytest_addhooks`; implemented in a lab's ``conftest.py``
or a plugin module loaded with ``-p`` (docs/extending.md, docs/examples/conftest.py). Their names
start with ``pytest_mzc_``: pytest takes an unmarked function of a conftest for a hook only when its
name starts with ``pytest_``, and ``mzc`` keeps them apart from pytest's and other plugins' hooks.

They run on the process that writes the results file: the only one without pytest-xdist, the
controller with it (never a worker). Each implementation is called on its own
(harness.pytest.extensions), so an error names the plugin it came from; an exception raised by one
fails the run (exit status 1, the plugin and the error in the terminal summary), it never loses a
record. Hook wrappers (``wrapper=True``, ``hookwrapper=True``) are not supported for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest


@pytest.hookspec
def pytest_mzc_environment_fields(config: pytest.Config) -> Mapping[str, str] | None:
    """Fields a lab adds to the run record's ``environment`` (beside ``host``, ``cpu``, ``packages``...).

    Called once, when the run record is written at the end of the session. Return ``{name: text}``:
    a name is lower-case letters, digits and ``_``, starting with a letter, at most 64 characters; a
    value is text (``str``), at most 512 characters, recorded as :func:`harness.safe_names.printable`
    makes it (control characters and line breaks escaped). A name the suite records itself
    (``host``, ``cpu``...: harness.pytest.extensions.SUITE_ENVIRONMENT_FIELDS) or another plugin
    already returned is refused, as is anything else not of that form: the run fails (exit status 1)
    with an error naming the plugin and the field, and the run record is written with the suite's
    own fields only.
    """


@pytest.hookspec
def pytest_mzc_record(config: pytest.Config, record: Mapping[str, Any]) -> None:
    """One record as appended to the results file: every test's result, then the run record
    (``record["kind"] == "run"``). ``record`` is a read-only copy of the JSON line (changing it
    changes nothing written). Not called for a record the results file did not take (the test
    fails saying why)."""


@pytest.hookspec
def pytest_mzc_session_finished(config: pytest.Config, results_path: Path, exitstatus: int) -> None:
    """The end of the session, after the run record and the report were written: ``results_path``
    is the results file (``--results``; it may not exist when the run recorded nothing) and
    ``exitstatus`` the session's exit status so far (0 all passed, 1 a test failed...)."""
