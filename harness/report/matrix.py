"""The verdict matrix that opens the report: one row per model, one column per certification.

Columns: conversion, accuracy per configuration, agreement, throughput, and each ratio gate
(chip vs baseline chip), from the newest record of every test (``Results.latest_tests``). A cell
shows the recorded verdict's words and the test's key figure, coloured by
:func:`harness.report.verdicts.status_of` (the one colouring of the report), and links to its
details: the accuracy table's row, the model's throughput table, or the test's row in the list of
every test. A test that stopped before it knew its whole configuration (a skip before compiling)
shares the column of the one configuration it covers; where a model has both, the cell shows the
whole configuration's record (its figures; the accuracy table lists both). Beneath the matrix, every reason a cell is
not a pass is one line with the number of models and their names (the models' names and the
checkpoint files in it written ``<model>`` and ``<file>``), numbered: a cell that is not a pass
names its line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from harness.records.certified import CERTIFYING_KINDS, MODEL_STATUSES, NOT_CERTIFIED, certifications, model_status
from harness.records.parts import Configuration
from harness.records.results import Results, finite, sort_key
from harness.records.schema import AccuracyRecord, ConversionRecord, PerfRatioRecord, PerfRecord, ResultRecord
from harness.report.render import (
    ALLOWED,
    BAD,
    ERROR,
    INCONCLUSIVE,
    NEUTRAL,
    OK,
    SKIP,
    Block,
    Bullets,
    Cell,
    Para,
    Table,
)
from harness.report.tables import DASH, fmt_figure, one_line, pct
from harness.report.verdicts import STATUS_WORDS, anchor, record_anchor, status_of, verdict_cell

KIND_ORDER = ("conversion", "accuracy", "agreement", "perf", "perf_ratio")
KIND_TITLES = {"conversion": "conversion", "accuracy": "accuracy", "agreement": "agreement with torch",
               "perf": "throughput", "perf_ratio": "ratio"}
_WORST_FIRST = (BAD, ERROR, INCONCLUSIVE, ALLOWED, SKIP, "", NEUTRAL, OK)
_CHECKPOINT = re.compile(r"\S+\.(?:pth|pt|tar|bin|ckpt|safetensors|npz|onnx)\b")


@dataclass(frozen=True)
class Column:
    """One certification: the kind, the configuration without its model, the baseline chip of a ratio."""

    kind: str
    config: Configuration
    baseline: str | None = None

    @property
    def title(self) -> str:
        label = self.config.label()
        head = f"{KIND_TITLES.get(self.kind, self.kind)}" + (f" vs {self.baseline}" if self.baseline else "")
        return head if label == "-" else f"{head}\n{label}"


@dataclass(frozen=True)
class Matrix:
    models: tuple[str, ...]
    columns: tuple[Column, ...]
    cells: Mapping[tuple[str, Column], ResultRecord]


def _column(r: ResultRecord) -> Column:
    baseline = r.rule.baseline_chip if isinstance(r, PerfRatioRecord) else None
    return Column(r.kind, replace(r.config, model=None), baseline)


def _rank(r: ResultRecord) -> int:
    status = status_of(r)
    return _WORST_FIRST.index(status) if status in _WORST_FIRST else len(_WORST_FIRST)


def verdict_matrix(results: Results) -> Matrix:
    """The newest record of every test, placed in its model's row and its certification's column."""
    found: dict[Column, list[ResultRecord]] = {}
    for r in results.latest_tests():
        if r.model is not None:
            found.setdefault(_column(r), []).append(r)
    target = {}
    for col in found:  # a test that knows less shares the one column it covers
        wider = [o for o in found if o != col and (o.kind, o.baseline) == (col.kind, col.baseline)
                 and col.config.covers(o.config)]
        if len(wider) == 1:
            target[col] = wider[0]
    cells: dict[tuple[str, Column], ResultRecord] = {}
    for col, records in sorted(found.items(), key=lambda kv: kv[0] in target):  # whole configurations first
        place = target.get(col, col)
        place = place if place not in target else col  # no chains: one step or none
        for r in records:
            key = (str(r.model), place)
            if key not in cells:
                cells[key] = r
            elif col == place and _rank(r) < _rank(cells[key]):  # two tests of one configuration: the worse
                cells[key] = r
    columns = sorted({c for _, c in cells}, key=lambda c: (KIND_ORDER.index(c.kind) if c.kind in KIND_ORDER else 99,
                                                           sort_key(c.config), c.baseline or ""))
    return Matrix(models=tuple(sorted({m for m, _ in cells})), columns=tuple(columns), cells=cells)


def cell_figure(r: ResultRecord) -> str:
    """The one figure of a cell (what key_figure says, in fewer words); empty when there is none."""
    if r.outcome == "skipped":
        return ""
    if isinstance(r, AccuracyRecord) and r.kind == "accuracy" and finite(r.scores.top1):
        drop = r.verdicts.paired_drop_top1
        images = f" on {r.scores.images:,}" if r.scores.images else ""
        return f"top-1 {pct(r.scores.top1)}{images}" + (f", drop {float(drop):.2f}" if finite(drop) else "")
    if isinstance(r, AccuracyRecord) and r.kind == "agreement" and finite(r.reference.top1_agreement):
        return f"agreement {pct(r.reference.top1_agreement)}%"
    if isinstance(r, ConversionRecord) and finite(r.parity.max_abs_diff):
        return f"max|diff| {float(r.parity.max_abs_diff):.2g}"
    if isinstance(r, PerfRecord):
        best = r.best_per_card()
        return f"best {fmt_figure(best[1])} (bs{best[0]})" if best else ""
    if isinstance(r, PerfRatioRecord) and finite(r.result.ratio):
        return f"{float(r.result.ratio):.4f} (>= {r.rule.threshold:g})"
    return ""


def words(r: ResultRecord) -> str:
    """The verdict in a cell's words: pass, fail, inconclusive, inconclusive (allowed), skipped or
    not applicable, error, recorded (no gate)."""
    status = status_of(r)
    if status == SKIP:
        return verdict_cell(r).text
    return STATUS_WORDS.get(status, str(r.outcome or DASH))


def _why(r: ResultRecord) -> str:
    status = status_of(r)
    if status == BAD and r.verdict is not None:
        figure = cell_figure(r)
        return verdict_cell(r).text + (f" ({figure})" if figure else "")
    if status in (INCONCLUSIVE, ALLOWED) and r.verdict is not None:
        return verdict_cell(r).text
    return one_line(r.meta.reason) or f"{r.outcome or 'no outcome'}, no reason recorded"


def _masked(text: str, model: str) -> str:
    return _CHECKPOINT.sub("<file>", text.replace(model, "<model>"))


@dataclass(frozen=True)
class Reason:
    number: int
    kind: str
    status: str
    text: str
    models: tuple[str, ...]

    def line(self) -> Cell:
        n = len(self.models)
        return Cell(f"[{self.number}] {KIND_TITLES.get(self.kind, self.kind)} {words_of(self.status)}, {n} model"
                    f"{'s' if n != 1 else ''} ({', '.join(self.models)}): {self.text}", self.status)


def words_of(status: str) -> str:
    return STATUS_WORDS.get(status, status or "recorded")


def reasons(matrix: Matrix) -> tuple[list[Reason], dict[tuple[str, Column], int]]:
    """Every distinct reason a cell is not a pass (in column order), and each such cell's reason number."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    of_cell: dict[tuple[str, Column], tuple[str, str, str]] = {}
    for col in matrix.columns:
        for model in matrix.models:
            r = matrix.cells.get((model, col))
            if r is None or status_of(r) in (OK, NEUTRAL):
                continue
            key = (col.kind, status_of(r), _masked(_why(r), model))
            grouped.setdefault(key, [])
            if model not in grouped[key]:
                grouped[key].append(model)
            of_cell[(model, col)] = key
    numbers = {key: i for i, key in enumerate(grouped, 1)}
    found = [Reason(numbers[key], key[0], key[1], key[2], tuple(models)) for key, models in grouped.items()]
    return found, {cell: numbers[key] for cell, key in of_cell.items()}


