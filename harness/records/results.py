"""Reading the results records of one or many runs back: the input of the report.

Every pytest run appends one JSON line per test outcome to its ``--results`` file (see
``harness.pytest.plugin.ResultsRecorder``) and, when it finishes, one ``kind: "run"`` record with the
environment fingerprint. Nightly runs on several machines each leave their own file; this module
merges any number of them (files, or directories searched recursively for ``*.jsonl``), groups the
records by ``run_id``, orders runs by start time, and answers the questions the report asks: the
latest figure per configuration, and each model's history across runs with its regressions.

A results file is appended to by runs that may be killed: a malformed or blank line is counted and
reported with ``file:line``, never fatal, so one bad line cannot hide a night's results.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from harness.errors import UsageError
from harness.specs import HistoryPolicy

TEST_KINDS = ("accuracy", "agreement", "conversion", "perf", "perf_ratio")
RUN_KIND = "run"
OUTCOMES = ("passed", "failed", "skipped")
PER_S_PREFIX = "images_per_s_bs"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

Record = dict[str, Any]
AccuracyKey = tuple[str, str, "str | None", "str | None", "int | None"]  # model, chip, backend, precision, bs


class ResultsError(UsageError, ValueError):
    """Results cannot be read at all: a path that does not exist, or holds no records."""


@dataclass
class Run:
    """One pytest session: its records and, if it finished, its ``kind: run`` record's facts.

    ``info`` is the run record itself (empty when the session was killed before writing it; the
    run is still reported, from its test records alone).
    """

    run_id: str
    started: str | None
    host: str | None
    environment: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    info: Record = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.info)

    @property
    def started_at(self) -> datetime | None:
        return parse_time(self.started)

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.get("kind") == kind]


@dataclass
class Results:
    """Every run read, oldest first, with what could not be read."""

    runs: list[Run]
    files: list[Path]
    warnings: list[str] = field(default_factory=list)
    blank_lines: int = 0
    malformed_lines: int = 0
    duplicate_records: int = 0

    def records(self, kind: str | None = None) -> Iterator[tuple[int, Run, Record]]:
        """(run index, run, record) in run order, then file order."""
        for index, run in enumerate(self.runs):
            for record in run.records:
                if kind is None or record.get("kind") == kind:
                    yield index, run, record

    def models(self) -> list[str]:
        """Every model with a test record, sorted."""
        return sorted({str(r["model"]) for _, _, r in self.records() if r.get("model")})

    def latest_accuracy(self, model: str | None = None) -> dict[AccuracyKey, Record]:
        """The newest accuracy record per (model, chip, backend, precision, batch size).

        A skipped record says nothing about the backend (it stopped before compiling), so it is a
        key of its own with backend None; it is dropped once a newer run of the same model, chip
        and batch size has a record, so last week's "no ImageNet" skip does not linger forever.
        """
        latest: dict[AccuracyKey, tuple[int, Record]] = {}
        for index, _, r in self.records("accuracy"):
            if model is None or r.get("model") == model:
                key = (str(r.get("model")), str(r.get("chip")), r.get("backend"), r.get("precision"), _int_or_none(r.get("batch_size")))
                latest[key] = (index, r)
        newest_by_config: dict[tuple[Any, ...], int] = {}
        for (m, c, _, _, bs), (index, _) in latest.items():
            newest_by_config[(m, c, bs)] = max(index, newest_by_config.get((m, c, bs), -1))
        return {
            key: r for key, (index, r) in sorted(latest.items(), key=lambda kv: _sort_key(kv[0]))
            if key[2] is not None or index >= newest_by_config[(key[0], key[1], key[4])]
        }

    def latest_perf(self, model: str | None = None) -> dict[tuple[str, str], Record]:
        """The newest perf record per (model, chip)."""
        latest: dict[tuple[str, str], Record] = {}
        for _, _, r in self.records("perf"):
            if model is None or r.get("model") == model:
                latest[(str(r.get("model")), str(r.get("chip")))] = r
        return dict(sorted(latest.items()))

    def latest_perf_ratio(self, model: str | None = None) -> dict[tuple[str, str, str], Record]:
        """The newest perf_ratio (gate) record per (model, chip, baseline chip)."""
        latest: dict[tuple[str, str, str], Record] = {}
        for _, _, r in self.records("perf_ratio"):
            if model is None or r.get("model") == model:
                latest[(str(r.get("model")), str(r.get("chip")), str(r.get("baseline_chip")))] = r
        return dict(sorted(latest.items()))

    def latest(self) -> list[Record]:
        """The newest record of every test id (for a one-screen summary)."""
        latest: dict[tuple[str, str], Record] = {}
        for _, _, r in self.records():
            if r.get("kind") in TEST_KINDS:
                latest[(str(r.get("test", "")), str(r.get("kind")))] = r
        return list(latest.values())


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort tuples that may hold None next to strings or numbers."""
    return tuple((v is None, v if v is not None else 0) if not isinstance(v, str) else (False, v) for v in key)


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


