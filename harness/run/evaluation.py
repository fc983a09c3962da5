"""What one accuracy run measured (``Workbench.evaluate``), ready for gates and records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import data as data_mod
from harness.data.coverage import Coverage
from harness.judge.metrics import Accuracy, Parity
from harness.specs import PreprocessSpec


@dataclass(frozen=True)
class Evaluation:
    """Everything one accuracy run measured, ready for gates and records."""

    model: str
    chip: str
    backend: str
    backend_version: str
    precision: str
    input_dtype: str
    decode: str
    environment: Mapping[str, Any]  # backend.describe(): providers, threads, precision that ran
    batch_size: int
    dataset: str
    dataset_key: str
    label_source: str  # DatasetListing.label_source: the label file, or the ImageFolder's wnid folders
    weights: Mapping[str, Any]
    preprocess: PreprocessSpec
    accuracy: Accuracy
    reference: Accuracy
    agreement: Parity
    skipped_unlabeled: int
    skipped_missing: int
    # Per-image correctness ({"top1": bool (N,), "top5": ...}) of the torch reference and of the
    # compiled model on the same images, in the same order: the paired gates' inputs.
    reference_correct: Mapping[str, np.ndarray]
    compiled_correct: Mapping[str, np.ndarray]
    coverage: Coverage  # full validation set, a subset of it, or other images
    # What localising a failed gate needs (harness.localize.localize_failure), never recorded: both
    # runs' logits (N, classes) in ``prepared``'s order, the ONNX the chip compiled, the images.
    logits: np.ndarray | None = field(default=None, repr=False, compare=False)
    reference_logits: np.ndarray | None = field(default=None, repr=False, compare=False)
    onnx_path: Path | None = None
    prepared: data_mod.PreparedDataset | None = field(default=None, repr=False, compare=False)
    # Where the reference logits came from (harness.run.reference.reference_origin): the torch
    # version and host that computed them, and ``imported_from`` (None: computed in this cache).
    reference_origin: Mapping[str, Any] | None = None
    # An int8 run (harness.run.int8): the calibration split and the quantizer's report
    # (harness.records.parts.Quantization's fields) and the images whose top-1 logit is tied.
    quantization: Mapping[str, Any] | None = None
