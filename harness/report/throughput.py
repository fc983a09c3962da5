"""The throughput table of one model, laid out like the seed guides, from typed perf records.

One row per batch size and a ``best`` row; one column per measured configuration (two backends
of one chip are two columns), per card, then the baseline chips the rules of fixtures/chips.toml
name (measured in these results, or read from fixtures/baselines/<chip>.csv: data, shown as
data), then one ratio column per rule. A ratio cell shows what the perf_ratio record recorded:
the ratio per batch size, and at the best batch the ratio with its recorded verdict; nothing
here divides two figures or compares one with a threshold. The notes under the table say where
the table's figures differ from what a gate compared (a newer baseline file, a baseline chip
measured tonight).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from harness.clocks import DEVICE_COMPUTE, WALL
from harness.judge.baselines import BaselineError, Figure, baseline_path, load_baselines
from harness.judge.ratios import best_batch
from harness.records.parts import BASELINE, MEASURED, Configuration
from harness.records.results import Results, sort_key
from harness.records.schema import PerfRatioRecord, PerfRecord
from harness.report.render import BAD, Cell, Table, Text, without_empty_columns
from harness.report.tables import (
    DASH,
    fmt_figure,
    fmt_ratio,
    one_line,
    reason_note,
)
from harness.report.verdicts import status_of
from harness.specs import SINGLE_STREAM, ChipSpec, load_chips

CLOCK_NAMES = {DEVICE_COMPUTE: "device compute", WALL: "wall"}
NAME_FIELDS = ("chip", "backend", "precision", "input_dtype", "scenario")


def clock_name(clock: str | None) -> str:
    return "clock not recorded" if not clock else CLOCK_NAMES.get(clock, clock)


@dataclass(frozen=True)
class ChipColumn:
    """One configuration's figures for one model, per card, and where they come from."""

    chip: str
    config: Configuration  # a baseline file's column: source BASELINE
    figures: Mapping[int, float]
    clock: str
    origin: str  # "measured" (a perf record of the results) or "baseline" (fixtures/baselines/<chip>.csv)
    source: str
    record: PerfRecord | None = None
    notes: tuple[Text, ...] = ()
    best: tuple[int, float] | None = None  # (batch, images/s per card) as recorded (gates.best_batch)

    @property
    def name(self) -> str:
        return self.config.label(NAME_FIELDS)


@dataclass(frozen=True)
class RatioColumn:
    """One rule of a measured configuration: the recorded gate's ratios, per batch and at the best."""

    column: ChipColumn
    baseline: str
    threshold: float
    gate: PerfRatioRecord | None
    baseline_columns: tuple[ChipColumn, ...]

    @property
    def chip(self) -> str:
        return self.column.chip

    @property
    def name(self) -> str:
        return f"{self.column.name}/{self.baseline}"

    @property
    def ran(self) -> bool:
        return self.gate is not None and self.gate.outcome != "skipped"

    @property
    def per_batch(self) -> Mapping[int, float]:
        return self.gate.per_batch() if self.ran and self.gate is not None else {}

    @property
    def best(self) -> float | None:
        return self.gate.result.ratio if self.ran and self.gate is not None else None


@dataclass(frozen=True)
class ThroughputTable:
    model: str
    columns: tuple[ChipColumn, ...]
    ratios: tuple[RatioColumn, ...]
    batch_sizes: tuple[int, ...]
    notes: tuple[Cell, ...] = ()  # what each gate recorded, and where the table differs from what it compared

    def column(self, chip: str) -> ChipColumn:
        return next(c for c in self.columns if c.chip == chip)

    def ratio(self, chip: str, baseline: str) -> RatioColumn:
        return next(r for r in self.ratios if r.chip == chip and r.baseline == baseline)


