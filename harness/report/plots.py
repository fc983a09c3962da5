"""Throughput-vs-batch plots of the throughput tables (PNG, matplotlib's Agg canvas; optional).

matplotlib is an optional dependency (``pip install -e '.[report]'``): without it the report is
written without plots and says so (:func:`plots_unavailable`).
"""

from __future__ import annotations

import io
from typing import Any

from harness.report.throughput import ThroughputTable, clock_name

INSTALL_PLOTS = "pip install -e '.[report]'"


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
                label=f"{column.name} ({column.origin}, {clock_name(column.clock)})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(table.batch_sizes)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in table.batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s per card")
    ax.set_title(f"{title}: throughput per card by batch size")
    ax.set_ylim(bottom=0)
    return png(fig, ax)
