"""The two files a localisation leaves: ``layers.csv`` (one row per node output, topological order)
and ``summary.json`` (the :class:`~harness.localize.pipeline.LocalizationSummary` as JSON).

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
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.safe_names import inside

if TYPE_CHECKING:
    from harness.localize.pipeline import LayerRow, LocalizationSummary

COLUMNS = ("node", "op_type", "output", "shape", "cosine_similarity", "max_abs_diff", "max_relative_diff", "rmse",
           "mean_relative_error", "over_threshold")
LAYERS_CSV = "layers.csv"
SUMMARY_JSON = "summary.json"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.9g}")


def _json_number(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become strings."""
    if value is None:
        return None
    return _number(value) if not math.isfinite(value) else float(value)


def csv_row(row: LayerRow) -> list[str]:
    shape = "x".join(str(d) for d in row.shape) if row.shape else ""
    m = row.metrics
    if m is None:
        return [row.node, row.op, row.output, shape, "", "", "", "", "", ""]
    return [row.node, row.op, row.output, shape, _number(m.cosine), _number(m.max_abs_diff),
            _number(m.max_relative_diff), _number(m.rmse), _number(m.mean_relative_error),
            "yes" if row.over else "no"]


def row_dict(row: LayerRow) -> dict[str, Any]:
    """One row as JSON (the worst nodes of summary.json)."""
    m = row.metrics
    out: dict[str, Any] = {"index": row.index, "node": row.node, "op_type": row.op, "output": row.output,
                           "shape": list(row.shape) if row.shape else None}
    if m is not None:
        out.update(cosine_similarity=_json_number(m.cosine), max_abs_diff=_json_number(m.max_abs_diff),
                   max_relative_diff=_json_number(m.max_relative_diff), rmse=_json_number(m.rmse),
                   mean_relative_error=_json_number(m.mean_relative_error), over_threshold=bool(row.over),
                   reasons=list(row.reasons))
    return out


def summary_dict(s: LocalizationSummary) -> dict[str, Any]:
    """summary.json's content."""
    return {
        "first_divergent_node": s.first_divergent_node,
        "first_divergent_op": s.first_divergent_op,
        "first_divergent_output": s.first_divergent_output,
        "first_divergent_index": s.first_divergent_index,
        "first_divergent_cosine": _json_number(s.first_divergent_cosine),
        "first_divergent_reasons": list(s.first_divergent_reasons),
        "input_cosine": _json_number(s.input_cosine),
        "classification": s.classification,
        "method": s.method,
        "method_reason": s.method_reason,
        "thresholds": dict(s.thresholds),
        "reference": s.reference,
        "candidate": s.candidate,
        "candidate_details": dict(s.candidate_details),
        "exposure_check": {k: _json_number(v) for k, v in s.exposure_check.items()} if s.exposure_check else None,
        "images": list(s.images),
        "images_considered": s.images_considered,
        "top1_disagreements": s.top1_disagreements,
        "final_cosine": _json_number(s.final_cosine),
        "nodes": s.nodes,
        "tensors_compared": s.tensors_compared,
        "worst_nodes": [row_dict(r) for r in s.worst_nodes],
        "cosine_by_depth": [[i, _json_number(c)] for i, c in s.cosine_by_depth],
        "seconds": round(s.seconds, 3),
        "layers_csv": s.layers_csv,
    }


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
