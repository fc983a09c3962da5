"""Results -> the report a person reads in ten seconds: Markdown, one self-contained HTML file, plots.

``write_report(load_results(paths), out_dir)`` writes ``report.md``, ``report.html`` and
``plots/<model>.png`` (the model's name made one safe file name, harness.safe_names). The
regressions open the report, then the newest result of every test in every configuration; per
model the accuracy table, the throughput table (the seeds' layout), a throughput-vs-batch plot and
the model's history across runs with its regressions (harness.records.history, thresholds from
fixtures/policy.toml [history]); the environment of every run closes it. ``terminal_table`` is the
plain-text summary the plugin prints.

The report shows the verdicts the tests recorded; it never decides one (harness.judge does, the
records carry it). Tables: :mod:`~harness.report.tables`, :mod:`~harness.report.throughput`;
rendering: :mod:`~harness.report.render`; plots: :mod:`~harness.report.plots`.

Results files are merged from other machines (not trusted): the report is built from
:func:`displayed` results, every text of every record escaped (harness.safe_names.printable), so a
name with a newline, an escape code or a lone surrogate is shown escaped, everywhere it appears; a
file name is made from a name only by harness.safe_names.safe_component, and every file written is
checked to be inside ``out_dir`` (harness.safe_names.inside).
"""

from __future__ import annotations

import dataclasses
import time
from collections import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import atomic_write_bytes
from harness.records.history import (
    ModelHistory,
    Regression,
    find_regressions,
    model_history,
)
from harness.records.results import Results
from harness.records.schema import Localization
from harness.report.localization import localization_blocks
from harness.report.matrix import matrix_blocks
from harness.report.paths import as_typed
from harness.report.plots import PLOTS_DIR, add_plot, plot_throughput, plots_unavailable
from harness.report.render import (
    BAD,
    Block,
    Bullets,
    Cell,
    Heading,
    Image,
    Para,
    render_html,
    render_markdown,
)
from harness.report.tables import (
    SUMMARY_HEADERS,
    accuracy_blocks,
    history_block,
    runs_blocks,
    summary_rows,
    summary_table,
)
from harness.report.throughput import column_notes, throughput_block, throughput_table
from harness.report.verdicts import anchor
from harness.safe_names import inside, printable
from harness.specs import (
    ChipSpec,
    HistoryPolicy,
    Policy,
    SpecError,
    load_chips,
    load_models,
    load_policy,
)

MAX_WARNINGS_SHOWN = 20
MAX_TERMINAL_CELL = 60  # characters; a longer name (from a results file) is cut, report.md has it whole
TITLE = "Model-zoo certification report"
_INIT_FIELDS: dict[type, tuple[str, ...]] = {}  # a dataclass's fields that displayed() copies
_SCALARS = frozenset({type(None), bool, int, float})


def displayed(value: Any) -> Any:
    """``value`` (the results read, or any part of them) with every text in it shown escaped
    (harness.safe_names.printable): what the report shows. A record's :class:`Localization` is kept
    as read (its paths are opened; harness.report.localization escapes what it shows). What needs
    no escaping is returned as the same object."""
    return _texts_mapped(value, printable)


def _as_typed(results: Results) -> Results:
    """Every run's records with the paths its command line names shown as typed (harness.report.paths)."""
    runs = []
    for run in results.runs:
        if run.info is None or not run.info.args:
            runs.append(run)
            continue
        rewrite = as_typed(run.info.args)
        runs.append(dataclasses.replace(run, records=[_texts_mapped(r, rewrite) for r in run.records]))
    return dataclasses.replace(results, runs=runs)


