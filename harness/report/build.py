"""Results -> the report a person reads in ten seconds: Markdown, one self-contained HTML file, plots.

``write_report(load_results(paths), out_dir)`` writes ``report.md``, ``report.html`` and
``plots/<model>.png``. Per model: the accuracy table (measured vs published vs the torch reference),
the throughput table laid out like the seed guides (one row per batch size, one column per chip,
per card, then one ratio column per rule of ``fixtures/chips.toml`` and a ``best`` row: exactly
what the perf gate computes), a throughput-vs-batch plot, and the model's history across runs
with regressions flagged against ``fixtures/policy.toml`` [history]. The environment of every run
closes the report; the regressions open it.

Both files are rendered from one list of blocks (headings, paragraphs, tables, images), so the
Markdown and the HTML cannot disagree. matplotlib is optional (``pip install -e '.[report]'``):
without it the tables are written and the plots are replaced by a note saying so.
"""

from __future__ import annotations

import base64
import html
import io
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from harness.cache import atomic_write_bytes
from harness.judge.baselines import (
    BaselineError,
    Figure,
    baseline_path,
    load_baselines,
)
from harness.judge.gates import best_batch
from harness.records.results import (
    ModelHistory,
    Record,
    Regression,
    Results,
    Run,
    best_per_card,
    figures_per_card,
    find_regressions,
    finite,
    model_history,
)
from harness.specs import (
    ChipSpec,
    HistoryPolicy,
    PerfRule,
    Policy,
    SpecError,
    load_chips,
    load_models,
    load_policy,
)

DASH = "\u2014"  # a cell without data: the source gives no figure
CLOCK_NAMES = {"device_compute": "device compute", "wall": "wall"}
INSTALL_PLOTS = "pip install -e '.[report]'"
MAX_WARNINGS_SHOWN = 20
MAX_REASON = 240


# --------------------------------------------------------------------------------------------
# The document: blocks both renderers understand


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass(frozen=True)
class Para:
    text: str
    css: str = ""


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    css: str = ""


@dataclass(frozen=True)
class Table:
    """Cells are plain text; a newline in a cell is a line break. ``align`` per column: l or r."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...] = ()
    css: str = ""


@dataclass(frozen=True)
class Image:
    rel_path: str
    alt: str
    png: bytes


Block = Union[Heading, Para, Bullets, Table, Image]


# --------------------------------------------------------------------------------------------
# Formatting


def fmt_figure(value: float | None) -> str:
    """Images/s as the seeds print them: up to 4 decimals, no trailing zeros."""
    if value is None or not finite(value):
        return DASH
    return f"{value:.4f}".rstrip("0").rstrip(".")


def fmt_ratio(value: float | None) -> str:
    """Ratios to 4 decimals, rounded (seed 000 truncated: 2.7649 where this prints 2.7650)."""
    return DASH if value is None or not finite(value) else f"{value:.4f}"


def _pct(value: Any, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if finite(value) else DASH


def _delta(a: Any, b: Any) -> str:
    return f"{float(a) - float(b):+.2f}" if finite(a) and finite(b) else DASH


def _pair(a: str, b: str) -> str:
    return DASH if a == DASH and b == DASH else f"{a} / {b}"


def _short(text: Any, limit: int = MAX_REASON) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def verdict(record: Mapping[str, Any]) -> str:
    """passed / failed: why / skipped: why."""
    outcome = str(record.get("outcome", "?"))
    reason = record.get("reason")
    return f"{outcome}: {_short(reason)}" if reason and outcome != "passed" else outcome


def _clock(clock: Any) -> str:
    return "clock not recorded" if not clock else CLOCK_NAMES.get(str(clock), str(clock))


# --------------------------------------------------------------------------------------------
# The throughput table (the seeds' layout)


@dataclass(frozen=True)
class ChipColumn:
    """One chip's figures for one model, per card, and where they come from."""

    chip: str
    figures: Mapping[int, float]
    clock: str
    origin: str  # "measured" (a perf record of the results) or "baseline" (fixtures/baselines/<chip>.csv)
    source: str
    record: Record | None = None
    notes: tuple[str, ...] = ()
    # (batch, images/s per card) at the best batch, as the perf gate chose it (gates.best_batch)
    best: tuple[int, float] | None = None