def _measured_column(record: PerfRecord) -> ChipColumn:
    config, run_id = record.config, record.meta.run_id
    origin = record.origin.figures_from or ""
    if config.source == MEASURED:
        source = f"measured on {record.meta.host or DASH}, run {run_id}"
    elif origin:
        source = f"{Path(origin).name} (--measurements), run {run_id}"
    else:
        source = f"run {run_id}"
    notes: list[Text] = []
    if record.best.unit == "per_chip" and (record.best.devices_per_card or 1) > 1:
        notes.append(f"per-chip figures x {record.best.devices_per_card} chips per card")
    notes += _vendor_and_card_notes(record)
    note = reason_note(f"run {run_id}", record)
    if note is not None:
        notes.append(note)
    return ChipColumn(
        chip=str(config.chip),
        config=config,
        figures=record.figures_per_card(),
        clock=record.best.clock or "",
        origin="measured",
        source=source,
        record=record,
        notes=tuple(notes),
        best=record.best_per_card(),
    )


def _vendor_and_card_notes(record: PerfRecord) -> list[Text]:
    """What --compare-vendor-tool and a whole-card measurement recorded beside the sweep."""
    notes: list[Text] = []
    v, b = record.vendor, record.best
    if v.vendor_tool and v.vendor_images_per_s is not None:
        notes.append(f"{v.vendor_tool} on the same artifact, bs{v.vendor_batch_size}, same scenario: "
                     f"{fmt_figure(v.vendor_images_per_s)} images/s ({clock_name(v.vendor_clock)}); the suite's "
                     f"{fmt_figure(v.suite_images_per_s)} is {fmt_ratio(v.suite_vs_vendor)} x the tool's")
    elif v.vendor_note:
        notes.append(f"vendor tool {v.vendor_note}")
    if b.per_card_measured is not None:
        x4 = (f"; one chip x devices_per_card {b.devices_per_card}: {fmt_figure(b.best_images_per_s_per_card)}"
              if b.unit == "per_chip" and b.best_images_per_s_per_card is not None else "")
        notes.append(f"devices {b.per_card_devices} measured together at bs{b.best_batch}: "
                     f"{fmt_figure(b.per_card_measured)} images/s per card over {b.per_card_window_s:g} s{x4}")
    return notes


def _baseline_column(chip: ChipSpec, model: str, baselines_dir: Path | None) -> ChipColumn:
    """The baseline file's single-stream figures (the seeds'), or its one scenario when it has no other."""
    path = baseline_path(chip.name, baselines_dir)
    config = Configuration(model=model, chip=chip.name, source=BASELINE)
    try:
        every: list[Figure] = [f for f in load_baselines(chip.name, baselines_dir) if f.model == model]
    except BaselineError as exc:
        return ChipColumn(chip.name, config, {}, "", "baseline", path.name, notes=(f"unreadable baseline file: {exc}",))
    if not every:
        return ChipColumn(chip.name, config, {}, "", "baseline", path.name,
                          notes=(f"no {chip.name} figures for {model} in {_shown(path)}",))
    scenarios = sorted({f.scenario for f in every})
    shown = SINGLE_STREAM if SINGLE_STREAM in scenarios else scenarios[0]
    figures = [f for f in every if f.scenario == shown]
    config = replace(config, scenario=shown)
    clocks = sorted({f.clock for f in figures})
    notes: list[Text] = [f"{', '.join(s for s in scenarios if s != shown)} rows of {path.name} not shown (the gates "
                         "compare each scenario with its own)"] if len(scenarios) > 1 else []
    if any(f.unit == "per_chip" for f in figures) and chip.devices_per_card > 1:
        notes.append(f"per-chip figures x {chip.devices_per_card} chips per card")
    top = best_batch(figures)
    return ChipColumn(
        chip=chip.name, config=config,
        figures=dict(sorted((f.batch_size, f.per_card(chip)) for f in figures)),
        clock=clocks[0] if len(clocks) == 1 else "mixed: " + ", ".join(clocks),
        origin="baseline", source=f"{path.name} ({', '.join(sorted({f.source for f in figures}))})", notes=tuple(notes),
        best=(top.batch_size, top.per_card(chip)) if top is not None else None,
    )