def _texts_mapped(value: Any, text: Callable[[str], str]) -> Any:
    """``value`` with ``text`` applied to every string in it (a :class:`Localization` kept as read)."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        return text(value)
    if isinstance(value, (Localization, type)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # classes were returned above
        names = _INIT_FIELDS.get(type(value))
        if names is None:
            names = _INIT_FIELDS[type(value)] = tuple(f.name for f in dataclasses.fields(value) if f.init)
        changed = {}
        for name in names:
            old = getattr(value, name)
            new = _texts_mapped(old, text)
            if new is not old:
                changed[name] = new
        return dataclasses.replace(value, **changed) if changed else value
    if isinstance(value, abc.Mapping):
        items = [(_texts_mapped(k, text), _texts_mapped(v, text)) for k, v in value.items()]
        same = all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True))
        return value if same else dict(items)
    if type(value) in (list, tuple):
        shown = [_texts_mapped(v, text) for v in value]
        return value if all(a is b for a, b in zip(shown, value, strict=True)) else type(value)(shown)
    return value


def _terminal_cell(text: str) -> str:
    text = printable(text)
    return text if len(text) <= MAX_TERMINAL_CELL else text[:MAX_TERMINAL_CELL - 3] + "..."


def terminal_table(results: Results) -> str:
    """A compact plain-text table of the newest result of every test: model, configuration, kind,
    key figure, verdict (each cell one line, escaped: harness.safe_names.printable, and cut at
    MAX_TERMINAL_CELL characters)."""
    rows = [SUMMARY_HEADERS,
            *(tuple(map(_terminal_cell, (m, c, k, f, v.text))) for m, c, k, f, v in summary_rows(results))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportPaths:
    """What write_report wrote, and the regressions it flagged (for exit statuses and summaries)."""

    out_dir: Path
    markdown: Path
    html: Path
    plots: Mapping[str, Path]  # the plot's file relative to out_dir (plots/<name>.png) -> its path
    regressions: tuple[Regression, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def _titles() -> dict[str, str]:
    try:
        return {name: spec.title for name, spec in load_models().items()}
    except SpecError:
        return {}


def _regression_lines(regressions: Sequence[Regression]) -> list[Cell]:
    """One line per figure that regressed (top-1, images/s): how many series, in which models, each
    series' change (``describe`` has every figure; the history tables mark each cell)."""
    lines = []
    for figure in dict.fromkeys(r.figure for r in regressions):
        found = [r for r in regressions if r.figure == figure]
        models = list(dict.fromkeys(r.model for r in found))
        lines.append(Cell(f"REGRESSION {figure} (threshold {found[0].threshold}): {len(found)} series in "
                          f"{len(models)} model(s): " + "; ".join(r.describe().removeprefix("REGRESSION ")
                                                                  for r in found), BAD))
    return lines


def _header_blocks(results: Results, regressions: Sequence[Regression], history: HistoryPolicy,
                   notes: Sequence[str]) -> list[Block]:
    started = [r.started for r in results.runs if r.started]
    blocks: list[Block] = [
        Heading(1, TITLE),
        Para(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %z')} from {len(results.files)} results file(s), "
             f"{len(results.runs)} run(s)" + (f" between {started[0]} and {started[-1]}" if started else "") + ".",
             "note"),
    ]
    matrix = matrix_blocks(results)
    if matrix:
        blocks += [Heading(2, "Verdicts (newest result of every certification; a cell links to its details)",
                           "verdicts"), *matrix]
    if regressions:
        blocks += [Heading(2, "Regressions", "regressions"), Bullets(tuple(_regression_lines(regressions)),
                                                                     "regressions")]
    else:
        blocks.append(Para("No regressions: no figure dropped beyond the thresholds against the previous run "
                           "that measured the same configuration.", "clean"))
    blocks.append(Para(f"Thresholds (fixtures/policy.toml [history]): top-1 drop > "
                       f"{history.regression_top1_points:g} points, best images/s drop > "
                       f"{history.regression_throughput_percent:g}%, each within one configuration (model, chip, "
                       "backend, precision, input, batch size, source of the figures).", "note"))
    shown = list(results.warnings[:MAX_WARNINGS_SHOWN])
    if len(results.warnings) > MAX_WARNINGS_SHOWN:
        shown.append(f"... and {len(results.warnings) - MAX_WARNINGS_SHOWN} more")
    if shown or notes:
        blocks += [Heading(2, "Input problems and notes", "warnings"),
                   Para(f"{results.malformed_lines} malformed line(s), {results.blank_lines} blank line(s), "
                        f"{results.duplicate_records} duplicate record(s) ignored.", "note"),
                   Bullets(tuple([*notes, *shown]))]
    return blocks


