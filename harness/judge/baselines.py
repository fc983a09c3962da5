"""Throughput figures as data: baseline files and figures measured elsewhere (reading, writing).

A figure (:class:`Figure`) is one model x batch size on one chip with its unit (per chip or per
card) and its clock (device compute time or wall time). Baselines live in
``fixtures/baselines/<chip>.csv``; a lab's own figures for the chip under test come from the
same CSV format or from ais_bench ``*_summary.json`` files (``--measurements``). The rules that
compare figures (best batch, ratios) are in :mod:`harness.judge.gates`.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from filelock import FileLock

from harness.cache import atomic_write_bytes
from harness.clocks import CLOCKS, DEVICE_COMPUTE
from harness.errors import UsageError
from harness.specs import FIXTURES_DIR, SCENARIOS, SINGLE_STREAM, ChipSpec

BASELINES_DIR = FIXTURES_DIR / "baselines"
COLUMNS = ("model", "batch_size", "images_per_s", "unit", "clock", "source", "note")
# Optional: a file without it holds single-stream figures (the seeds' synchronous ais_bench loop).
OPTIONAL_COLUMNS = ("scenario",)
UNITS = ("per_chip", "per_card")
# [0-9], not \d: \d also matches Unicode digits ("bs\u0661\u0666" would be batch 16).
_SUMMARY_BS = re.compile(r"(?:^|[_\-/])bs_?([0-9]+)(?=$|[_\-./])", re.IGNORECASE)
# Figures are ASCII decimal text: float() and int() would also take "1_000", "\u0661\u0662",
# "infinity", "+5" or " 5".
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_COUNT = re.compile(r"[0-9]+")
MAX_BATCH = 1_000_000


class BaselineError(UsageError, ValueError):
    """A baseline or measurements file is malformed, or two figures cannot be compared."""


@dataclass(frozen=True)
class Figure:
    """One throughput figure, as its source states it."""

    chip: str
    model: str
    batch_size: int
    images_per_s: float
    unit: str
    clock: str
    source: str
    note: str = ""
    scenario: str = SINGLE_STREAM  # harness.specs.SCENARIOS: how the figure was measured

    def per_card(self, chip: ChipSpec) -> float:
        """Images/s of the whole card: per-chip figures times the chip's ``devices_per_card``."""
        return self.images_per_s * (chip.devices_per_card if self.unit == "per_chip" else 1)

    def describe(self) -> str:
        return (f"{self.images_per_s:g} images/s at bs{self.batch_size} ({self.unit}, {self.scenario}, {self.clock}; "
                f"{self.source})")


# --------------------------------------------------------------------------------------------
# Reading


def _shorter(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def _float(text: str, where: str, what: str) -> float:
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value) or value <= 0:
        raise BaselineError(f"{where}: {what} must be a positive, finite decimal number (ASCII digits, "
                            f"e.g. 1234.5 or 1.2e3), found {_shorter(text)!r}")
    return value


def _int(text: str, where: str, what: str) -> int:
    # Compared as text first: int() refuses more than 4300 digits.
    value = int(text) if _COUNT.fullmatch(text) and len(text.lstrip("0")) <= 7 else None
    if value is None or not 1 <= value <= MAX_BATCH:
        raise BaselineError(f"{where}: {what} must be an integer in [1, {MAX_BATCH}] of ASCII digits, "
                            f"found {_shorter(text)!r}")
    return value


def parse_csv(text: str, chip: str, origin: str, known_models: Iterable[str] | None = None) -> list[Figure]:
    """Rows of the baseline CSV format (see fixtures/baselines/README.md) as figures of ``chip``."""
    # A spreadsheet's UTF-8 byte order mark is not part of the first column's name.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        return _parse_rows(reader, chip, origin, known_models)
    except csv.Error as exc:  # a field over csv's size limit, a quote csv cannot close
        raise BaselineError(f"{origin}:{reader.line_num}: not a readable CSV row ({exc}); expected the "
                            f"columns {', '.join(COLUMNS)} (fixtures/baselines/README.md)") from None


