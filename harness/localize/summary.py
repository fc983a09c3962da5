"""What a localisation found, as data: :class:`LayerRow` (one node output and its metrics) and
:class:`LocalizationSummary`, and their JSON form (``summary.json``'s content, :func:`summary_dict`).

The pipeline (:mod:`harness.localize.pipeline`) builds them, :mod:`harness.localize.write` writes
them, and a failed accuracy test's record (harness.records.schema) carries a summary: all three
import them from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.localize.compare import Metrics


@dataclass(frozen=True)
class LayerRow:
    """One row of layers.csv: a node output, its shape on the compared images, and its metrics
    (None: not compared: constant, not computed by the candidate, or not probed by bisection)."""

    index: int
    node: str
    op: str
    output: str
    shape: tuple[int, ...] | None
    metrics: Metrics | None
    reasons: tuple[str, ...] = ()

    @property
    def over(self) -> bool | None:
        return None if self.metrics is None else bool(self.reasons)


@dataclass(frozen=True)
class LocalizationSummary:
    """What localisation found; summary.json is :func:`summary_dict` of it, ``last_line()`` what the
    command prints last."""

    reference: str
    candidate: str
    method: str  # "expose" or "bisect"
    method_reason: str
    first_divergent_node: str | None
    first_divergent_op: str | None
    first_divergent_output: str | None
    first_divergent_index: int | None
    first_divergent_cosine: float | None
    first_divergent_reasons: tuple[str, ...]
    input_cosine: float | None  # lowest cosine among the first divergent node's compared inputs (1.0: image)
    classification: str  # "none", "local" or "accumulated"
    thresholds: Mapping[str, Any]
    images: tuple[str, ...]  # the compared images, most divergent first
    images_considered: int
    top1_disagreements: int  # among the images considered
    final_cosine: float  # of the candidate's own final output on the compared images
    nodes: int
    tensors_compared: int
    worst_nodes: tuple[LayerRow, ...]
    cosine_by_depth: tuple[tuple[int, float], ...]
    rows: tuple[LayerRow, ...] = field(repr=False)
    candidate_details: Mapping[str, Any] = field(default_factory=dict)
    exposure_check: Mapping[str, float] | None = None
    seconds: float = 0.0
    layers_csv: str | None = None
    summary_json: str | None = None

    def last_line(self) -> str:
        if self.first_divergent_node is None:
            n = self.tensors_compared
            return f"first divergent node: none ({n} tensor{'s' if n != 1 else ''} compared, all within thresholds)"
        return f"first divergent node: {self.first_divergent_node} ({self.first_divergent_op})"


def number_text(value: float) -> str:
    """A number as layers.csv writes it: 9 significant digits, ``nan`` / ``inf`` spelled out."""
    return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.9g}")


def _json_number(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become strings."""
    if value is None:
        return None
    return number_text(value) if not math.isfinite(value) else float(value)


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
