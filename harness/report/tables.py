"""The report's tables as data, from typed records: accuracy, summary, history, runs.

Every row is one configuration (harness.records.parts.Configuration): two backends of one chip
are two rows, figures made elsewhere (--predictions, --measurements) are rows of their own. A
cell's status comes from the record's recorded verdict and pytest's outcome (:func:`status_of`);
nothing here decides a verdict. Long texts (why a test was skipped, which weights ran, where
predictions were read from) go to the notes under a table, so every row is one line high.
The throughput table (the seeds' layout) is in :mod:`harness.report.throughput`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.judge.gates import NOT_APPLICABLE
from harness.records.history import THROUGHPUT, TOP1, ModelHistory, Regression
from harness.records.parts import FAIL, PASS, SOURCE_LABELS, Configuration
from harness.records.results import Results, Run, finite
from harness.records.schema import (
    AccuracyRecord,
    ConversionRecord,
    PerfRatioRecord,
    PerfRecord,
    ResultRecord,
)
from harness.report.render import (
    BAD,
    INCONCLUSIVE,
    Block,
    Bullets,
    Cell,
    Heading,
    Para,
    Table,
    Text,
    without_empty_columns,
)
from harness.report.verdicts import (
    STATUS_WORDS,
    anchor,
    outcome_status,
    outcome_text,
    record_anchor,
    status_of,
    verdict_cell,
)

DASH = "\u2014"  # a cell without data: the source gives no figure
CONFIG_FIELDS = ("backend", "precision", "input_dtype", "source", "scenario")


def fmt_figure(value: float | None) -> str:
    """Images/s as the seeds print them: up to 4 decimals, no trailing zeros."""
    if value is None or not finite(value):
        return DASH
    return f"{value:.4f}".rstrip("0").rstrip(".")


def fmt_ratio(value: float | None) -> str:
    """Ratios to 4 decimals, rounded (seed 000 truncated: 2.7649 where this prints 2.7650)."""
    return DASH if value is None or not finite(value) else f"{value:.4f}"


def pct(value: Any) -> str:
    return f"{float(value):.2f}" if finite(value) else DASH


def _delta(a: Any, b: Any) -> str:
    return f"{float(a) - float(b):+.2f}" if finite(a) and finite(b) else DASH


def _pair(a: str, b: str) -> str:
    return DASH if a == DASH and b == DASH else f"{a} / {b}"


def one_line(text: Any) -> str:
    """``text`` on one line, whole: a note is never cut (the HTML shows a long one's rest behind "more").
    A first line cut with "..." that the next lines repeat whole (a failure's headline for CI
    dashboards, then its whole message) is left out; a newline shown escaped (``\\n``) counts."""
    lines = str(text or "").replace("\\n", "\n").split("\n")
    head = lines[0].rstrip()
    if len(lines) > 1 and head.endswith("...") and " ".join(lines[1:]).lstrip().startswith(head[:-3].rstrip()):
        lines = lines[1:]
    return " ".join(" ".join(lines).split())


def reason_note(label: str, record: ResultRecord) -> Cell | None:
    """Why a test did not pass, under its table (the row says only ``skipped`` / ``failed``)."""
    if record.outcome in ("skipped", "failed") and record.meta.reason:
        return Cell(f"{label}: {record.outcome}: {one_line(record.meta.reason)}", status_of(record))
    return None


def labels(configs: Iterable[Configuration]) -> dict[Configuration, str]:
    """Each configuration named by its chip and the fields that tell it apart from the others of
    the same model and chip (``cpu onnxruntime`` / ``cpu openvino`` / ``cpu (--predictions)``)."""
    configs = list(dict.fromkeys(configs))
    out = {}
    for c in configs:
        kin = [o for o in configs if (o.model, o.chip) == (c.model, c.chip)]
        varying = [f for f in CONFIG_FIELDS if len({getattr(o, f) for o in kin if getattr(o, f) is not None}) > 1]
        out[c] = c.label(("chip", *varying)) if c.chip else "-"
    return out


# --------------------------------------------------------------------------------------------
# Accuracy


# The verdict beside the configuration; the secondary columns last, folded into "more" in HTML (1400 px).
ACCURACY_HEADERS = (
    "chip", "backend", "precision", "bs", "figures", "verdict", "coverage",
    "measured top-1 / top-5", "vs published (top-1 / top-5)", "top-1 drop vs torch\n(points, 95% interval)",
    "top-1 agreement %",
    "input", "images", "published top-1 / top-5", "torch top-1 / top-5 (reference gate)", "published gate", "weights",
)
ACCURACY_ALIGN = ("l", "l", "l", "r", "l", "l", "l", "r", "r", "r", "r", "l", "r", "r", "r", "l", "l")
ACCURACY_FOLD = ACCURACY_HEADERS.index("input")


def coverage_cell(r: AccuracyRecord) -> str:
    """``full``, ``subset 1300``, ``other 64``, ``unknown`` (a result.json): the images the
    verdict is about (harness.data.coverage); how it was recognised is a note under the table."""
    kind, images = r.verdicts.dataset_coverage, r.scores.images
    if kind is None:
        return DASH
    return kind if kind in ("full", "unknown") or images is None else f"{kind} {images}"


def published_gate_cell(r: AccuracyRecord) -> Cell | str:
    """The published gate's recorded outcome: pass, fail, or not applicable (why: under the table)."""
    outcome = r.verdicts.published_gate
    return DASH if outcome is None else Cell(outcome.split(":")[0], outcome_status(outcome))


def drop_cell(r: AccuracyRecord) -> Cell | str:
    """The paired top-1 drop (reference - compiled, points) and its 95% interval, coloured by the
    paired gate's recorded outcome; a record without one (schema 0) shows the plain difference."""
    v, s, ref = r.verdicts, r.scores, r.reference
    if finite(v.paired_drop_top1):
        text = f"{float(v.paired_drop_top1):.2f}"
        if finite(v.paired_drop_top1_low95) and finite(v.paired_drop_top1_high95):
            text += f" [{float(v.paired_drop_top1_low95):.2f}, {float(v.paired_drop_top1_high95):.2f}]"
        return Cell(text, outcome_status(r.judgement.gates.get("paired_top1")))
    return _delta(ref.reference_top1, s.top1)


def reference_cell(r: AccuracyRecord) -> Cell | str:
    """The torch reference's own top-1 / top-5, coloured by its recorded reference gate (is it
    plausible beside the published figure?); plain where the record has no such gate."""
    text = _pair(pct(r.reference.reference_top1), pct(r.reference.reference_top5))
    gate = r.verdicts.reference_gate
    return text if gate is None else Cell(text, outcome_status(gate))


def _reference_note(label: str, r: AccuracyRecord) -> Cell | None:
    """Where a reference not computed in this run came from, and how it was checked."""
    ref = r.reference
    if ref.reference_origin in (None, "computed here"):
        return None
    where = f" from {ref.reference_file}" if ref.reference_file else ""
    checked = (f", checked against torch here on {ref.reference_checked_images} images (seed "
               f"{ref.reference_check_seed}; max relative difference {ref.reference_check_max_rel_diff})"
               if ref.reference_checked_images else ", not verified (no weights here to check it)")
    return Cell(f"{label}: torch reference {ref.reference_origin}{where}{checked}")


def _accuracy_row(r: AccuracyRecord) -> tuple[str | Cell, ...]:
    c, p, s, ref = r.config, r.published, r.scores, r.reference
    return (
        str(c.chip or DASH), str(c.backend or DASH), str(c.precision or DASH),
        str(c.batch_size or DASH), SOURCE_LABELS.get(str(c.source), DASH),
        verdict_cell(r),
        coverage_cell(r),
        _pair(pct(s.top1), pct(s.top5)),
        _pair(_delta(s.top1, p.published_top1), _delta(s.top5, p.published_top5)),
        drop_cell(r),
        pct(ref.top1_agreement),
        str(c.input_dtype or DASH),
        str(s.images if s.images is not None else DASH),
        _pair(fmt_figure(p.published_top1), fmt_figure(p.published_top5)),
        reference_cell(r),
        published_gate_cell(r),
        str(r.setup.weights or DASH),
    )


# Where an inconclusive gate's own estimate of the images that would decide is recorded.
_NEEDED = {"paired_top1": "images_needed_top1", "paired_top5": "images_needed_top5",
           "top1_agreement": "images_needed_agreement"}


def _gate_notes(label: str, r: AccuracyRecord) -> list[Cell]:
    """The gates that neither passed nor failed (inconclusive, not checked, not applicable), with
    the images an inconclusive one would need; the top-5 drop when its gate did not pass; how the
    coverage was recognised."""
    notes = []
    for gate, outcome in r.judgement.gates.items():
        if outcome in (PASS, FAIL) or (gate.startswith("published_") and outcome.startswith(NOT_APPLICABLE)):
            continue  # a published gate's "not applicable": the coverage column and note say why
        field = _NEEDED.get(gate) if outcome == INCONCLUSIVE else None
        needed = getattr(r.verdicts, field) if field else None
        more = f" (~{needed:,} images would decide)" if needed else ""
        notes.append(Cell(f"{label}: gate {gate} {outcome}{more}", outcome_status(outcome)))
    v = r.verdicts
    top5 = r.judgement.gates.get("paired_top5")
    if top5 not in (None, PASS) and finite(v.paired_drop_top5):
        notes.append(Cell(f"{label}: top-5 drop vs torch {float(v.paired_drop_top5):.2f} points, 95% interval "
                          f"[{pct(v.paired_drop_top5_low95)}, {pct(v.paired_drop_top5_high95)}]: {top5}",
                          outcome_status(top5)))
    if v.dataset_coverage_detail:
        notes.append(Cell(f"{label}: coverage {one_line(v.dataset_coverage_detail)}"))
    return notes


def _accuracy_notes(records: Sequence[AccuracyRecord]) -> list[Cell]:
    notes: list[Cell] = []
    names = labels(r.config for r in records)
    for r in records:
        label = names[r.config] + (f" bs{r.config.batch_size}" if r.config.batch_size else "")
        if r.predictions.figures_from:
            where = r.predictions.figures_from.removeprefix("predictions ")
            how = "; ".join(x for x in (r.predictions.source_format, r.predictions.note,
                                        f"labels {r.predictions.labels}" if r.predictions.labels else "") if x)
            notes.append(Cell(f"{label}: predictions read from {where}" + (f" ({how})" if how else "")))
        notes += _gate_notes(label, r)
        origin = _reference_note(label, r)
        if origin is not None:
            notes.append(origin)
        note = reason_note(label, r)
        if note is not None:
            notes.append(note)
    weights = {
        (r.setup.weights, r.setup.weights_source, r.setup.weights_sha256) for r in records if r.setup.weights_source
    }
    for kind, source, sha in sorted(weights, key=lambda w: tuple(map(str, w))):
        notes.append(Cell(f"weights {kind}: {source}" + (f" (sha256 {sha[:12]})" if sha else "")))
    return notes


def accuracy_blocks(results: Results, model: str) -> list[Block]:
    latest = [r for r in results.latest("accuracy", model).values() if isinstance(r, AccuracyRecord)]
    if not latest:
        return []
    sources = sorted({r.published.published_source for r in latest if r.published.published_source})
    blocks: list[Block] = [Heading(3, "Accuracy", anchor("accuracy", model))]
    if sources:
        blocks.append(Para("Published figures: " + "; ".join(sources)))
    table, dropped = without_empty_columns(
        Table(ACCURACY_HEADERS, tuple(_accuracy_row(r) for r in latest), align=ACCURACY_ALIGN, css="accuracy",
              fold_from=ACCURACY_FOLD, anchors=tuple(record_anchor("acc", r) for r in latest)), DASH, keep=1)
    blocks.append(table)
    notes = _accuracy_notes(latest)
    if dropped:
        notes.append(Cell("columns without data in any row, not shown: " + ", ".join(" ".join(h.split())
                                                                                   for h in dropped)))
    if notes:
        blocks.append(Bullets(tuple(notes), "note"))
    return blocks


# --------------------------------------------------------------------------------------------
# Summary


def key_figure(r: ResultRecord) -> str:
    """The one number that says how a test went, for the compact tables."""
    bs = f" (bs{r.config.batch_size})" if r.config.batch_size else ""
    if r.outcome == "skipped":
        return f"vs {r.rule.baseline_chip}: not run" if isinstance(r, PerfRatioRecord) else "-"
    if isinstance(r, AccuracyRecord) and r.kind == "accuracy" and finite(r.scores.top1):
        return f"top-1 {pct(r.scores.top1)} top-5 {pct(r.scores.top5)}{bs}"
    if isinstance(r, AccuracyRecord) and r.kind == "agreement" and finite(r.reference.top1_agreement):
        return f"agreement {pct(r.reference.top1_agreement)}%{bs}"
    if isinstance(r, ConversionRecord) and finite(r.parity.max_abs_diff):
        return f"opset {r.opset} max|diff| {float(r.parity.max_abs_diff):.3g}"
    if isinstance(r, PerfRecord):
        best = r.best_per_card()
        return f"best {fmt_figure(best[1])} images/s per card (bs{best[0]})" if best else "-"
    if isinstance(r, PerfRatioRecord) and finite(r.result.ratio):
        return f"vs {r.rule.baseline_chip} {float(r.result.ratio):.4f} (need >= {r.rule.threshold:g})"
    return "-"


SUMMARY_HEADERS = ("model", "configuration", "kind", "key figure", "verdict")


def summary_records(results: Results) -> list[ResultRecord]:
    """The newest record of every test, in the summary's order (model, configuration, kind, key figure)."""
    latest = results.latest_tests()
    names = labels(r.config for r in latest)
    return sorted(latest, key=lambda r: (str(r.model or "-"), names[r.config], r.kind, key_figure(r)))


def summary_rows(results: Results) -> list[tuple[str, str, str, str, Cell]]:
    """model, configuration, kind, key figure, outcome (coloured by the recorded verdict; an
    inconclusive verdict a passed test allowed says ``inconclusive (allowed)``, never ``passed``)."""
    latest = summary_records(results)
    names = labels(r.config for r in latest)
    return [(str(r.model or "-"), names[r.config], r.kind, key_figure(r), Cell(outcome_text(r), status_of(r)))
            for r in latest]


def summary_table(results: Results) -> Table:
    """Every test's newest result, one row each, the reason a test did not pass last (whole; the
    HTML folds a long one); each row the target of its verdict matrix cell."""
    latest = summary_records(results)
    rows = tuple((*row, Cell(one_line(r.meta.reason) if r.outcome != "passed" else "", status_of(r)))
                 for row, r in zip(summary_rows(results), latest, strict=True))
    return Table((*SUMMARY_HEADERS, "why"), rows, css="summary", fold_from=len(SUMMARY_HEADERS),
                 anchors=tuple(record_anchor("test", r) for r in latest))


# --------------------------------------------------------------------------------------------
# History


def _run_label(run: Run) -> str:
    return f"{run.started or DASH}\n{run.run_id}"


def _history_cell(text: str, record: ResultRecord | None, regression: bool) -> Text:
    """A run's figure in one series, with the verdict its test recorded (a failed and an allowed
    inconclusive 50-image run do not look alike) and REGRESSION when the history flags it."""
    if record is None:
        return Cell(text + "\nREGRESSION", BAD) if regression else text
    status = status_of(record)
    words = STATUS_WORDS.get(status, str(record.outcome or DASH))
    return Cell(f"{text}\n{words}" + (", REGRESSION" if regression else ""), BAD if regression else status)


def history_block(history: ModelHistory, regressions: Sequence[Regression]) -> Table | None:
    """One row per run, one column per series; a cell gives the images scored (a top-1 is compared
    only with one on as many images); a regression's cell says so and is coloured."""
    if not history.points:
        return None
    flagged = {(reg.run_id, reg.figure, reg.config) for reg in regressions}
    headers = ("run", "host",
               *(f"top-1 / top-5\n{c.label()}" for c in history.accuracy_series),
               *(f"best images/s per card\n{c.label()}" for c in history.throughput_series))
    rows = []
    for p in history.points:
        cells: list[str | Cell] = [_run_label(p.run), str(p.run.host or DASH)]
        for c in history.accuracy_series:
            scored = p.accuracy.get(c)
            text = DASH if scored is None else _pair(pct(scored.top1), pct(scored.top5)) + (
                f" on {scored.images:,}" if scored.images else "")  # top-1 is compared over as many images only
            cells.append(_history_cell(text, p.records.get((TOP1, c)), (p.run.run_id, TOP1, c) in flagged))
        for c in history.throughput_series:
            best = p.throughput.get(c)
            text = DASH if best is None else f"{fmt_figure(best[1])} (bs{best[0]})"
            cells.append(_history_cell(text, p.records.get((THROUGHPUT, c)), (p.run.run_id, THROUGHPUT, c) in flagged))
        rows.append(tuple(cells))
    return Table(headers, tuple(rows), align=("l", "l") + ("r",) * (len(headers) - 2), css="history")


# --------------------------------------------------------------------------------------------
# Runs and environment


def _packages(env: Mapping[str, Any]) -> str:
    packages = env.get("packages") or {}
    return ", ".join(f"{k} {v}" for k, v in packages.items()) if isinstance(packages, dict) else str(packages)


def _run_row(run: Run) -> tuple[str, ...]:
    env, info = run.environment, run.info
    if info is None:
        return (run.run_id, run.started or DASH, str(run.host or DASH),
                "no run record: the session was killed before it finished (or predates run records)",
                *(DASH,) * 6)
    cores = f"{env.get('cores', '?')} ({env.get('usable_cores', '?')} usable)"
    ascend = env.get("ascend") or {}
    outcomes = ", ".join(f"{v} {k}" for k, v in info.outcomes.items())
    return (
        run.run_id, f"{run.started or DASH}\n{info.finished or DASH}", str(run.host or DASH),
        f"{env.get('cpu', '?')}, {cores} cores, {env.get('machine', '?')}",
        str(env.get("os", DASH)), str(env.get("python", DASH)), _packages(env) or DASH,
        _ascend_cell(ascend) if isinstance(ascend, dict) and ascend else DASH,
        f"{outcomes} (exit {info.exit_status if info.exit_status is not None else '?'})",
        "pytest " + " ".join(shlex.quote(a) for a in info.args),
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
            cells.append(f"npu-smi: unreadable ({one_line(npu.get('error'))})")
    return ", ".join(cells) or DASH


RUN_HEADERS = ("run", "started / finished", "host", "CPU", "OS", "Python", "packages", "Ascend", "outcomes", "args")


def runs_blocks(results: Results) -> list[Block]:
    return [Heading(2, "Runs and environment", "runs"),
            Table(RUN_HEADERS, tuple(_run_row(r) for r in results.runs), css="runs")]
