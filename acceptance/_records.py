"""What every acceptance test records about the run (JUnit properties + results file)."""

from __future__ import annotations

from typing import Any

from harness.run.workbench import Evaluation


def evaluation_properties(ev: Evaluation) -> dict[str, Any]:
    return {
        "model": ev.model,
        "chip": ev.chip,
        "backend": ev.backend,
        "backend_version": ev.backend_version,
        "precision": ev.precision,
        "input_dtype": ev.input_dtype,
        "decode": ev.decode,
        **{f"env_{k}": v for k, v in ev.environment.items()},
        "batch_size": ev.batch_size,
        "dataset": ev.dataset,
        "dataset_key": ev.dataset_key,
        "label_source": ev.label_source,
        "images": ev.accuracy.count,
        "skipped_unlabeled": ev.skipped_unlabeled,
        "skipped_missing": ev.skipped_missing,
        "preprocess": ev.preprocess.describe(),
        "weights": ev.weights.get("kind"),
        "weights_source": ev.weights.get("source"),
        "weights_sha256": ev.weights.get("sha256"),
        "top1": round(ev.accuracy.top1, 4),
        "top5": round(ev.accuracy.top5, 4),
        "reference_top1": round(ev.reference.top1, 4),
        "reference_top5": round(ev.reference.top5, 4),
        "delta_top1_vs_reference": round(ev.accuracy.top1 - ev.reference.top1, 4),
        "delta_top5_vs_reference": round(ev.accuracy.top5 - ev.reference.top5, 4),
        "top1_agreement": round(ev.agreement.top1_agreement, 4),
        "max_abs_diff": float(f"{ev.agreement.max_abs_diff:.4g}"),
    }