def _parse_rows(
    reader: csv.DictReader[str], chip: str, origin: str, known_models: Iterable[str] | None
) -> list[Figure]:
    header = tuple(reader.fieldnames or ())
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise BaselineError(
            f"{origin}: expected a CSV header with columns {', '.join(COLUMNS)}; missing {', '.join(missing)} "
            f"(found {', '.join(header) or 'no header'})"
        )
    models = set(known_models) if known_models is not None else None
    figures: list[Figure] = []
    seen: dict[tuple[str, int, str], int] = {}
    for line_no, row in enumerate(reader, start=2):
        where = f"{origin}:{line_no}"
        if None in row or any(v is None for v in row.values()):
            raise BaselineError(f"{where}: expected {len(header)} fields, found a row of a different length")
        model = row["model"].strip()
        if models is not None and model not in models:
            raise BaselineError(
                f"{where}: unknown model {model!r}; known: {', '.join(sorted(models))} (fixtures/models.toml)"
            )
        unit, clock = row["unit"].strip(), row["clock"].strip()
        if unit not in UNITS:
            raise BaselineError(f"{where}: unit must be one of {', '.join(UNITS)}, found {unit!r}")
        if clock not in CLOCKS:
            raise BaselineError(f"{where}: clock must be one of {', '.join(CLOCKS)}, found {clock!r}")
        scenario = (row.get("scenario") or SINGLE_STREAM).strip()
        if scenario not in SCENARIOS:
            raise BaselineError(f"{where}: scenario must be one of {', '.join(SCENARIOS)}, found {scenario!r}")
        bs = _int(row["batch_size"].strip(), where, "batch_size")
        for column in ("source", "note"):
            if "\r" in row[column] or "\n" in row[column]:
                # csv.writer does not quote a lone \r: a saved figure could not be read back.
                raise BaselineError(f"{where}: {column} must be one line of text, found {row[column]!r}")
        if (model, bs, scenario) in seen:
            raise BaselineError(f"{where}: a second {scenario} row for {model} bs{bs} (first on line "
                                f"{seen[(model, bs, scenario)]}); keep one")
        seen[(model, bs, scenario)] = line_no
        figures.append(
            Figure(
                chip=chip, model=model, batch_size=bs,
                images_per_s=_float(row["images_per_s"].strip(), where, "images_per_s"),
                unit=unit, clock=clock, source=row["source"].strip() or origin, note=row["note"].strip(),
                scenario=scenario,
            )
        )
    return figures


def _read_text(path: Path, fix: str) -> str:
    """A figures file's text; an unreadable one (permissions, not UTF-8, a directory) is a BaselineError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BaselineError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected a CSV file; {fix}"
        ) from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None


def baseline_path(chip: str, directory: Path | None = None) -> Path:
    return (directory or BASELINES_DIR) / f"{chip}.csv"


def load_baselines(chip: str, directory: Path | None = None, known_models: Iterable[str] | None = None) -> list[Figure]:
    """Every figure of ``chip`` in ``<directory>/<chip>.csv``; an absent file is an empty list."""
    path = baseline_path(chip, directory)
    if not path.is_file():
        return []
    text = _read_text(path, "fix its permissions, or pass --baselines-dir DIR holding readable <chip>.csv files")
    return parse_csv(text, chip, str(path), known_models)


def parse_ais_bench_summary(path: Path, chip: str, model: str, batch_size: int | None = None) -> Figure:
    """One ais_bench ``*_summary.json``: ``throughput`` is ``1000 * batch / mean NPU compute ms``.

    The summary does not name the batch size: it comes from ``batch_size`` or a ``bs<N>`` in the
    path, and is checked against ``throughput * NPU_compute_time.mean / 1000``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: JSONDecodeError, and an integer of more than 4300 digits; RecursionError: nesting.
    except (OSError, ValueError, RecursionError) as exc:
        raise BaselineError(f"{path}: cannot read an ais_bench summary ({exc})") from exc
    if not isinstance(data, dict) or "throughput" not in data:
        raise BaselineError(f"{path}: expected an ais_bench summary with a 'throughput' field")
    throughput = _float(_json_number(data["throughput"]), str(path), "throughput")
    compute = data.get("NPU_compute_time")
    implied = None
    if isinstance(compute, dict) and "mean" in compute:
        mean = _float(_json_number(compute["mean"]), str(path), "NPU_compute_time.mean (ms)")
        implied = throughput * mean / 1000.0
        if not math.isfinite(implied):
            raise BaselineError(f"{path}: throughput {throughput:g} with mean compute {mean:g} ms is not a "
                                f"plausible pair; expected the *_summary.json ais_bench wrote")
    if batch_size is None:
        found = _SUMMARY_BS.findall(str(path))
        if found:
            batch_size = _int(found[-1], str(path), "the batch size in the path (bs<N>)")
        elif implied is not None and abs(implied - round(implied)) < 1e-3 and 1 <= round(implied) <= MAX_BATCH:
            batch_size = int(round(implied))
        else:
            raise BaselineError(
                f"{path}: cannot tell the batch size; put it in the path (e.g. {model}/bs16/..._summary.json)"
            )
    if implied is not None and abs(implied - batch_size) > 1e-3 * batch_size:
        raise BaselineError(
            f"{path}: throughput {throughput:g} with mean compute {mean:g} ms implies batch "
            f"{implied:.3f}, not {batch_size}; is this the summary of a bs{batch_size} run?"
        )
    return Figure(chip=chip, model=model, batch_size=batch_size, images_per_s=throughput, unit="per_chip",
                  clock=DEVICE_COMPUTE, source=_one_line(str(path)), note="ais_bench summary throughput")


