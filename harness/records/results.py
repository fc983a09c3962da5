"""Reading the results records of one or many runs back as typed records: the input of the report.

Every pytest run appends one JSON line per test outcome to its ``--results`` file (see
``harness.pytest.plugin.ResultsRecorder``) and, when it finishes, one ``kind: "run"`` record with the
environment fingerprint. Nightly runs on several machines each leave their own file; this module
merges any number of them (files, or directories searched recursively for ``*.jsonl``), reads each
line as its typed record (harness.records.schema: schema 0 and 1), groups the records by
``run_id``, orders runs by start time, and answers the report's question: the newest record of
each configuration.

A results file is appended to by runs that may be killed: a malformed or blank line is counted and
reported with ``file:line``, never fatal, so one bad line cannot hide a night's results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Sequence, TypeVar

from harness.errors import UsageError
from harness.records.parts import Configuration
from harness.records.schema import (
    KINDS,
    PerfRatioRecord,
    Record,
    ResultRecord,
    RunRecord,
    SchemaError,
    record_from_json,
)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

K = TypeVar("K", bound=Hashable)


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
        return {config: r for (_, config), r in newest(((), r.config, r) for _, _, r in self.records(kind, model)).items()}

    def latest_ratios(self, model: str | None = None) -> dict[tuple[Configuration, str], PerfRatioRecord]:
        """The newest perf_ratio (gate) record per (configuration, baseline chip)."""
        found = newest((str(r.rule.baseline_chip), r.config, r) for _, _, r in self.records("perf_ratio", model)
                       if isinstance(r, PerfRatioRecord))
        return {(config, baseline): r for (baseline, config), r in found.items()}  # type: ignore[misc]

    def latest_tests(self) -> list[ResultRecord]:
        """The newest record of every test in every configuration (a one-screen summary)."""
        found = newest(((r.meta.test or "", r.kind), r.config, r) for _, _, r in self.records())
        return list(found.values())


def newest(items: Iterable[tuple[K, Configuration, ResultRecord]]) -> dict[tuple[K, Configuration], ResultRecord]:
    """The newest record per (group, configuration), items oldest first.

    A record whose configuration is less specific than a newer one's of the same group (it knows
    fewer fields, the ones it knows are equal: a "no ImageNet" skip before anything compiled, a
    run killed half-way) is superseded by it, so last week's skip does not linger beside tonight's
    figures; a newer skip never hides an older measured configuration.
    """
    latest: dict[tuple[K, Configuration], tuple[int, ResultRecord]] = {}
    for index, (group, config, record) in enumerate(items):
        latest[(group, config)] = (index, record)
    kept = {
        key: record for key, (index, record) in latest.items()
        if not any(other_group == key[0] and other_index > index and other_config != key[1] and key[1].covers(other_config)
                   for (other_group, other_config), (other_index, _) in latest.items())
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


def _parse_line(raw: bytes, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """The line's JSON object, or why the line is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"{where}: not JSON ({exc.msg} at column {exc.colno}; a line cut short by a killed run?)"
    if not isinstance(value, dict):
        return None, f"{where}: expected a JSON object (one record), found {type(value).__name__}"
    return value, None


def _read_file(path: Path, reading: _Reading) -> int:
    """Add the records of one file; return how many it held."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read results file: {exc.strerror or exc}") from None
    count, blanks, missing_id = 0, [], 0
    for line_no, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            blanks.append(line_no)
            continue
        where = f"{path}:{line_no}"
        value, problem = _parse_line(raw, where)
        record = None
        if value is not None:
            if not value.get("run_id") and value.get("kind") in KINDS:
                missing_id += 1
                value = {**value, "run_id": f"(no run_id) {path}"}
            try:
                record = record_from_json(value)
            except SchemaError as exc:
                problem = f"{where}: {exc}"
        if record is None or value is None:
            reading.malformed_lines += 1
            reading.warnings.append(str(problem))
            continue
        count += 1
        canonical = json.dumps(value, sort_keys=True, default=str)
        if canonical in reading.seen:
            reading.duplicates += 1
            continue
        reading.seen.add(canonical)
        reading.records.append((record, where))
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


def finite(value: Any) -> bool:
    """A real, finite number (not a bool, None, text or NaN): a figure a table can show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