@dataclass(frozen=True)
class RatioColumn:
    """``chip/baseline`` per batch size and at each side's best batch (the gate's ratio)."""

    chip: str
    baseline: str
    rule: PerfRule
    per_batch: Mapping[int, float | None]
    best: float | None
    comparable: bool  # False when the two columns use different clocks
    gate: Record | None = None
    baseline_measured: bool = False  # the baseline chip's figures come from the results, not its CSV

    @property
    def name(self) -> str:
        return f"{self.chip}/{self.baseline}"


@dataclass(frozen=True)
class ThroughputTable:
    model: str
    columns: tuple[ChipColumn, ...]
    ratios: tuple[RatioColumn, ...]
    batch_sizes: tuple[int, ...]
    notes: tuple[str, ...] = ()

    def column(self, chip: str) -> ChipColumn:
        return next(c for c in self.columns if c.chip == chip)

    def ratio(self, chip: str, baseline: str) -> RatioColumn:
        return next(r for r in self.ratios if r.chip == chip and r.baseline == baseline)


def _measured_column(record: Record) -> ChipColumn:
    origin = str(record.get("figures_from") or "")
    if origin == "measured here":
        source = f"measured on {record.get('host', '?')}, run {record.get('run_id')}"
    elif origin:
        source = f"{Path(origin).name} (--measurements), run {record.get('run_id')}"
    else:
        source = f"run {record.get('run_id')}"
    notes = []
    if record.get("unit") == "per_chip" and int(record.get("devices_per_card") or 1) > 1:
        notes.append(f"per-chip figures x {record.get('devices_per_card')} chips per card")
    if record.get("outcome") != "passed":
        notes.append(verdict(record))
    return ChipColumn(chip=str(record.get("chip")), figures=figures_per_card(record), clock=str(record.get("clock") or ""),
                      origin="measured", source=source, record=record, notes=tuple(notes), best=best_per_card(record))


def _baseline_column(chip: ChipSpec, model: str, baselines_dir: Path | None) -> ChipColumn:
    path = baseline_path(chip.name, baselines_dir)
    try:
        figures: list[Figure] = [f for f in load_baselines(chip.name, baselines_dir) if f.model == model]
    except BaselineError as exc:
        return ChipColumn(chip.name, {}, "", "baseline", path.name, notes=(f"unreadable baseline file: {exc}",))
    if not figures:
        return ChipColumn(chip.name, {}, "", "baseline", path.name,
                          notes=(f"no {chip.name} figures for {model} in {path}",))
    clocks = sorted({f.clock for f in figures})
    sources = sorted({f.source for f in figures})
    notes = []
    if any(f.unit == "per_chip" for f in figures) and chip.devices_per_card > 1:
        notes.append(f"per-chip figures x {chip.devices_per_card} chips per card")
    top = best_batch(figures)
    return ChipColumn(
        chip=chip.name,
        figures=dict(sorted((f.batch_size, f.per_card(chip)) for f in figures)),
        clock=clocks[0] if len(clocks) == 1 else "mixed: " + ", ".join(clocks),
        origin="baseline", source=f"{path.name} ({', '.join(sources)})", notes=tuple(notes),
        best=(top.batch_size, top.per_card(chip)) if top is not None else None,
    )


def _ratio_column(chip: ChipColumn, base: ChipColumn, rule: PerfRule, gate: Record | None) -> RatioColumn:
    # Unknown where a side has no figures (its cells are dashes anyway); never across two clocks.
    comparable = not (chip.clock and base.clock and chip.clock != base.clock)
    per_batch: dict[int, float | None] = {}
    for bs in sorted(set(chip.figures) | set(base.figures)):
        a, b = chip.figures.get(bs), base.figures.get(bs)
        per_batch[bs] = a / b if comparable and a is not None and b else None
    top, bottom = chip.best, base.best
    best = top[1] / bottom[1] if comparable and top and bottom and bottom[1] else None
    return RatioColumn(chip=chip.chip, baseline=base.chip, rule=rule, per_batch=per_batch, best=best,
                       comparable=comparable, gate=gate, baseline_measured=base.origin == "measured")


