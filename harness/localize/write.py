"""The two files a localisation leaves: ``layers.csv`` (one row per node output, topological order)
and ``summary.json`` (the :class:`~harness.localize.summary.LocalizationSummary` as JSON).

layers.csv columns, in order (:data:`COLUMNS`): node, op_type, output, shape (on the compared
images, ``16x32x112x112``), cosine_similarity, max_abs_diff, max_relative_diff, rmse,
mean_relative_error, over_threshold (``yes``/``no``; empty with empty metrics where the tensor was
not compared: a constant, a tensor the candidate does not compute, or one bisection did not probe).
Numbers are written with 9 significant digits; ``nan`` / ``inf`` where a candidate tensor was not
finite.

Both files appear whole or not at all (written beside, then renamed), as UTF-8 whatever the
locale. Node and tensor names come from the ONNX file (perhaps from another machine): summary.json
is ASCII JSON (a lone surrogate is written as its ``\\udcXX`` escape and reads back the same);
layers.csv is UTF-8 text (a lone surrogate, which UTF-8 cannot hold, as its ``\\udcXX``), one CSV
field per name, quoted where it holds a comma, a quote or a line break.
Both file names are fixed; the folder is the caller's (``localize_dir`` makes it from a test name
with harness.safe_names.safe_component).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

from harness.localize.summary import LayerRow, LocalizationSummary, number_text, summary_dict
from harness.safe_names import inside

COLUMNS = ("node", "op_type", "output", "shape", "cosine_similarity", "max_abs_diff", "max_relative_diff", "rmse",
           "mean_relative_error", "over_threshold")
LAYERS_CSV = "layers.csv"
SUMMARY_JSON = "summary.json"


def csv_row(row: LayerRow) -> list[str]:
    shape = "x".join(str(d) for d in row.shape) if row.shape else ""
    m = row.metrics
    if m is None:
        return [row.node, row.op, row.output, shape, "", "", "", "", "", ""]
    return [row.node, row.op, row.output, shape, number_text(m.cosine), number_text(m.max_abs_diff),
            number_text(m.max_relative_diff), number_text(m.rmse), number_text(m.mean_relative_error),
            "yes" if row.over else "no"]


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(text.encode("utf-8", "backslashreplace"))  # a lone surrogate as \udcXX, never an error
    os.replace(tmp, path)


def layers_text(rows: tuple[LayerRow, ...]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: r.index):  # topological order (stable within a node's outputs)
        writer.writerow(csv_row(row))
    return buf.getvalue()


def write(summary: LocalizationSummary, out_dir: Path, seconds: float | None = None) -> LocalizationSummary:
    """Write ``out_dir/layers.csv`` and ``out_dir/summary.json``; the summary with their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    layers, summary_json = inside(out_dir, out_dir / LAYERS_CSV), inside(out_dir, out_dir / SUMMARY_JSON)
    final = replace(summary, layers_csv=str(layers), summary_json=str(summary_json),
                    seconds=summary.seconds if seconds is None else seconds)
    _replace_atomically(layers, layers_text(final.rows))
    text = json.dumps(summary_dict(final), indent=1, default=str, ensure_ascii=True)  # ASCII: surrogates escaped
    _replace_atomically(summary_json, text + "\n")
    return final