def _shown(path: Path) -> str:
    """A file the report names itself (a baseline file): relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _gate_for(config: Configuration, baseline: str,
              gates: Mapping[tuple[Configuration, str], PerfRatioRecord]) -> PerfRatioRecord | None:
    """The gate record of this column and rule: the same configuration, or one that knows less of it
    (a gate skipped before its figures were read)."""
    if (config, baseline) in gates:
        return gates[(config, baseline)]
    covering = [(c, g) for (c, b), g in gates.items() if b == baseline and c.covers(config)]
    return max(covering, key=lambda cg: sum(v is not None for v in vars(cg[0]).values()))[1] if covering else None


def throughput_table(results: Results, model: str, chips: Mapping[str, ChipSpec] | None = None,
                     baselines_dir: Path | None = None) -> ThroughputTable | None:
    """The seeds' table for ``model``; None when the results hold no perf figures or gates for it."""
    chips = chips if chips is not None else load_chips()
    perf = {c: r for c, r in results.latest("perf", model).items() if isinstance(r, PerfRecord)}
    gates = results.latest_ratios(model)
    if not perf and not gates:
        return None
    measured = {c: _measured_column(r) for c, r in perf.items()}
    for config, _ in gates:  # a gate whose figures have no perf record still names its configuration
        if not any(config == c or config.covers(c) for c in measured):
            measured[config] = ChipColumn(str(config.chip), config, {}, "", "measured", "no perf record in the results")
    ordered = sorted(measured.values(), key=lambda col: sort_key(col.config))
    columns: dict[int, ChipColumn] = {}
    ratios: list[RatioColumn] = []
    baselines: dict[str, tuple[ChipColumn, ...]] = {}
    used: set[int] = set()

    def add_ratio(col: ChipColumn, baseline: str, threshold: float, gate: PerfRatioRecord | None) -> None:
        if baseline not in baselines:
            own = tuple(m for m in ordered if m.chip == baseline)
            baselines[baseline] = own or (
                (_baseline_column(chips[baseline], model, baselines_dir),) if baseline in chips else ()
            )
            columns.update({id(b): b for b in baselines[baseline]})
        if gate is not None:
            used.add(id(gate))
        ratios.append(RatioColumn(col, baseline, threshold, gate, baselines[baseline]))

    for col in ordered:  # each configuration under a rule, then the chips its rules name, as the seeds lay them out
        if col.chip in chips and chips[col.chip].rules:
            columns.setdefault(id(col), col)
            for rule in chips[col.chip].rules:
                add_ratio(col, rule.baseline, rule.min_ratio, _gate_for(col.config, rule.baseline, gates))
    for (config, baseline), gate in gates.items():  # a recorded gate whose rule is not in chips.toml (any more)
        if id(gate) not in used:
            col = next(c for c in ordered if c.config == config or config.covers(c.config))
            columns.setdefault(id(col), col)
            add_ratio(col, baseline, gate.rule.threshold or 0.0, gate)
    for col in ordered:
        columns.setdefault(id(col), col)
    sizes = sorted({bs for c in columns.values() for bs in c.figures})
    return ThroughputTable(model=model, columns=tuple(columns.values()), ratios=tuple(ratios),
                           batch_sizes=tuple(sizes), notes=tuple(_gate_note(r) for r in ratios))


def _same(best: tuple[int, float] | None, batch: int | None, value: float | None) -> bool:
    return best is not None and value is not None and best[0] == batch and round(best[1], 4) == round(value, 4)