def throughput_table(results: Results, model: str, chips: Mapping[str, ChipSpec] | None = None,
                     baselines_dir: Path | None = None) -> ThroughputTable | None:
    """The seeds' table for ``model``: measured chips, then the baseline chips their rules name.

    A baseline chip that was itself measured in the results shows its measured figures (tonight's
    310 beats last year's CSV). None when the results hold no perf figures or gates for ``model``.
    """
    chips = chips if chips is not None else load_chips()
    perf, gates = results.latest_perf(model), results.latest_perf_ratio(model)
    if not perf and not gates:
        return None
    measured = {chip: _measured_column(r) for (_, chip), r in perf.items()}
    for _, chip, _ in gates:  # a gate skipped before its perf figures were read still names the chip
        measured.setdefault(chip, ChipColumn(chip, {}, "", "measured", "no perf record in the results"))
    columns: dict[str, ChipColumn] = {}
    ratios: list[RatioColumn] = []
    # Each chip under a rule, then the chips its rules name (the seeds' layout, the same every night
    # whether a baseline chip was measured or read from its CSV), then any other measured chip.
    ruled = [c for c in sorted(measured) if c in chips and chips[c].rules]
    for chip_name in ruled:
        columns.setdefault(chip_name, measured[chip_name])
        for rule in chips[chip_name].rules:
            if rule.baseline not in columns:
                columns[rule.baseline] = measured.get(rule.baseline) or _baseline_column(
                    chips[rule.baseline], model, baselines_dir)
            gate = gates.get((model, chip_name, rule.baseline))
            ratios.append(_ratio_column(columns[chip_name], columns[rule.baseline], rule, gate))
    for chip_name in sorted(measured):
        columns.setdefault(chip_name, measured[chip_name])
    sizes = sorted({bs for c in columns.values() for bs in c.figures})
    return ThroughputTable(model=model, columns=tuple(columns.values()), ratios=tuple(ratios),
                           batch_sizes=tuple(sizes), notes=tuple(_gate_note(r) for r in ratios))


def _gate_note(r: RatioColumn) -> str:
    gate = r.gate
    if gate is None:
        return (f"{r.name}: no gate record in the results; the table's ratio of bests is what "
                f"test_throughput_ratio would compare with {r.rule.min_ratio:g}")
    if gate.get("outcome") == "skipped" or not finite(gate.get("ratio")):
        return f"{r.name}: gate {verdict(gate)}"
    recorded = float(gate["ratio"])
    head = (f"{r.name}: gate {str(gate.get('outcome')).upper()} in run {gate.get('run_id')}: recorded ratio "
            f"{recorded:.4f} (bs{gate.get('best_batch')} vs {r.baseline} bs{gate.get('baseline_best_batch')}, "
            f"need >= {gate.get('threshold')})")
    if r.best is None:
        return head + "; the table cannot recompute it (figures missing or clocks differ)"
    if abs(recorded - r.best) <= 1e-5 * max(1.0, abs(r.best)):
        return head + "; agrees with the table"
    if r.baseline_measured:
        return (head + f"; the table's {r.best:.4f} compares with {r.baseline} as measured in these results, "
                f"the gate compared with its baseline figure {gate.get('baseline_images_per_s_per_card')} "
                f"({gate.get('baseline_source')})")
    return (head + f"; DISAGREES with the table's {r.best:.4f}: the figures changed since that run "
            "(a newer baseline file, --baselines-dir, or a baseline chip measured in these results)")


def _best_ratio_cell(r: RatioColumn) -> str:
    if not r.comparable:
        return "n/a: clocks differ"
    if r.best is None:
        return DASH
    gate = r.gate
    if gate is not None and gate.get("verdict") in ("pass", "fail"):
        mark = str(gate["verdict"]).upper()
    else:
        mark = "pass" if r.best >= r.rule.min_ratio else "fail"
        mark += ", no gate record" if gate is None else f", gate {gate.get('outcome')}"
    return f"{fmt_ratio(r.best)} ({mark}, need >= {r.rule.min_ratio:g})"


def _column_header(c: ChipColumn) -> str:
    clock = f"{_clock(c.clock)}, per card" if c.figures else "no figures"
    return f"{c.chip}\n{clock}\n{c.origin}: {c.source}"


