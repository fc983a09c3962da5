"""Where a failed gate's loss starts, in the report: for every accuracy or agreement record that
carries a localisation (the ``--localize-on-fail`` hook, docs/localize.md), its headline, the worst
nodes as a table and the cosine similarity by depth as a plot.

The record holds the summary's scalar fields (harness.records.schema.Localization: the first
divergent node and op, classification, method, the paths of summary.json and layers.csv); the
worst nodes and the cosine of every compared tensor are read from the summary.json it names.
They are not copied into the record: a results line and its JUnit properties are flat scalars,
and ~100 cosines per failure would weigh on every nightly consumer for a table and a plot only
the report draws. A results file read where that folder is gone (another machine, a cleaned
reports/) shows the headline and a note saying what is missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from harness.records.results import Results
from harness.records.schema import AccuracyRecord
from harness.report.plots import new_axes, png
from harness.report.render import BAD, OK, Block, Cell, Heading, Image, Para, Table
from harness.report.tables import labels

KINDS = ("accuracy", "agreement")
WORST_HEADERS = ("node", "op", "output", "shape", "cosine", "max abs diff", "RMSE", "mean rel. error", "over threshold")
WORST_ALIGN = ("l", "l", "l", "l", "r", "r", "r", "r", "l")


def localized(results: Results, model: str) -> list[AccuracyRecord]:
    """The newest accuracy and agreement records of ``model`` (per configuration) with a localisation."""
    return [r for kind in KINDS for r in results.latest(kind, model).values()
            if isinstance(r, AccuracyRecord) and r.localization.localization]


def read_summary(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """summary.json's content, or None and why it cannot be shown."""
    if not path:
        return None, "no summary.json recorded"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} is gone"
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
    return (data, None) if isinstance(data, dict) else (None, f"{path} is not a localisation summary")


def _number(value: Any) -> float:
    """A summary.json number (non-finite ones are the strings nan / inf)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any, digits: int = 5) -> str:
    number = _number(value)
    return "\u2014" if value is None else f"{number:.{digits}g}" if math.isfinite(number) else str(value)


def worst_table(summary: Mapping[str, Any]) -> Table | None:
    """The summary's worst nodes (lowest cosine first); an over-threshold row is marked bad."""
    rows = []
    for w in summary.get("worst_nodes") or []:
        over = w.get("over_threshold")
        status = BAD if over else OK if over is False else ""
        rows.append((w.get("node", ""), w.get("op_type", ""), w.get("output", ""),
                     "x".join(map(str, w.get("shape") or [])) or "\u2014", Cell(_fmt(w.get("cosine_similarity"), 6), status),
                     _fmt(w.get("max_abs_diff")), _fmt(w.get("rmse")), _fmt(w.get("mean_relative_error")),
                     Cell(", ".join(w.get("reasons") or []) or ("yes" if over else "no"), status)))
    return Table(WORST_HEADERS, tuple(rows), WORST_ALIGN, css="localization") if rows else None


def plot_cosine_by_depth(summary: Mapping[str, Any], title: str) -> bytes | None:
    """Cosine similarity of every compared tensor against its node's position in the graph, with
    the threshold and the first divergent node; None when nothing was compared. matplotlib's
    object API on the Agg canvas (harness.report.plots.new_axes)."""
    points = [(int(i), _number(c)) for i, c in summary.get("cosine_by_depth") or []]
    if not points:
        return None
    fig, ax = new_axes(7.5, 3.8)
    xs = [i for i, _ in points]
    ys = [c if math.isfinite(c) else math.nan for _, c in points]
    ax.plot(xs, ys, marker=".", linewidth=1, label="cosine similarity (candidate vs reference)")
    threshold = (summary.get("thresholds") or {}).get("min_cosine")
    if threshold is not None and math.isfinite(_number(threshold)):
        ax.axhline(_number(threshold), color="#cf222e", linestyle="--", linewidth=1, label=f"min_cosine {threshold}")
    first = summary.get("first_divergent_index")
    if first is not None:
        ax.axvline(int(first), color="#9a6700", linestyle=":", linewidth=1,
                   label=f"first divergent: {summary.get('first_divergent_node')}")
    ax.set_xlabel("node index (topological order)")
    ax.set_ylabel("cosine similarity")
    ax.set_title(title, fontsize="medium")
    return png(fig, ax)


def _headline(label: str, r: AccuracyRecord) -> str:
    loc = r.localization
    facts = [f"its cosine {loc.first_divergent_cosine:.5g}" if loc.first_divergent_cosine is not None else "",
             f"{loc.localization_classification}" if loc.localization_classification else "",
             f"method {loc.localization_method}" if loc.localization_method else "",
             f"{loc.localization_images} images" if loc.localization_images is not None else "",
             f"{loc.localization_tensors} tensors compared" if loc.localization_tensors is not None else "",
             f"{loc.localization_seconds:g} s" if loc.localization_seconds is not None else ""]
    facts = [f for f in facts if f]
    text = f"{label} ({r.kind}, verdict {r.verdict or 'unknown'}): {loc.localization}"
    return text + (f" ({', '.join(facts)})" if facts else "")


def localization_blocks(results: Results, model: str, plot_note: str | None, plots: dict[str, bytes]) -> list[Block]:
    """The model's localisation section (empty when none of its newest records carries one); its
    plots are added to ``plots`` as ``<model>-localization-<n>`` (written as plots/<key>.png)."""
    records = localized(results, model)
    if not records:
        return []
    names = labels(r.config for r in records)
    blocks: list[Block] = [Heading(3, "Where the loss starts (localisation of failed gates)")]
    for n, r in enumerate(records, 1):
        label = names[r.config] + (f" bs{r.config.batch_size}" if r.config.batch_size else "")
        blocks.append(Para(_headline(label, r)))
        loc = r.localization
        if loc.localization_summary is None and loc.first_divergent_node is None and loc.localization_method is None:
            continue  # localisation did not run: its reason is the headline
        summary, missing = read_summary(loc.localization_summary)
        if summary is None:
            blocks.append(Para(f"Worst nodes and cosine by depth not shown: {missing}.", "note"))
            continue
        table = worst_table(summary)
        if table is not None:
            blocks.append(table)
        where = [p for p in (loc.localization_layers, loc.localization_summary) if p]
        blocks.append(Para("Every node: " + " and ".join(where), "note"))
        if plot_note is None:
            png = plot_cosine_by_depth(summary, f"{model} {label}: cosine by depth")
            if png is not None:
                key = f"{model}-localization-{n}"
                plots[key] = png
                blocks.append(Image(f"plots/{key}.png", f"{model} {label} cosine similarity by depth", png))
    return blocks

