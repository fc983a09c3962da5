"""Reading the results records of one or many runs back as typed records: the input of the report.

Every pytest run appends one JSON line per test outcome to its ``--results`` file (see
``harness.pytest.recorder.ResultsRecorder``) and, when it finishes, one ``kind: "run"`` record with the
environment fingerprint. Nightly runs on several machines each leave their own file; this module
merges any number of them (files, or directories searched recursively for ``*.jsonl``), reads each
line as its typed record (harness.records.schema: schema 0 and 1), groups the records by
``run_id``, orders runs by start time, and answers the report's question: the newest record of
each configuration.

A results file is appended to by runs that may be killed, and merged from other machines (not
trusted): a malformed or blank line is counted and reported with ``file:line``, never fatal, so one
bad line cannot hide a night's results. Lines are split on ``\\n`` alone, so an unreadable line never
takes the next one with it. A line cut short by a killed run is reported as a cut line; one with a
whole record glued onto its end (a run that appended after a killed one, by a writer that did not
end a cut line first) gives that record back, with a warning.
"""

from __future__ import annotations

import json
import math
import re
import stat
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from harness.errors import HarnessError, UsageError
from harness.records.parts import Configuration, SchemaError
from harness.records.schema import (
    KINDS,
    PerfRatioRecord,
    Record,
    ResultRecord,
    RunRecord,
    record_from_json,
)
from harness.safe_load import load_json_text

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

K = TypeVar("K", bound=Hashable)
R = TypeVar("R", bound=ResultRecord)


class ResultsError(UsageError, ValueError):
    """Results cannot be read at all: a path that does not exist, or holds no records."""


@dataclass
class Run:
    """One pytest session: its test records and, if it finished, its run record.

    ``info`` is None when the session was killed before writing its run record; the run is
    still reported, from its test records alone.
    """

    run_id: str
    started: str | None
    host: str | None
    environment: dict[str, Any]
    records: list[ResultRecord] = field(default_factory=list)
    info: RunRecord | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.info is not None

    @property
    def started_at(self) -> datetime | None:
        return parse_time(self.started)


@dataclass
class Results:
    """Every run read, oldest first, with what could not be read."""

    runs: list[Run]
    files: list[Path]
    warnings: list[str] = field(default_factory=list)
    blank_lines: int = 0
    malformed_lines: int = 0
    duplicate_records: int = 0

    def records(self, kind: str | None = None, model: str | None = None) -> Iterator[tuple[int, Run, ResultRecord]]:
        """(run index, run, record) in run order, then file order."""
        for index, run in enumerate(self.runs):
            for record in run.records:
                if (kind is None or record.kind == kind) and (model is None or record.model == model):
                    yield index, run, record

    def models(self) -> list[str]:
        """Every model with a test record, sorted."""
        return sorted({r.model for _, _, r in self.records() if r.model})

    def latest(self, kind: str, model: str | None = None) -> dict[Configuration, ResultRecord]:
        """The newest record of ``kind`` per configuration, sorted by configuration."""
        return {
            config: r for (_, config), r in newest(((), r.config, r) for _, _, r in self.records(kind, model)).items()
        }

    def latest_ratios(self, model: str | None = None) -> dict[tuple[Configuration, str], PerfRatioRecord]:
        """The newest perf_ratio (gate) record per (configuration, baseline chip)."""
        found = newest((str(r.rule.baseline_chip), r.config, r) for _, _, r in self.records("perf_ratio", model)
                       if isinstance(r, PerfRatioRecord))
        return {(config, baseline): r for (baseline, config), r in found.items()}

    def latest_tests(self) -> list[ResultRecord]:
        """The newest record of every test in every configuration (a one-screen summary)."""
        found = newest(((r.meta.test or "", r.kind), r.config, r) for _, _, r in self.records())
        return list(found.values())


def newest(items: Iterable[tuple[K, Configuration, R]]) -> dict[tuple[K, Configuration], R]:
    """The newest record per (group, configuration), items oldest first.

    A record whose configuration is less specific than a newer one's of the same group (it knows
    fewer fields, the ones it knows are equal: a "no ImageNet" skip before anything compiled, a
    run killed half-way) is superseded by it, so last week's skip does not linger beside tonight's
    figures; a newer skip never hides an older measured configuration.
    """
    latest: dict[tuple[K, Configuration], tuple[int, R]] = {}
    for index, (group, config, record) in enumerate(items):
        latest[(group, config)] = (index, record)
    kept = {
        key: record
        for key, (index, record) in latest.items()
        if not any(
            other_group == key[0] and other_index > index and other_config != key[1] and key[1].covers(other_config)
            for (other_group, other_config), (other_index, _) in latest.items()
        )
    }
    return dict(sorted(kept.items(), key=lambda kv: (str(kv[0][0]), sort_key(kv[0][1]))))


def sort_key(config: Configuration) -> tuple[Any, ...]:
    """Configurations in a stable order: None after every known value of a field."""
    values = (config.model, config.chip, config.source, config.backend, config.precision, config.input_dtype,
              config.batch_size)
    return tuple((v is None, v if isinstance(v, int) else 0, "" if v is None or isinstance(v, int) else str(v))
                 for v in values)


