"""Throughput-vs-batch plots of the throughput tables (PNG, matplotlib's Agg canvas; optional).

matplotlib is an optional dependency (``pip install -e '.[report]'``): without it the report is
written without plots and says so (:func:`plots_unavailable`).

Names in a plot come from results files (not trusted): every title and label goes through
:func:`plot_text`, and a plot's file name through :func:`plot_file` (harness.safe_names).
"""

from __future__ import annotations

import io
from typing import Any

from harness.report.throughput import ThroughputTable, clock_name
from harness.safe_names import printable, safe_component

INSTALL_PLOTS = "pip install -e '.[report]'"
PLOTS_DIR = "plots"


def plot_file(name: str, part: str = "") -> str:
    """The report-relative file of a plot named after ``name`` (a model, from data): ``plots/<name,
    made one safe file name>.png``, or ``plots/<name>-<part>.png`` for its other plots."""
    return f"{PLOTS_DIR}/{safe_component(name)}{'-' + part if part else ''}.png"


def add_plot(plots: dict[str, bytes], name: str, data: bytes, part: str = "") -> str:
    """Add ``data`` to ``plots`` (report-relative file -> PNG) under :func:`plot_file`, or, when a
    plot of another name already holds that file (a model named like another's localisation plot),
    under ``...~2.png`` (``~3``...): no plot replaces another. Returns the file it is under."""
    rel = plot_file(name, part)
    stem, count = rel.removesuffix(".png"), 2
    while rel in plots:
        rel, count = f"{stem}~{count}.png", count + 1
    plots[rel] = data
    return rel


def plot_text(text: object) -> str:
    """Text from data as matplotlib draws it literally: escaped (harness.safe_names.printable: a
    surrogate or control character cannot reach the font engine) and no ``$`` mathtext."""
    return printable(text).replace("$", r"\$")


def plots_unavailable() -> str | None:
    """Why plots cannot be drawn here (None when matplotlib imports)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"plots omitted: matplotlib is not installed ({INSTALL_PLOTS})"
    return None


def new_axes(width: float, height: float) -> tuple[Any, Any]:
    """A figure on the Agg canvas and its one axes: matplotlib's object API, not pyplot (no global
    state, no display, safe inside a pytest session that may have imported pyplot elsewhere)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def png(fig: Any, ax: Any) -> bytes:
    """The report's finish of every plot: a light grid, the legend, tight layout, PNG bytes without
    the matplotlib version in its metadata (the same plot gives the same bytes)."""
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def plot_throughput(table: ThroughputTable, title: str) -> bytes | None:
    """images/s per card against batch size (log2), one line per column; None if there is nothing to draw.

    Uses matplotlib's object API with the Agg canvas (not pyplot): no global state, no display, safe
    inside a pytest session that may have imported pyplot with another backend.
    """
    drawn = [c for c in table.columns if c.figures]
    if not drawn:
        return None
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = new_axes(7.5, 4.5)
    for column in drawn:
        xs = sorted(column.figures)
        ax.plot(xs, [column.figures[x] for x in xs], marker="o",
                label=plot_text(f"{column.name} ({column.origin}, {clock_name(column.clock)})"))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(table.batch_sizes)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in table.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s per card")
    ax.set_title(plot_text(f"{title}: throughput per card by batch size"))
    ax.set_ylim(bottom=0)
    return png(fig, ax)