def _one_line(text: str) -> str:
    """``text`` with its line breaks escaped: a figure's source is one cell of one CSV line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _json_number(value: object) -> str:
    """A JSON number (or a string holding one) as text for :func:`_float`; anything else (true,
    a list, a table) as text that no number pattern accepts."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return repr(value)
    if isinstance(value, int) and len(str(abs(value))) > 400:  # more digits than any float holds
        return "inf"
    return str(value)


def _model_in_path(path: Path, models: Sequence[str]) -> str | None:
    for part in reversed(path.parts):
        for name in sorted(models, key=len, reverse=True):
            if part == name or part.startswith(f"{name}_") or part.startswith(f"{name}-"):
                return name
    return None


def read_measurements(path: Path, chip: str, known_models: Sequence[str]) -> list[Figure]:
    """The chip-under-test's figures from a baseline-format CSV, one summary JSON, or a directory
    of ``*_summary.json`` files (each path naming its model, e.g. ``resnext50_32x4d/bs16/...``)."""
    path = Path(path)
    fix = "pass --measurements a readable .csv file or folder of ais_bench *_summary.json files"
    try:
        if not path.exists():
            raise BaselineError(f"--measurements {path}: no such file or directory")
        if path.is_file() and path.suffix.lower() == ".csv":
            return parse_csv(_read_text(path, fix), chip, str(path), known_models)
        summaries = [path] if path.is_file() else sorted(path.rglob("*_summary.json"))
    except OSError as exc:  # a folder that cannot be searched
        raise BaselineError(
            f"--measurements {path}: cannot read it ({exc.strerror or exc}: {exc.filename}); {fix}"
        ) from None
    if not summaries:
        raise BaselineError(
            f"--measurements {path}: expected a .csv file or ais_bench *_summary.json files, found neither"
        )
    figures = []
    for summary in summaries:
        model = _model_in_path(summary.relative_to(path) if path.is_dir() else summary, known_models)
        if model is None:
            raise BaselineError(
                f"{summary}: no model name in its path; put each summary under a folder named after "
                f"its model (one of {', '.join(known_models)}), e.g. resnext50_32x4d/bs16/x_summary.json"
            )
        figures.append(parse_ais_bench_summary(summary, chip, model))
    keys = [(f.model, f.batch_size) for f in figures]  # ais_bench summaries: single-stream, one per batch
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise BaselineError(f"--measurements {path}: several summaries for {', '.join(f'{m} bs{b}' for m, b in dupes)}")
    return figures


# --------------------------------------------------------------------------------------------
# Writing


def _render(figures: Sequence[Figure]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + OPTIONAL_COLUMNS)
    for f in figures:
        writer.writerow([f.model, f.batch_size, format(f.images_per_s, ".10g"), f.unit, f.clock, f.source, f.note,
                         f.scenario])
    return out.getvalue().encode()


def save_baseline(figures: Sequence[Figure], chip: str, directory: Path | None = None,
                  known_models: Iterable[str] | None = None) -> Path:
    """Merge ``figures`` into ``<directory>/<chip>.csv`` (same model, batch and scenario replaced), atomically
    and under a lock so that concurrent runs do not lose each other's rows."""
    path = baseline_path(chip, directory)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            current = load_baselines(chip, directory, known_models)
            new_keys = {(f.model, f.batch_size, f.scenario) for f in figures}
            merged = [f for f in current if (f.model, f.batch_size, f.scenario) not in new_keys]
            merged.extend(replace(f, chip=chip) for f in figures)
            merged.sort(key=lambda f: (f.model, f.batch_size, f.scenario))
            atomic_write_bytes(path, _render(merged))
    except OSError as exc:  # read-only, not a directory, a full disk: the file is as it was (atomic write)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise BaselineError(
            f"--save-baseline: cannot write {path} ({exc.strerror or exc}); it is unchanged; "
            + ("free space there or " if full else "") + "pass --baselines-dir DIR pointing to a writable directory"
        ) from None
    return path