# --------------------------------------------------------------------------------------------
# Reading


def parse_time(text: Any) -> datetime | None:
    """The plugin's ``%Y-%m-%dT%H:%M:%S%z`` (or any ISO 8601) as an aware datetime; None if not a time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.strptime(text, _TIME_FORMAT)
    except ValueError:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise ResultsError(
            f"{path}: no such file or directory; expected a results file (JSON lines written by "
            "pytest --results FILE) or a directory holding *.jsonl files"
        )
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        if not found:
            raise ResultsError(
                f"{path}: no *.jsonl files under this directory; expected results files written by "
                "pytest --results FILE (default reports/results.jsonl)"
            )
        return found
    return [path]


@dataclass
class _Reading:
    """Accumulates what the files hold while they are read."""

    records: list[tuple[Record, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blank_lines: int = 0
    malformed_lines: int = 0
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0


# Unreadable lines named one by one per file; past that, one line counts the rest.
MAX_LINE_WARNINGS = 20
# A line longer than this is not searched for a record glued onto a cut line (records are a few KB).
_MAX_GLUED_SEARCH = 1 << 18
_GLUED_CANDIDATES = 64
# What is left after the parser's error position when a line stops inside a number, a literal or
# an escape (``1.5e``, ``tru``, ``\u00``): the line was cut, not garbled.
_UNFINISHED_TOKEN = re.compile(r"[-+.0-9a-fA-FtrulsnE\\]*")


def _loads(text: str, where: str) -> Any:
    """The one place a results line is parsed from JSON: guarded (harness.safe_load: too deep, a
    number too long is an ``UntrustedInput``; text that is not JSON a ``JsonSyntaxError``, which is
    a ``json.JSONDecodeError``); ``NaN`` allowed, the writer's spelling of a missing figure."""
    return load_json_text(text, where, nonfinite=True)


def _json_problem(exc: BaseException, text: str, where: str) -> str:
    if isinstance(exc, json.JSONDecodeError):
        tail = text.rstrip()[exc.pos:]
        if exc.msg.startswith("Unterminated string") or (len(tail) <= 5 and _UNFINISHED_TOKEN.fullmatch(tail)):
            return (f"{where}: not JSON, a cut line (it ends after {len(text)} characters, before the record "
                    "does: the rest was never written by a killed run?)")
        return f"{where}: not JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return f"{where}: not a readable record (JSON nested too deeply)"
    text = str(exc)
    return text if isinstance(exc, HarnessError) and where in text else f"{where}: not a readable record ({text})"


def _parse_json(raw: bytes, where: str) -> tuple[Any, str | None]:
    """The line's JSON value, or why it has none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return None, (f"{where}: not UTF-8 text, a cut line (it ends inside a character: the rest was never "
                          "written by a killed run?)")
        return None, f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    try:
        return _loads(text, where), None
    except (ValueError, RecursionError, HarnessError) as exc:  # ValueError: JSONDecodeError, a huge int
        return None, _json_problem(exc, text, where)


def _as_record(value: Any, where: str) -> tuple[Record | None, str | None]:
    if not isinstance(value, dict):
        return None, f"{where}: expected a JSON object (one record), found {type(value).__name__}"
    try:
        return record_from_json(value), None
    except SchemaError as exc:
        return None, f"{where}: {exc}"


def _glued(raw: bytes, where: str) -> tuple[dict[str, Any], int] | None:
    """A whole record at the end of an unreadable line (a cut line with the next record glued on),
    and the byte it starts at."""
    if len(raw) > _MAX_GLUED_SEARCH:
        return None
    start = 0
    for _ in range(_GLUED_CANDIDATES):
        start = raw.find(b'{"', start + 1)
        if start < 0:
            return None
        value, problem = _parse_json(raw[start:], where)
        if problem is None and isinstance(value, dict) and value.get("kind") in KINDS:
            return value, start
    return None


def _parse_line(raw: bytes, where: str) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The line's JSON object, or why the line is not one; and a note when a glued record was saved."""
    value, problem = _parse_json(raw, where)
    if problem is None:
        return (value, None, None) if isinstance(value, dict) else (
            None, f"{where}: expected a JSON object (one record), found {type(value).__name__}", None)
    found = _glued(raw, where)
    if found is None:
        return None, problem, None
    glued, start = found
    return glued, None, (f"{where}: a cut line ({start} bytes, cut short by a killed run) with the next record "
                         "glued onto its end: the cut part is skipped, the record after it is read")