def _parse_line(raw: bytes, where: str) -> tuple[Record | None, str | None]:
    """A record, or why the line is not one."""
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
    kind = value.get("kind")
    if kind not in (*TEST_KINDS, RUN_KIND):
        return None, f"{where}: unknown record kind {kind!r}; expected one of {', '.join((*TEST_KINDS, RUN_KIND))}"
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
        record, problem = _parse_line(raw, f"{path}:{line_no}")
        if record is None:
            reading.malformed_lines += 1
            reading.warnings.append(str(problem))
            continue
        canonical = json.dumps(record, sort_keys=True, default=str)
        count += 1
        if canonical in reading.seen:
            reading.duplicates += 1
            continue
        reading.seen.add(canonical)
        if not record.get("run_id"):
            missing_id += 1
            record = {**record, "run_id": f"(no run_id) {path}"}
        reading.records.append((record, f"{path}:{line_no}"))
    if blanks:
        reading.blank_lines += len(blanks)
        shown = ", ".join(map(str, blanks[:10])) + (" ..." if len(blanks) > 10 else "")
        reading.warnings.append(f"{path}: {len(blanks)} blank line(s) ignored (line {shown})")
    if missing_id:
        reading.warnings.append(
            f"{path}: {missing_id} record(s) without a run_id (written before runs had ids) grouped as one run")
    return count


def _group(records: Iterable[tuple[Record, str]]) -> list[Run]:
    runs: dict[str, Run] = {}
    for record, where in records:
        run_id = str(record["run_id"])
        run = runs.setdefault(run_id, Run(run_id=run_id, started=None, host=None, environment={}))
        source = where.rsplit(":", 1)[0]
        if source not in run.sources:
            run.sources.append(source)
        if record.get("kind") == RUN_KIND:
            run.info = record
            run.environment = dict(record.get("environment") or {})
        else:
            run.records.append(record)
    for run in runs.values():
        times = [t for t in (parse_time(r.get("time")) for r in run.records) if t is not None]
        earliest = min(times).strftime(_TIME_FORMAT) if times else None
        run.started = run.info.get("started") or earliest
        run.host = run.environment.get("host") or next((r.get("host") for r in run.records if r.get("host")), None)
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
                f"{', '.join((*TEST_KINDS, RUN_KIND))}, as pytest --results FILE writes them"
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


# --------------------------------------------------------------------------------------------
# Figures inside records


def figures_per_card(record: Mapping[str, Any]) -> dict[int, float]:
    """A perf record's images/s per batch size, per card (per-chip figures x devices_per_card)."""
    factor = int(record.get("devices_per_card") or 1) if record.get("unit") == "per_chip" else 1
    out: dict[int, float] = {}
    for key, value in record.items():
        if key.startswith(PER_S_PREFIX) and key[len(PER_S_PREFIX):].isdigit() and finite(value):
            out[int(key[len(PER_S_PREFIX):])] = float(value) * factor
    return dict(sorted(out.items()))


def best_per_card(record: Mapping[str, Any]) -> tuple[int, float] | None:
    """(batch size, images/s per card) at the best batch, as the perf test chose and recorded it."""
    bs, best = record.get("best_batch"), record.get("best_images_per_s_per_card")
    return (int(bs), float(best)) if isinstance(bs, int) and finite(best) else None


def finite(value: Any) -> bool:
    """A real, finite number (not a bool, None, text or NaN): a figure a table can show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# History and regressions

AccuracySeries = tuple[str, str, str]  # chip, backend, precision


@dataclass(frozen=True)
class HistoryPoint:
    """One run's figures for one model: top-1/top-5 per (chip, backend, precision), best per chip."""

    run: Run
    accuracy: Mapping[AccuracySeries, tuple[float, float | None]]
    throughput: Mapping[str, tuple[int, float]]  # chip -> (best batch, images/s per card)


