"""The results file's writer: one typed record per test outcome, one run record, appended whole.

The :class:`ResultsRecorder` is registered by :mod:`harness.pytest.plugin` on the controller only:
under pytest-xdist it is the one process that sees every report (with the properties the test's
record left in it), so each result is written exactly once.

No record is lost:

- a record is one line, written by one ``write`` of the whole line and its ``\\n`` on an
  ``O_APPEND`` descriptor, then fsync'd, so a killed run leaves at most its own last line cut and
  concurrent runs appending to one file do not interleave;
- before its first append (and after a failed one) a run looks at the file's last byte: a file
  that does not end in ``\\n`` ends in a line cut by a killed run, which is ended with ``\\n`` in the
  same write as the record (said in the terminal summary: file, line, byte offset), so the record
  is not glued onto it; the reader reports that line as a cut line;
- a write that fails (a full disk, a file made read-only) fails that test with the file and the
  error, keeps every earlier record, and the next test's record is tried again;
- the paths the run writes to (``--results``, ``--report-dir``, ``--localize-dir``, the baselines
  directory of ``--save-baseline``) are checked at start-up (:func:`check_output_paths`): a
  directory given as ``--results``, a path under a file, a read-only place is a usage error (exit
  4) naming the path and why, before any test runs. The probes leave nothing behind.

It calls the lab hooks of :mod:`harness.pytest.hookspec` (docs/extending.md): a plugin's environment
fields go into the run record, each appended record is handed to ``pytest_mzc_record``, and
``pytest_mzc_session_finished`` comes last; what a plugin gets wrong fails the run, naming it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from harness.errors import UsageError
from harness.pytest.extensions import ExtensionError, call_each, environment_fields
from harness.pytest.state import SessionState
from harness.safe_names import printable

_TAIL_CHUNK = 1 << 16
_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)  # not a file fsync applies to


class OutputPathError(UsageError):
    """A path the run must write to (``--results``, ``--report-dir``...) cannot be written."""


# --------------------------------------------------------------------------------------------
# Start-up checks: probe, never leave anything behind


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _why(exc: OSError) -> str:
    return {errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno or 0, exc.strerror or str(exc))


def _probe_dir(directory: Path) -> OSError | None:
    """Create and remove a temporary file in ``directory``: the error, or None if it worked."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mzc-write-probe-", dir=directory)
    except OSError as exc:
        return exc
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _creatable(path: Path, option: str, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable directory."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(f"{option} {path}: cannot be created, {base} is a file, not a directory; "
                              f"pass {option} {what} in a directory you can write to")
    problem = _probe_dir(base)
    if problem is not None:
        raise OutputPathError(f"{option} {path}: cannot be created, {base} is not writable ({_why(problem)}); "
                              f"pass {option} {what} in a directory you can write to")


def check_writable_file(path: Path, option: str = "--results") -> None:
    """``path`` can be appended to (opened for append and closed: unchanged) or created."""
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a directory; {option} expects a file, "
                              f"e.g. {option} {path / 'results.jsonl'}")
    if not os.path.lexists(path):
        _creatable(path, option, "FILE")
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))  # a FIFO without a reader: ENXIO, not a hang
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot append to it ({_why(exc)}); "
                              f"pass {option} FILE in a place you can write to") from None


def check_writable_dir(path: Path, option: str) -> None:
    """Files can be created in ``path`` (a temporary file made and removed), or ``path`` can be created."""
    if os.path.lexists(path) and not path.is_dir():
        raise OutputPathError(f"{option} {path}: is a file, not a directory; pass {option} DIR")
    if not path.is_dir():
        _creatable(path, option, "DIR")
        return
    problem = _probe_dir(path)
    if problem is not None:
        raise OutputPathError(f"{option} {path}: cannot write there ({_why(problem)}); "
                              f"pass {option} DIR pointing to a place you can write to")


def check_output_paths(results: Path, dirs: Iterable[tuple[str, Path]]) -> None:
    """Every path the run writes to, at start-up: an :class:`OutputPathError` for the first bad one."""
    check_writable_file(results, "--results")
    for option, directory in dirs:
        check_writable_dir(directory, option)