def _gate_note(r: RatioColumn) -> Cell:
    gate = r.gate
    if gate is None:
        return Cell(
            f"{r.name}: no gate record in the results (test_throughput_ratio did not run for this configuration)"
        )
    if gate.outcome == "skipped" or gate.result.ratio is None:
        why = f": {one_line(gate.meta.reason)}" if gate.meta.reason else ""
        return Cell(f"{r.name}: gate {gate.outcome}{why}", status_of(gate))
    res = gate.result
    head = (f"{r.name}: gate {str(gate.outcome).upper()} in run {gate.meta.run_id}: recorded ratio {res.ratio:.4f} "
            f"(bs{res.best_batch} vs {r.baseline} bs{res.baseline_best_batch}, "
            f"need >= {gate.rule.threshold if gate.rule.threshold is not None else r.threshold:g})")
    said: list[str] = []
    if r.column.best is not None and not _same(r.column.best, res.best_batch, res.best_images_per_s_per_card):
        said.append(f"DISAGREES with the table's {r.column.name} column: the gate compared "
                    f"{fmt_figure(res.best_images_per_s_per_card)} images/s per card at bs{res.best_batch}, the column "
                    f"shows {fmt_figure(r.column.best[1])} at bs{r.column.best[0]} (a newer perf record)")
    base = r.baseline_columns
    if base and all(b.origin == "measured" for b in base):
        said.append(f"the table's {r.baseline} column shows {r.baseline} as measured in these results, the gate "
                    f"compared with its baseline figure {fmt_figure(res.baseline_images_per_s_per_card)} "
                    f"({res.baseline_source})")
    elif base and not _same(base[0].best, res.baseline_best_batch, res.baseline_images_per_s_per_card):
        now = f"{fmt_figure(base[0].best[1])} at bs{base[0].best[0]}" if base[0].best else "no figures"
        said.append(
            f"DISAGREES with the table's {r.baseline} column: the gate compared with "
            f"{fmt_figure(res.baseline_images_per_s_per_card)} images/s per card at bs{res.baseline_best_batch} "
            f"({res.baseline_source}), the column shows {now}: the figures changed since that run "
            "(a newer baseline file, or --baselines-dir)"
        )
    if not gate.per_batch():
        said.append("no per-batch ratios recorded (results written before schema 1)")
    text = head + "; " + ("; ".join(said) if said else "agrees with the table")
    return Cell(text, BAD if any(s.startswith("DISAGREES") for s in said) else "")


def _best_ratio_cell(r: RatioColumn) -> Text:
    gate = r.gate
    if gate is None or gate.outcome == "skipped":
        return DASH
    if gate.result.ratio is None:
        return Cell(str(gate.outcome or DASH), status_of(gate))
    threshold = gate.rule.threshold if gate.rule.threshold is not None else r.threshold
    verdict = (gate.verdict or "no verdict").upper()
    return Cell(f"{fmt_ratio(gate.result.ratio)} ({verdict}, need >= {threshold:g})", status_of(gate))


def _column_header(c: ChipColumn) -> str:
    clock = f"{clock_name(c.clock)}, {c.config.scenario or SINGLE_STREAM}, per card" if c.figures else "no figures"
    return f"{c.name}\n{clock}\n{c.origin}: {c.source}"


def _best_cell(c: ChipColumn) -> Text:
    """A column's best batch, coloured by its perf test's recorded verdict (harness.report.verdicts:
    figures read with --measurements are neither a pass nor a skip); a baseline file's is data."""
    if c.best is None:
        return DASH
    text = f"{fmt_figure(c.best[1])} (bs{c.best[0]})"
    return Cell(text, status_of(c.record)) if c.record is not None else text


def throughput_block(table: ThroughputTable) -> tuple[Table, tuple[str, ...]]:
    """The seeds' table without the columns that have no figure in any row (a chip with no figures
    for this model, a gate that did not run: the notes say why), and the headers of those dropped."""
    headers = ("bs", *(_column_header(c) for c in table.columns),
               *(f"{r.name}\n(>= {r.threshold:g})" for r in table.ratios))
    rows: list[tuple[Text, ...]] = []
    for bs in table.batch_sizes:
        rows.append((f"bs{bs}", *(fmt_figure(c.figures.get(bs)) for c in table.columns),
                     *(fmt_ratio(r.per_batch.get(bs)) for r in table.ratios)))
    rows.append(("best", *(_best_cell(c) for c in table.columns), *(_best_ratio_cell(r) for r in table.ratios)))
    return without_empty_columns(
        Table(headers=headers, rows=tuple(rows), align=("l",) + ("r",) * (len(headers) - 1), css="perf"), DASH)


def column_notes(table: ThroughputTable) -> list[Text]:
    return [Cell(f"{c.name}: {n.text}", n.status) if isinstance(n, Cell) else f"{c.name}: {n}"
            for c in table.columns for n in c.notes]