def _link(r: ResultRecord) -> str:
    if isinstance(r, AccuracyRecord) and r.kind == "accuracy":
        return record_anchor("acc", r)
    if isinstance(r, (PerfRecord, PerfRatioRecord)):
        return anchor("throughput", r.model)
    return record_anchor("test", r)


def _tally(matrix: Matrix) -> str:
    """``6 model(s): 1 certified (a), 1 inconclusive (allowed) (b), 4 not certified`` by the one rule
    of harness.records.certified, on the newest record of every certification in the matrix."""
    newest = certifications(r for (_, c), r in matrix.cells.items() if c.kind in CERTIFYING_KINDS)
    groups: dict[str, list[str]] = {s: [] for s in MODEL_STATUSES}
    for model in matrix.models:
        if model in newest:
            groups[model_status(newest[model])].append(model)
    total = sum(map(len, groups.values()))
    parts = [f"{len(ms)} {name}" + (f" ({', '.join(ms)})" if ms and name != NOT_CERTIFIED else "")
             for name, ms in groups.items()]
    return f"{total} model(s) with certification tests: " + ", ".join(parts) + "."


def matrix_blocks(results: Results) -> list[Block]:
    """The matrix, the tally of certified models, and the reasons grouped beneath it."""
    matrix = verdict_matrix(results)
    if not matrix.columns:
        return []
    found, numbers = reasons(matrix)
    rows = []
    for model in matrix.models:
        cells: list[str | Cell] = [Cell(model, href=model)]
        for col in matrix.columns:
            r = matrix.cells.get((model, col))
            if r is None:
                cells.append(DASH)
                continue
            n = numbers.get((model, col))
            detail = " ".join(x for x in (cell_figure(r), f"[{n}]" if n else "") if x)
            cells.append(Cell(words(r) + (f"\n{detail}" if detail else ""), status_of(r), href=_link(r)))
        rows.append(tuple(cells))
    table = Table(("model", *(c.title for c in matrix.columns)), tuple(rows), css="matrix")
    blocks: list[Block] = [table, Para(_tally(matrix), "tally")]
    if found:
        blocks.append(Bullets(tuple(r.line() for r in found), "reasons"))
    return blocks