@dataclass(frozen=True)
class Regression:
    """A figure that dropped beyond the policy's [history] threshold since the previous run."""

    model: str
    what: str  # "top-1 Ascend310P3 ascend fp16" / "images/s Ascend310P3"
    run_id: str
    previous_run_id: str
    previous: float
    current: float
    threshold: str

    def describe(self) -> str:
        if self.what.startswith("top-1"):
            change = f"{self.previous:.2f} -> {self.current:.2f} ({self.current - self.previous:+.2f} points)"
        else:
            change = (f"{self.previous:.2f} -> {self.current:.2f} images/s per card "
                      f"({100 * (self.current - self.previous) / self.previous:+.1f}%)")
        return (f"REGRESSION {self.model} {self.what}: {change} in run {self.run_id} vs run "
                f"{self.previous_run_id} (threshold {self.threshold})")


@dataclass(frozen=True)
class ModelHistory:
    model: str
    points: tuple[HistoryPoint, ...]
    accuracy_series: tuple[AccuracySeries, ...]
    throughput_chips: tuple[str, ...]


def _accuracy_of(run: Run, model: str) -> dict[AccuracySeries, tuple[float, float | None]]:
    """Top-1/top-5 per series; with several batch sizes the worst top-1 counts (a regression at any
    batch size shows)."""
    out: dict[AccuracySeries, tuple[float, float | None]] = {}
    for r in run.of_kind("accuracy"):
        if r.get("model") != model or r.get("outcome") == "skipped" or not finite(r.get("top1")):
            continue
        series = (str(r.get("chip")), str(r.get("backend") or "?"), str(r.get("precision") or "?"))
        top5 = float(r["top5"]) if finite(r.get("top5")) else None
        if series not in out or float(r["top1"]) < out[series][0]:
            out[series] = (float(r["top1"]), top5)
    return out


def _throughput_of(run: Run, model: str) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for r in run.of_kind("perf"):
        if r.get("model") == model and r.get("outcome") != "skipped":
            best = best_per_card(r)
            if best is not None:
                out[str(r.get("chip"))] = best
    return out


def model_history(results: Results, model: str) -> ModelHistory:
    """One point per run (oldest first) that measured ``model``."""
    points = []
    for run in results.runs:
        accuracy, throughput = _accuracy_of(run, model), _throughput_of(run, model)
        if accuracy or throughput:
            points.append(HistoryPoint(run=run, accuracy=accuracy, throughput=throughput))
    series = sorted({s for p in points for s in p.accuracy})
    chips = sorted({c for p in points for c in p.throughput})
    return ModelHistory(model=model, points=tuple(points), accuracy_series=tuple(series), throughput_chips=tuple(chips))


def find_regressions(history: ModelHistory, policy: HistoryPolicy) -> list[Regression]:
    """Each figure against the same figure of the previous run that has it (runs on other machines
    in between measure other chips and are not 'the previous run' of this one)."""
    found: list[Regression] = []
    last_top1: dict[AccuracySeries, tuple[float, str]] = {}
    last_best: dict[str, tuple[float, str]] = {}
    for point in history.points:
        run_id = point.run.run_id
        for series, (top1, _) in point.accuracy.items():
            if series in last_top1 and last_top1[series][0] - top1 > policy.regression_top1_points:
                found.append(Regression(history.model, "top-1 " + " ".join(series), run_id, last_top1[series][1],
                                        last_top1[series][0], top1, f"{policy.regression_top1_points:g} points"))
            last_top1[series] = (top1, run_id)
        for chip, (_, best) in point.throughput.items():
            if chip in last_best:
                previous = last_best[chip][0]
                if previous > 0 and 100 * (previous - best) / previous > policy.regression_throughput_percent:
                    found.append(Regression(history.model, f"images/s {chip}", run_id, last_best[chip][1], previous,
                                            best, f"{policy.regression_throughput_percent:g}%"))
            last_best[chip] = (best, run_id)
    return found


def all_regressions(results: Results, policy: HistoryPolicy) -> list[Regression]:
    """Every model's regressions, model by model."""
    return [reg for model in results.models() for reg in find_regressions(model_history(results, model), policy)]
