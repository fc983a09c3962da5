"""What the benchmarks share: dataset locations, the recipe they time, and the board of figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.specs import PreprocessSpec

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SAMPLE_1000 = DATASETS / "imagenet-sample-1000"
VAL_1300 = DATASETS / "imagenet-val-1300"
ABSENT = "(CI keeps ../shared/datasets beside the checkout; a user's machine may not have it)"
# The ResNeXt-50 recipe of the seeds' preprocess scripts (torchvision Resize(256) + CenterCrop(224)).
RESNEXT = PreprocessSpec(resize=256, crop=224)
# The accuracy runs' batch size (fixtures/policy.toml), used by the model benchmarks.
MODEL_BATCH = 8


# --------------------------------------------------------------------------------------------
# The board: figures and ratios printed at the end


@dataclass
class Figure:
    label: str
    images_per_s: float
    seconds: float  # the fastest round
    images: int
    note: str = ""


@dataclass
class Board:
    """Images/s of every benchmark of this session, and the ratios between them."""

    figures: dict[str, Figure] = field(default_factory=dict)
    facts: list[str] = field(default_factory=list)
    # key -> median over alternating round pairs of (bare time / this figure's time)
    paired: dict[str, float] = field(default_factory=dict)

    def record(self, key: str, label: str, benchmark: Any, images: int, note: str = "") -> Figure | None:
        """Record ``benchmark``'s fastest round as ``images`` images; None when timing was disabled."""
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        if stats is None or not stats.min:
            return None
        return self.record_seconds(key, label, float(stats.min), images, note, benchmark)

    def record_seconds(
        self, key: str, label: str, seconds: float, images: int, note: str = "", benchmark: Any = None
    ) -> Figure:
        figure = Figure(label, images / seconds, seconds, images, note)
        self.figures[key] = figure
        if benchmark is not None:
            benchmark.extra_info[f"{key}_images_per_s"] = round(figure.images_per_s, 1)
            benchmark.extra_info[f"{key}_seconds"] = round(seconds, 6)
        return figure

    def ratio(self, top: str, bottom: str) -> float | None:
        if top in self.figures and bottom in self.figures:
            return self.figures[top].images_per_s / self.figures[bottom].images_per_s
        return None


BOARD = Board()


def verdict(value: float, target: float) -> str:
    return f"target >= {target:g}: {'met' if value >= target else 'MISSED'}"


# (top, bottom, label, target or None, how to print the ratio)
RATIOS: tuple[tuple[str, str, str, float | None, str], ...] = (
    ("pre_w1", "mz_1thread", "preprocess 1 worker / ModelZoo baseline (1 torch thread)", None, "x"),
    ("pre_w2", "mz_1thread", "preprocess 2 workers / ModelZoo baseline (1 torch thread)", 1.8, "x"),
    ("pre_w2", "mz_script", "preprocess 2 workers / ModelZoo baseline (as the script runs)", 1.8, "x"),
    ("pre_w2", "pre_w1", "preprocess 2 workers / 1 worker (scaling)", None, "x"),
    ("draft_w1", "pre_w1", "draft decode / exact decode (1 worker)", None, "x"),
    ("pre_w2", "warm_rerun", "warm rerun time (list + cache check) / cold build time (2 workers)", None, "x"),
    ("feed_u8_bs64", "feed_f32_bs64", "feed uint8 copy / normalized float32 (bs64)", None, "x"),
    (
        "feed_f32_bs64",
        "feed_f32_new_bs64",
        "feed float32 into reused buffers / a new array per batch (bs64)",
        None,
        "x",
    ),
    ("acc_effnet", "acc_effnet_bare", "accuracy run / bare session.run, efficientnet_lite0 bs8", 0.95, "%"),
    ("perf_effnet", "perf_effnet_bare", "perf loop / bare session.run, efficientnet_lite0 bs8", 0.97, "%"),
    ("acc_tiny", "acc_tiny_bare", "accuracy run / bare session.run, tiny conv model bs8", 0.95, "%"),
    ("perf_tiny", "perf_tiny_bare", "perf loop / bare session.run, tiny conv model bs8", 0.97, "%"),
    ("acc_device", "acc_device_bare", "accuracy run (Workbench.run) / simulated 4000/s device alone", 0.95, "%"),
    (
        "acc_device_prefetch",
        "acc_device_bare",
        "accuracy run with batches(prefetch=True) / simulated 4000/s device alone",
        0.95,
        "%",
    ),
)
# The order figures are printed in (unlisted ones follow in the order they ran).
ORDER = (
    "mz_script", "mz_1thread", "pre_w1", "pre_w2", "draft_w1", "draft_val1300", "warm_rerun",
    "feed_f32_bs8", "feed_f32_bs64", "feed_f32_new_bs8", "feed_f32_new_bs64", "feed_u8_bs8", "feed_u8_bs64",
    "acc_effnet_bare", "acc_effnet", "perf_effnet_bare", "perf_effnet",
    "acc_tiny_bare", "acc_tiny", "perf_tiny_bare", "perf_tiny",
    "acc_device_bare", "acc_device", "acc_device_prefetch", "score",
)
# Absolute targets (images/s).
TARGETS = {"feed_f32_bs8": 10_000.0, "feed_f32_bs64": 10_000.0}