def _every_test_blocks(results: Results) -> list[Block]:
    if not summary_rows(results):
        return []
    return [Heading(2, "Summary (newest result of every test, per configuration)", "summary"), summary_table(results)]


def _model_blocks(results: Results, model: str, title: str, chips: Mapping[str, ChipSpec],
                  baselines_dir: Path | None, history: ModelHistory, regressions: Sequence[Regression],
                  plot_note: str | None, plots: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"{title} ({model})" if title != model else model, model)]
    blocks += accuracy_blocks(results, model)
    blocks += localization_blocks(results, model, plot_note, plots)
    table = throughput_table(results, model, chips, baselines_dir)
    if table is not None:
        perf, dropped = throughput_block(table)
        blocks.append(Heading(3, "Throughput (images/s per card)", anchor("throughput", model)))
        if len(perf.headers) > 1:  # a table with no figure at all is only its notes
            blocks.append(perf)
        notes = [*column_notes(table), *table.notes]
        if dropped:
            notes.append("columns without figures for this model, not shown: " + ", ".join(
                h.split("\n")[0] for h in dropped))
        if notes:
            blocks.append(Bullets(tuple(notes), "note"))
        if plot_note is None:
            png = plot_throughput(table, title)
            if png is not None:
                blocks.append(Image(add_plot(plots, model, png), f"{model} throughput by batch size", png))
        else:
            blocks.append(Para(plot_note, "note"))
    hist = history_block(history, regressions)
    if hist is not None:
        blocks += [Heading(3, "History"), hist]
    return blocks


def build_report(
    results: Results,
    baselines_dir: Path | None = None,
    chips: Mapping[str, ChipSpec] | None = None,
    policy: Policy | HistoryPolicy | None = None,
) -> tuple[list[Block], dict[str, bytes], list[Regression], list[str]]:
    """The report's blocks, its plots (file relative to the report -> PNG), regressions and notes, of
    the :func:`displayed` results; nothing is written."""
    results = _as_typed(displayed(results))
    chips = chips if chips is not None else load_chips()
    history_policy = policy if isinstance(policy, HistoryPolicy) else (policy or load_policy()).history
    titles = _titles()
    plot_note = plots_unavailable()
    histories = {m: model_history(results, m) for m in results.models()}
    regressions = [reg for h in histories.values() for reg in find_regressions(h, history_policy)]
    notes = [plot_note] if plot_note else []
    body: list[Block] = []
    plots: dict[str, bytes] = {}
    for model, history in histories.items():
        body += _model_blocks(results, model, titles.get(model, model), chips, baselines_dir, history,
                              [r for r in regressions if r.model == model], plot_note, plots)
    blocks = [*_header_blocks(results, regressions, history_policy, notes), *body, *_every_test_blocks(results),
              *runs_blocks(results)]
    return blocks, plots, regressions, notes


def write_report(
    results: Results,
    out_dir: Path | str,
    baselines_dir: Path | None = None,
    chips: Mapping[str, ChipSpec] | None = None,
    policy: Policy | HistoryPolicy | None = None,
) -> ReportPaths:
    """Write ``report.md``, ``report.html`` (self-contained) and ``plots/<model>.png`` into ``out_dir``.

    Every file is written atomically: a browser or CI upload never sees half a report; and inside
    ``out_dir``, whatever the names in the results (harness.safe_names).
    """
    out = Path(out_dir)
    blocks, plots, regressions, notes = build_report(results, baselines_dir, chips, policy)
    written: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        inside(out, out / PLOTS_DIR).mkdir(exist_ok=True)
    for rel, png in plots.items():
        path = inside(out / PLOTS_DIR, out / rel)
        atomic_write_bytes(path, png)
        written[rel] = path
    md, page = out / "report.md", out / "report.html"
    atomic_write_bytes(md, render_markdown(blocks).encode("utf-8"))
    atomic_write_bytes(page, render_html(blocks, TITLE).encode("utf-8"))
    return ReportPaths(out_dir=out, markdown=md, html=page, plots=written, regressions=tuple(regressions),
                       notes=tuple(notes))