def _split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Lines split on ``\\n`` alone (a stray ``\\r`` or form feed inside a line keeps it one line;
    a CRLF ending is dropped), and whether the last line has no newline at its end."""
    lines = data.split(b"\n")
    unterminated = lines[-1] != b""
    if not unterminated:
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines], unterminated


def _read_file(path: Path, reading: _Reading) -> int:
    """Add the records of one file; return how many it held."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISFIFO(mode):
            raise ResultsError(f"{path}: not a regular file (a device such as /dev/null or /dev/full has no records "
                               "to read); expected a results file")
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results file: {exc.strerror or exc}") from None
    lines, unterminated = _split_lines(data)
    count, blanks, missing_id, bad = 0, [], 0, []
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            blanks.append(line_no)
            continue
        where = f"{path}:{line_no}"
        value, problem, note = _parse_line(raw, where)
        record, canonical = None, ""
        if value is not None:
            if not value.get("run_id") and value.get("kind") in KINDS:
                missing_id += 1
                value = {**value, "run_id": f"(no run_id) {path}"}
            record, problem = _as_record(value, where)
            try:
                canonical = json.dumps(value, sort_keys=True, default=str)
            except (ValueError, RecursionError):
                record, problem = None, f"{where}: not a readable record (JSON nested too deeply)"
        if record is None:
            if unterminated and line_no == len(lines) and "cut line" not in str(problem):
                problem = f"{problem}; it is the last line and has no newline: a cut line (cut short by a killed run?)"
            reading.malformed_lines += 1
            bad.append(line_no)
            if len(bad) <= MAX_LINE_WARNINGS:
                reading.warnings.append(str(problem))
            continue
        if note is not None:
            reading.warnings.append(note)
        count += 1
        if canonical in reading.seen:
            reading.duplicates += 1
            continue
        reading.seen.add(canonical)
        reading.records.append((record, where))
    if len(bad) > MAX_LINE_WARNINGS:
        more = bad[MAX_LINE_WARNINGS:]
        shown = ", ".join(map(str, more[:10])) + (" ..." if len(more) > 10 else "")
        reading.warnings.append(f"{path}: {len(more)} more unreadable line(s) skipped (line {shown})")
    if blanks:
        reading.blank_lines += len(blanks)
        shown = ", ".join(map(str, blanks[:10])) + (" ..." if len(blanks) > 10 else "")
        reading.warnings.append(f"{path}: {len(blanks)} blank line(s) ignored (line {shown})")
    if missing_id:
        reading.warnings.append(
            f"{path}: {missing_id} record(s) without a run_id (written before runs had ids) grouped as one run")
    return count


def _run_id(record: Record) -> str:
    return str(record.run_id if isinstance(record, RunRecord) else record.meta.run_id)


def _group(records: Iterable[tuple[Record, str]]) -> list[Run]:
    runs: dict[str, Run] = {}
    for record, where in records:
        run_id = _run_id(record)
        run = runs.setdefault(run_id, Run(run_id=run_id, started=None, host=None, environment={}))
        source = where.rsplit(":", 1)[0]
        if source not in run.sources:
            run.sources.append(source)
        if isinstance(record, RunRecord):
            run.info = record
            run.environment = dict(record.environment)
        else:
            run.records.append(record)
    for run in runs.values():
        times = [t for t in (parse_time(r.meta.time) for r in run.records) if t is not None]
        earliest = min(times).strftime(_TIME_FORMAT) if times else None
        run.started = (run.info.started if run.info else None) or earliest
        run.host = run.environment.get("host") or next((r.meta.host for r in run.records if r.meta.host), None)
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs.values(), key=lambda r: (r.started_at is None, r.started_at or epoch, r.run_id))


def load_results(paths: Sequence[Path | str] | Path | str) -> Results:
    """Every record under ``paths`` (files, or directories searched for ``*.jsonl``), grouped into runs.

    Raises :class:`ResultsError` for a path that does not exist, or that holds no records at all:
    a nightly merge that silently reported nothing would look like a quiet night.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ResultsError("no results paths given; expected results files or directories of *.jsonl files")
    reading = _Reading()
    files: list[Path] = []
    read: set[Path] = set()
    for given in map(Path, paths):
        new = [f for f in _files(given) if f.resolve() not in read]
        held = 0
        for path in new:
            read.add(path.resolve())
            files.append(path)
            held += _read_file(path, reading)
        if new and held == 0:
            raise ResultsError(
                f"{given}: holds no results records; expected JSON lines with a 'kind' of "
                f"{', '.join(KINDS)}, as pytest --results FILE writes them"
                + (f" ({reading.warnings[-1]})" if reading.warnings else "")
            )
    if reading.duplicates:
        reading.warnings.append(f"{reading.duplicates} duplicate record(s) ignored (the same line in several files)")
    return Results(runs=_group(reading.records), files=files, warnings=reading.warnings,
                   blank_lines=reading.blank_lines, malformed_lines=reading.malformed_lines,
                   duplicate_records=reading.duplicates)


def results_of(records: Sequence[Record], source: Path | str) -> Results:
    """Records already in memory (the session that just ended, for its summary) as Results."""
    return Results(runs=_group((r, str(source)) for r in records), files=[Path(source)])


def finite(value: Any) -> TypeGuard[float]:
    """A real, finite number (not a bool, None, text or NaN): a figure a table can show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