def throughput_block(table: ThroughputTable) -> Table:
    headers = ("bs", *(_column_header(c) for c in table.columns),
               *(f"{r.name}\n(>= {r.rule.min_ratio:g})" for r in table.ratios))
    rows = []
    for bs in table.batch_sizes:
        rows.append((f"bs{bs}", *(fmt_figure(c.figures.get(bs)) for c in table.columns),
                     *("n/a: clocks differ" if not r.comparable else fmt_ratio(r.per_batch.get(bs)) for r in table.ratios)))
    bests = [c.best for c in table.columns]
    rows.append(("best", *(f"{fmt_figure(b[1])} (bs{b[0]})" if b else DASH for b in bests),
                 *(_best_ratio_cell(r) for r in table.ratios)))
    return Table(headers=headers, rows=tuple(rows), align=("l",) + ("r",) * (len(headers) - 1), css="perf")


def _column_notes(table: ThroughputTable) -> list[str]:
    return [f"{c.chip}: {note}" for c in table.columns for note in c.notes]


# --------------------------------------------------------------------------------------------
# Accuracy


ACCURACY_HEADERS = (
    "chip", "backend", "precision", "bs", "images", "published top-1 / top-5", "measured top-1 / top-5",
    "torch top-1 / top-5", "vs published (top-1 / top-5)", "vs torch (top-1 / top-5)", "top-1 agreement %",
    "weights", "verdict",
)


def _accuracy_row(r: Record) -> tuple[str, ...]:
    published = _pair(fmt_figure(r.get("published_top1")), fmt_figure(r.get("published_top5")))
    return (
        str(r.get("chip", DASH)), str(r.get("backend") or DASH), str(r.get("precision") or DASH),
        str(r.get("batch_size") or DASH), str(r.get("images") if r.get("images") is not None else DASH),
        published,
        _pair(_pct(r.get("top1")), _pct(r.get("top5"))),
        _pair(_pct(r.get("reference_top1")), _pct(r.get("reference_top5"))),
        _pair(_delta(r.get("top1"), r.get("published_top1")), _delta(r.get("top5"), r.get("published_top5"))),
        _pair(_delta(r.get("top1"), r.get("reference_top1")), _delta(r.get("top5"), r.get("reference_top5"))),
        _pct(r.get("top1_agreement")),
        str(r.get("weights_source") or r.get("figures_from") or DASH),
        verdict(r),
    )


def accuracy_blocks(results: Results, model: str) -> list[Block]:
    latest = results.latest_accuracy(model)
    if not latest:
        return []
    sources = sorted({str(r.get("published_source")) for r in latest.values() if r.get("published_source")})
    blocks: list[Block] = [Heading(3, "Accuracy")]
    if sources:
        blocks.append(Para("Published figures: " + "; ".join(sources)))
    blocks.append(Table(ACCURACY_HEADERS, tuple(_accuracy_row(r) for r in latest.values()),
                        align=("l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l", "l"), css="accuracy"))
    return blocks


# --------------------------------------------------------------------------------------------
# History


def _run_label(run: Run) -> str:
    return f"{run.started or '?'}\n{run.run_id}"


def history_block(history: ModelHistory, regressions: Sequence[Regression]) -> Table | None:
    if not history.points:
        return None
    flagged = {(reg.run_id, reg.what) for reg in regressions}
    headers = ("run", "host",
               *(f"top-1 / top-5\n{' '.join(s)}" for s in history.accuracy_series),
               *(f"best images/s per card\n{chip}" for chip in history.throughput_chips))
    rows = []
    for p in history.points:
        cells = [_run_label(p.run), str(p.run.host or DASH)]
        for s in history.accuracy_series:
            value = p.accuracy.get(s)
            cell = DASH if value is None else _pair(_pct(value[0]), _pct(value[1]))
            if (p.run.run_id, "top-1 " + " ".join(s)) in flagged:
                cell += "\nREGRESSION"
            cells.append(cell)
        for chip in history.throughput_chips:
            best = p.throughput.get(chip)
            cell = DASH if best is None else f"{fmt_figure(best[1])} (bs{best[0]})"
            if (p.run.run_id, f"images/s {chip}") in flagged:
                cell += "\nREGRESSION"
            cells.append(cell)
        rows.append(tuple(cells))
    return Table(headers, tuple(rows), align=("l", "l") + ("r",) * (len(headers) - 2), css="history")


