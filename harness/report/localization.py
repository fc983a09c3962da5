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

A results file may come from another machine (not trusted): the path it names is read only if it
is a regular file called ``summary.json`` of at most :data:`MAX_SUMMARY_BYTES` (never a device, a
FIFO or any other file of this machine), every text shown from the record or the summary is
escaped (harness.safe_names.printable), a malformed entry is left out rather than raised on, and
the plot's file name is made by harness.report.plots.add_plot.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.records.results import Results
from harness.records.schema import AccuracyRecord
from harness.report.plots import add_plot, new_axes, plot_text, png
from harness.report.render import BAD, OK, Block, Cell, Heading, Image, Para, Table
from harness.report.tables import labels
from harness.safe_names import printable

SUMMARY_NAME = "summary.json"  # harness.localize.write.SUMMARY_JSON
MAX_SUMMARY_BYTES = 16 << 20  # a real one is a few KB (its worst nodes and ~100 cosines)
MAX_WORST_ROWS, MAX_POINTS, MAX_TEXT = 100, 100_000, 200  # what the report shows of one (from elsewhere)

KINDS = ("accuracy", "agreement")
WORST_HEADERS = ("node", "op", "output", "shape", "cosine", "max abs diff", "RMSE", "mean rel. error", "over threshold")
WORST_ALIGN = ("l", "l", "l", "l", "r", "r", "r", "r", "l")


def localized(results: Results, model: str) -> list[AccuracyRecord]:
    """The newest accuracy and agreement records of ``model`` (per configuration) with a localisation."""
    return [r for kind in KINDS for r in results.latest(kind, model).values()
            if isinstance(r, AccuracyRecord) and r.localization.localization]


def _read_bounded(path: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most MAX_SUMMARY_BYTES (opened without
    blocking: a FIFO named by a results file cannot hang the report); ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = fh.read(MAX_SUMMARY_BYTES + 1)
    if len(data) > MAX_SUMMARY_BYTES:
        raise ValueError(f"over {MAX_SUMMARY_BYTES >> 20} MiB")
    return data


def read_summary(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """summary.json's content, or None and why it cannot be shown (escaped, ready to print)."""
    if not path:
        return None, "no summary.json recorded"
    shown = printable(path)
    if Path(path).name != SUMMARY_NAME:
        return None, f"{shown} is not a localisation {SUMMARY_NAME}"
    try:
        data = json.loads(_read_bounded(path).decode("utf-8"))
    except FileNotFoundError:
        return None, f"{shown} is gone"
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, not a file
        return None, printable(f"{shown} cannot be read ({type(exc).__name__}: {exc})")
    return (data, None) if isinstance(data, dict) else (None, f"{shown} is not a localisation summary")


def _items(value: Any, most: int) -> list[Any]:
    """A summary field meant to be a list, as one of at most ``most`` items (anything else: empty)."""
    return value[:most] if isinstance(value, list) else []


def _text(value: Any, most: int = MAX_TEXT) -> str:
    """A summary field as one line of text, cut at ``most`` characters."""
    text = "" if value is None else printable(value)
    return text if len(text) <= most else text[:most - 3] + "..."


def _number(value: Any) -> float:
    """A summary.json number (non-finite ones are the strings nan / inf)."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _fmt(value: Any, digits: int = 5) -> str:
    number = _number(value)
    return "\u2014" if value is None else f"{number:.{digits}g}" if math.isfinite(number) else _text(value, 24)


def worst_table(summary: Mapping[str, Any]) -> Table | None:
    """The summary's worst nodes (lowest cosine first); an over-threshold row is marked bad."""
    rows = []
    for w in _items(summary.get("worst_nodes"), MAX_WORST_ROWS):
        if not isinstance(w, dict):
            continue
        over = w.get("over_threshold")
        status = BAD if over is True else OK if over is False else ""
        shape = _text("x".join(_text(d, 24) for d in _items(w.get("shape"), 8))) or "\u2014"
        reasons = _text(", ".join(_text(r) for r in _items(w.get("reasons"), 8)))
        rows.append((_text(w.get("node")), _text(w.get("op_type")), _text(w.get("output")), shape,
                     Cell(_fmt(w.get("cosine_similarity"), 6), status), _fmt(w.get("max_abs_diff")),
                     _fmt(w.get("rmse")), _fmt(w.get("mean_relative_error")),
                     Cell(reasons or ("yes" if over is True else "no"), status)))
    return Table(WORST_HEADERS, tuple(rows), WORST_ALIGN, css="localization") if rows else None


def _index(value: Any) -> int | None:
    """A node index (a position in the graph), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31 else None


def plot_cosine_by_depth(summary: Mapping[str, Any], title: str) -> bytes | None:
    """Cosine similarity of every compared tensor against its node's position in the graph, with
    the threshold and the first divergent node; None when nothing was compared. matplotlib's
    object API on the Agg canvas (harness.report.plots.new_axes)."""
    points = [(_index(p[0]), _number(p[1])) for p in _items(summary.get("cosine_by_depth"), MAX_POINTS)
              if isinstance(p, list) and len(p) == 2]
    points = [(i, c) for i, c in points if i is not None]
    if not points:
        return None
    fig, ax = new_axes(7.5, 3.8)
    xs = [i for i, _ in points]
    ys = [c if math.isfinite(c) else math.nan for _, c in points]
    ax.plot(xs, ys, marker=".", linewidth=1, label="cosine similarity (candidate vs reference)")
    thresholds = summary.get("thresholds")
    threshold = _number(thresholds.get("min_cosine")) if isinstance(thresholds, dict) else math.nan
    if math.isfinite(threshold):
        ax.axhline(threshold, color="#cf222e", linestyle="--", linewidth=1, label=f"min_cosine {threshold:g}")
    first = _index(summary.get("first_divergent_index"))
    if first is not None:
        ax.axvline(first, color="#9a6700", linestyle=":", linewidth=1,
                   label=plot_text(f"first divergent: {_text(summary.get('first_divergent_node'))}"))
    ax.set_xlabel("node index (topological order)")
    ax.set_ylabel("cosine similarity")
    ax.set_title(plot_text(title), fontsize="medium")
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
    return printable(text + (f" ({', '.join(facts)})" if facts else ""))


def localization_blocks(results: Results, model: str, plot_note: str | None, plots: dict[str, bytes]) -> list[Block]:
    """The model's localisation section (empty when none of its newest records carries one); its
    plots are added to ``plots`` as ``plots/<model>-localization-<n>.png`` (add_plot)."""
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
        where = [printable(p) for p in (loc.localization_layers, loc.localization_summary) if p]
        blocks.append(Para("Every node: " + " and ".join(where), "note"))
        if plot_note is None:
            png = plot_cosine_by_depth(summary, f"{model} {label}: cosine by depth")
            if png is not None:
                rel = add_plot(plots, model, png, f"localization-{n}")
                blocks.append(Image(rel, f"{model} {label} cosine similarity by depth", png))
    return blocks