# --------------------------------------------------------------------------------------------
# Appending whole lines


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` of the whole line; a short write (the disk filled up half-way) is continued,
    so the error that follows it is raised."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) or len(view):]


def _cut_line(path: Path, fd: int) -> tuple[int, int] | None:
    """(line number, byte offset) of a last line without its ``\\n``; None if the file ends well
    (or cannot be read: a write-only file is appended to unchecked)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    try:
        reader = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        end = os.fstat(reader).st_size
        if end == 0 or os.pread(reader, 1, end - 1) == b"\n":
            return None
        newlines, start = 0, None
        while end > 0:
            begin = max(0, end - _TAIL_CHUNK)
            chunk = os.pread(reader, end - begin, begin)
            if start is None and b"\n" in chunk:
                start = begin + chunk.rindex(b"\n") + 1
            newlines += chunk.count(b"\n")
            end = begin
        return newlines + 1, start or 0
    except OSError:  # unreadable after all: the append goes on unchecked
        return None
    finally:
        os.close(reader)


class ResultsRecorder:
    """Writes one typed record (harness.records.schema) per test outcome and prints the summary.

    The line is the test's record with pytest's facts (outcome, reason, times) filled in.
    ``state`` is the session's state (chips, policy) for the run record and the report.
    """

    def __init__(self, config: pytest.Config, results: Path, state: SessionState):
        self.config = config
        self.path = results
        self.state = state
        self.records: list[Any] = []  # harness.records.schema.ResultRecord, for the summary
        self.outcomes: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []  # records written as the test left them: not readable as typed
        self.unwritten: list[tuple[str, str]] = []  # (test, error): records the results file did not take
        self.run_unwritten: str | None = None  # why the run record was not written
        self.notes: list[str] = []  # a cut line found at the end of the file and ended
        self.extension_errors: list[str] = []  # what a lab plugin's hook got wrong (harness.pytest.extensions)
        self.written = 0
        self._check_end = True  # before the first append, and after a failed one
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.report: Any = None  # harness.report.build.ReportPaths once written
        self.report_error: str | None = None

    def _append(self, record: dict[str, Any]) -> None:
        """Append one record as one line, then hand it to the lab hooks; an ``OSError`` says why it
        could not be."""
        text = json.dumps(record, default=str)
        line = (text + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            cut = _cut_line(self.path, fd) if self._check_end else None
            if cut is not None:
                line = b"\n" + line
            self._check_end = True
            _write_all(fd, line)
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno not in _FSYNC_UNSUPPORTED:
                    raise
        finally:
            os.close(fd)
        self._check_end = False
        self.written += 1
        if cut is not None:
            self.notes.append(
                f"{self.path} ended in a cut line (line {cut[0]}, from byte {cut[1]}, without its newline: a run "
                "killed while writing it); it was ended with a newline before this run's first record, and the "
                "report lists it as a cut line")
        self._call_hook("pytest_mzc_record", record=MappingProxyType(json.loads(text)))

    def _call_hook(self, hook: str, **kwargs: Any) -> list[Any]:
        """Every lab plugin's ``hook`` (harness.pytest.extensions.call_each); what fails is kept for the summary."""
        try:
            return [result for _plugin, result in call_each(self.config, hook, **kwargs)]
        except ExtensionError as exc:
            self.extension_errors.append(str(exc))
            return []

    def _failed_append(self, exc: OSError, what: str) -> str:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = ("free space on that disk or pass --results FILE on a disk with room" if full
               else "pass --results FILE in a place you can write to")
        kept = (f"the {self.written} record(s) this run wrote before are kept" if self.written
                else "earlier records are kept")
        error = f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror or exc}"
        return f"{what} was not recorded: cannot append to the results file {self.path} ({error}); {kept}; {fix}"

    @pytest.hookimpl(tryfirst=True)  # before the terminal and JUnit see the report: a lost record fails it
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.skipped or report.failed):
            return
        props = dict(report.user_properties)
        if "kind" not in props:
            return
        from harness.records.parts import PytestFacts, SchemaError
        from harness.records.schema import SCHEMA_KEY, SCHEMA_VERSION, ResultRecord, record_from_json

        reason = None
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(report.longrepr)
        meta = PytestFacts(run_id=self.run_id, test=report.nodeid, outcome=report.outcome, phase=report.when,
                           duration_s=round(report.duration, 3), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           host=socket.gethostname(), reason=reason)
        line = {SCHEMA_KEY: SCHEMA_VERSION, **meta.properties(), **props}
        record: ResultRecord | None = None
        try:
            typed = record_from_json(line)
        except SchemaError as exc:  # a writer's bug: keep what the test knew, say so at the end
            self.problems.append(f"{report.nodeid}: {exc}")
        else:
            line = typed.to_json()
            record = typed if isinstance(typed, ResultRecord) else None  # a test's kind: never a run record
        try:
            self._append(line)
        except OSError as exc:
            message = self._failed_append(exc, f"the result of {report.nodeid}")
            self.unwritten.append((report.nodeid, f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror or exc}"))
            if report.failed:
                report.sections.append(("results file", message))
            else:
                report.outcome, report.longrepr = "failed", message
            if record is not None:
                record = replace(record, meta=replace(record.meta, outcome="failed", reason=message))
        if record is not None:
            self.records.append(record)
        self.outcomes[report.outcome] += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """One ``kind: run`` record per run (the environment fingerprint and what was asked), the
        report, then the lab plugins' ``pytest_mzc_session_finished``."""
        if self.outcomes:
            self._write_run_record(session, exitstatus)
            if not self.config.getoption("--no-report") and self.written:
                self._write_report()
        self._fail_on_extension_errors(session)  # before the finish hook sees the status
        self._call_hook("pytest_mzc_session_finished", results_path=self.path, exitstatus=int(session.exitstatus))
        self._fail_on_extension_errors(session)

    def _fail_on_extension_errors(self, session: pytest.Session) -> None:
        if self.extension_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_run_record(self, session: pytest.Session, exitstatus: int) -> None:
        from harness.environment import fingerprint
        from harness.pytest.shard import shard_fields
        from harness.records.schema import RunRecord

        environment = fingerprint()
        try:
            environment.update(environment_fields(self.config, environment))
        except ExtensionError as exc:  # recorded with the suite's own fields only
            self.extension_errors.append(str(exc))
        try:
            self._append(RunRecord(
                run_id=self.run_id, started=self.started, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                exit_status=int(exitstatus), args=tuple(map(str, self.config.invocation_params.args)),
                chips=tuple(c.name for c in self.state.chips), outcomes=dict(self.outcomes),
                environment=environment, **shard_fields(self.config),
            ).to_json())
        except OSError as exc:
            self.run_unwritten = self._failed_append(exc, "the run record (environment, outcomes)")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED  # something the run computed was lost

    def _write_report(self) -> None:
        """The report of the whole results file; a problem with it is a warning, never a lost run."""
        from harness.records.results import load_results
        from harness.report.build import write_report

        try:
            results = load_results(self.path)
            out = Path(self.config.getoption("--report-dir"))
            out = out if out.is_absolute() else Path(self.config.rootpath) / out
            baselines = self.config.getoption("--baselines-dir")
            self.report = write_report(results, out, baselines_dir=Path(baselines) if baselines else None,
                                       chips=self.state.all_chips, policy=self.state.policy)
        except Exception as exc:  # the run's results are already safe in the results file
            self.report_error = f"{type(exc).__name__}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.outcomes:
            self._summary(terminalreporter)
        for error in self.extension_errors:
            terminalreporter.write_line(f"error: {printable(error)} (docs/extending.md)", red=True)

    def _summary(self, tr: Any) -> None:
        from harness.pytest.certification import per_model
        from harness.records.results import results_of
        from harness.report.build import terminal_table

        tr.write_sep("=", "certification summary")
        tr.write_line(terminal_table(results_of(self.records, self.path)))
        models = per_model(self.records)
        if models:  # the whole list: the run's last line (harness.pytest.certification.tally) groups it
            tr.write_line("")
            tr.write_line("certification per model (inconclusive (allowed) is not certified):")
            for line in models:
                tr.write_line(f"  {printable(line)}")
        skipped: dict[str, list[str]] = defaultdict(list)
        for r in self.records:
            if r.outcome == "skipped":
                skipped[r.meta.reason or ""].append(str(r.meta.test).split("::")[-1])
        if skipped:
            tr.write_line("")
            tr.write_line("not run, and what to pass to run them:")
            for reason, names in skipped.items():
                tr.write_line(f"  {len(names)} x {printable(reason)}")
                tr.write_line(f"      {printable(', '.join(names[:6]))}{' ...' if len(names) > 6 else ''}")
        for problem in self.problems:
            tr.write_line(f"warning: record not in the results schema, written as recorded: {printable(problem)}")
        for note in self.notes:
            tr.write_line(f"warning: {printable(note)}")
        if self.unwritten:
            tr.write_line(f"error: {len(self.unwritten)} test record(s) not written to {self.path} "
                          f"({self.unwritten[0][1]}): those tests failed", red=True)
        if self.run_unwritten:
            tr.write_line(f"error: {self.run_unwritten}", red=True)
        tr.write_line(f"results appended to {self.path}" if self.written else f"no result recorded in {self.path}")
        if self.report is not None:
            tr.write_line(f"report written: {self.report.html} (and report.md, {len(self.report.plots)} plot(s))")
            for note in self.report.notes:
                tr.write_line(f"  note: {printable(note)}")
            for regression in self.report.regressions:
                tr.write_line(f"  {printable(regression.describe())}")
        elif self.report_error is not None:
            tr.write_line(f"warning: no report written ({self.report_error}); the results file is intact: "
                          f"python -m harness report {self.path} writes it")