# --------------------------------------------------------------------------------------------
# Runs and environment


def _packages(env: Mapping[str, Any]) -> str:
    packages = env.get("packages") or {}
    return ", ".join(f"{k} {v}" for k, v in packages.items()) if isinstance(packages, dict) else str(packages)


def _run_row(run: Run) -> tuple[str, ...]:
    env, info = run.environment, run.info
    if not info:
        return (run.run_id, run.started or DASH, str(run.host or DASH),
                "no run record: the session was killed before it finished (or predates run records)",
                *(DASH,) * 6)
    cores = f"{env.get('cores', '?')} ({env.get('usable_cores', '?')} usable)"
    ascend = env.get("ascend") or {}
    outcomes = ", ".join(f"{v} {k}" for k, v in (info.get("outcomes") or {}).items())
    args = info.get("args") or []
    return (
        run.run_id, f"{run.started or '?'}\n{info.get('finished', '?')}", str(run.host or DASH),
        f"{env.get('cpu', '?')}, {cores} cores, {env.get('machine', '?')}",
        str(env.get("os", DASH)), str(env.get("python", DASH)), _packages(env) or DASH,
        _ascend_cell(ascend) if isinstance(ascend, dict) and ascend else DASH,
        f"{outcomes} (exit {info.get('exit_status', '?')})",
        "pytest " + " ".join(shlex.quote(str(a)) for a in args),
    )


def _ascend_cell(ascend: Mapping[str, Any]) -> str:
    """CANN / driver versions, and the chips npu-smi listed (or why it could not be read)."""
    cells = [f"{k} {v}" for k, v in ascend.items() if k != "npu_smi"]
    npu = ascend.get("npu_smi")
    if isinstance(npu, dict):
        devices = npu.get("devices") or []
        if npu.get("chips"):
            cells.append(f"npu-smi: {', '.join(map(str, npu['chips']))} ({len(devices)} device(s))")
        else:
            cells.append(f"npu-smi: unreadable ({_short(npu.get('error'), 120)})")
    return ", ".join(cells) or DASH


RUN_HEADERS = ("run", "started / finished", "host", "CPU", "OS", "Python", "packages", "Ascend", "outcomes", "args")


def runs_blocks(results: Results) -> list[Block]:
    return [Heading(2, "Runs and environment", "runs"),
            Table(RUN_HEADERS, tuple(_run_row(r) for r in results.runs), css="runs")]


# --------------------------------------------------------------------------------------------
# Plots


def plots_unavailable() -> str | None:
    """Why plots cannot be drawn here (None when matplotlib imports)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"plots omitted: matplotlib is not installed ({INSTALL_PLOTS})"
    return None


def plot_throughput(table: ThroughputTable, title: str) -> bytes | None:
    """images/s per card against batch size (log2), one line per chip; None if there is nothing to draw.

    Uses matplotlib's object API with the Agg canvas (not pyplot): no global state, no display, safe
    inside a pytest session that may have imported pyplot with another backend.
    """
    drawn = [c for c in table.columns if c.figures]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import FixedLocator, NullLocator

    fig = MplFigure(figsize=(7.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for column in drawn:
        xs = sorted(column.figures)
        ax.plot(xs, [column.figures[x] for x in xs], marker="o",
                label=f"{column.chip} ({column.origin}, {_clock(column.clock)})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(table.batch_sizes)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in table.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s per card")
    ax.set_title(f"{title}: throughput per card by batch size")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items) + "\n")
        elif isinstance(b, Table):
            align = b.align or ("l",) * len(b.headers)
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows)
            out.append("")
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.rel_path})\n")
    return "\n".join(out)


CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif; margin: 24px; color: #1b1f24; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 16px; margin-top: 20px; }
.scroll { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f3f5f7; text-align: left; font-weight: 600; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
table.perf tr:last-child td { font-weight: 600; border-top: 2px solid #57606a; }
td.bad, li.bad { background: #ffebe9 !important; color: #a40e26; font-weight: 600; }
td.ok { color: #116329; } td.skip { color: #6e7781; }
.regressions { border: 2px solid #cf222e; padding: 4px 12px; } .clean { color: #116329; }
.note { color: #57606a; font-size: 12px; } img { max-width: 100%; border: 1px solid #d0d7de; }
"""


def _cell_class(text: str, numeric: bool) -> str:
    classes = ["r"] if numeric else []
    if "REGRESSION" in text or text.startswith("failed") or "FAIL" in text or text.startswith("fail") or "DISAGREES" in text:
        classes.append("bad")
    elif text.startswith("passed") or "PASS" in text:
        classes.append("ok")
    elif text.startswith("skipped"):
        classes.append("skip")
    return f' class="{" ".join(classes)}"' if classes else ""


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _html_table(b: Table) -> str:
    align = b.align or ("l",) * len(b.headers)
    head = "".join(f"<th>{_html_text(h)}</th>" for h in b.headers)
    body = "".join(
        "<tr>" + "".join(f"<td{_cell_class(c, a == 'r')}>{_html_text(c)}</td>" for c, a in zip(row, align)) + "</tr>"
        for row in b.rows
    )
    return f'<div class="scroll"><table class="{b.css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(blocks: Sequence[Block], title: str) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            parts.append(f"<h{b.level}{anchor}>{_html_text(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f'<p class="{b.css}">{_html_text(b.text)}</p>' if b.css else f"<p>{_html_text(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f'<li{_cell_class(i, False)}>{_html_text(i)}</li>' for i in b.items)
            parts.append(f'<ul class="{b.css}">{items}</ul>')
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<p><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Summaries


def key_figure(r: Mapping[str, Any]) -> str:
    """The one number that says how a test went, for the compact tables."""
    kind = r.get("kind")
    if r.get("outcome") == "skipped":
        return f"vs {r.get('baseline_chip')}: not run" if kind == "perf_ratio" else "-"
    if kind == "accuracy" and finite(r.get("top1")):
        return f"top-1 {_pct(r.get('top1'))} top-5 {_pct(r.get('top5'))} (bs{r.get('batch_size')})"
    if kind == "agreement" and finite(r.get("top1_agreement")):
        return f"agreement {_pct(r.get('top1_agreement'))}% (bs{r.get('batch_size')})"
    if kind == "conversion" and finite(r.get("max_abs_diff")):
        return f"opset {r.get('opset')} max|diff| {float(r['max_abs_diff']):.3g}"
    if kind == "perf":
        best = best_per_card(r)
        return f"best {fmt_figure(best[1])} images/s per card (bs{best[0]})" if best else "-"
    if kind == "perf_ratio" and finite(r.get("ratio")):
        return f"vs {r.get('baseline_chip')} {float(r['ratio']):.4f} (need >= {r.get('threshold')})"
    return "-"


def _summary_rows(results: Results) -> list[tuple[str, str, str, str, str]]:
    rows = [(str(r.get("model", "-")), str(r.get("chip", "-")), str(r.get("kind")), key_figure(r),
             str(r.get("outcome", "?"))) for r in results.latest()]
    return sorted(rows, key=lambda row: (row[0], row[1], row[2], row[3]))


def terminal_table(results: Results) -> str:
    """A compact plain-text table of the newest result of every test: model, chip, kind, figure, verdict."""
    rows = [("model", "chip", "kind", "key figure", "verdict"), *_summary_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Assembling


@dataclass(frozen=True)
class ReportPaths:
    """What write_report wrote, and the regressions it flagged (for exit statuses and summaries)."""

    out_dir: Path
    markdown: Path
    html: Path
    plots: Mapping[str, Path]
    regressions: tuple[Regression, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def _titles() -> dict[str, str]:
    try:
        return {name: spec.title for name, spec in load_models().items()}
    except SpecError:
        return {}


def _header_blocks(results: Results, regressions: Sequence[Regression], history: HistoryPolicy,
                   notes: Sequence[str]) -> list[Block]:
    started = [r.started for r in results.runs if r.started]
    blocks: list[Block] = [
        Heading(1, "Model-zoo certification report"),
        Para(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %z')} from {len(results.files)} results file(s), "
             f"{len(results.runs)} run(s)" + (f" between {started[0]} and {started[-1]}" if started else "") + ".",
             "note"),
        Heading(2, "Regressions", "regressions"),
    ]
    if regressions:
        blocks.append(Bullets(tuple(r.describe() for r in regressions), "regressions"))
    else:
        blocks.append(Para("No regressions: no figure dropped beyond the thresholds against the previous run "
                           "that measured it.", "clean"))
    blocks.append(Para(f"Thresholds (fixtures/policy.toml [history]): top-1 drop > "
                       f"{history.regression_top1_points:g} points, best images/s drop > "
                       f"{history.regression_throughput_percent:g}%.", "note"))
    shown = list(results.warnings[:MAX_WARNINGS_SHOWN])
    if len(results.warnings) > MAX_WARNINGS_SHOWN:
        shown.append(f"... and {len(results.warnings) - MAX_WARNINGS_SHOWN} more")
    if shown or notes:
        blocks += [Heading(2, "Input problems and notes", "warnings"),
                   Para(f"{results.malformed_lines} malformed line(s), {results.blank_lines} blank line(s), "
                        f"{results.duplicate_records} duplicate record(s) ignored.", "note"),
                   Bullets(tuple([*notes, *shown]))]
    rows = _summary_rows(results)
    if rows:
        blocks += [Heading(2, "Summary (newest result of every test)", "summary"),
                   Table(("model", "chip", "kind", "key figure", "verdict"), tuple(rows), css="summary")]
    return blocks


def _model_blocks(results: Results, model: str, title: str, chips: Mapping[str, ChipSpec],
                  baselines_dir: Path | None, history: ModelHistory, regressions: Sequence[Regression],
                  plot_note: str | None, plots: dict[str, bytes]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"{title} ({model})" if title != model else model, model)]
    blocks += accuracy_blocks(results, model)
    table = throughput_table(results, model, chips, baselines_dir)
    if table is not None:
        blocks += [Heading(3, "Throughput (images/s per card)"), throughput_block(table)]
        notes = [*_column_notes(table), *table.notes]
        if notes:
            blocks.append(Bullets(tuple(notes), "note"))
        if plot_note is None:
            png = plot_throughput(table, title)
            if png is not None:
                plots[model] = png
                blocks.append(Image(f"plots/{model}.png", f"{model} throughput by batch size", png))
        else:
            blocks.append(Para(plot_note, "note"))
    hist = history_block(history, regressions)
    if hist is not None:
        blocks += [Heading(3, "History"), hist]
    return blocks


def build_report(results: Results, baselines_dir: Path | None = None, chips: Mapping[str, ChipSpec] | None = None,
                 policy: Policy | HistoryPolicy | None = None) -> tuple[list[Block], dict[str, bytes], list[Regression], list[str]]:
    """The report's blocks, its plots (model -> PNG), regressions and notes; nothing is written."""
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
    blocks = [*_header_blocks(results, regressions, history_policy, notes), *body, *runs_blocks(results)]
    return blocks, plots, regressions, notes


def write_report(results: Results, out_dir: Path | str, baselines_dir: Path | None = None,
                 chips: Mapping[str, ChipSpec] | None = None, policy: Policy | HistoryPolicy | None = None) -> ReportPaths:
    """Write ``report.md``, ``report.html`` (self-contained) and ``plots/<model>.png`` into ``out_dir``.

    Every file is written atomically: a browser or CI upload never sees half a report.
    """
    out = Path(out_dir)
    blocks, plots, regressions, notes = build_report(results, baselines_dir, chips, policy)
    written: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        (out / "plots").mkdir(exist_ok=True)
    for model, png in plots.items():
        path = out / "plots" / f"{model}.png"
        atomic_write_bytes(path, png)
        written[model] = path
    md, page = out / "report.md", out / "report.html"
    atomic_write_bytes(md, render_markdown(blocks).encode("utf-8"))
    atomic_write_bytes(page, render_html(blocks, "Model-zoo certification report").encode("utf-8"))
    return ReportPaths(out_dir=out, markdown=md, html=page, plots=written, regressions=tuple(regressions),
                       notes=tuple(notes))
