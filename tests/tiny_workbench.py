"""A Workbench on a tiny real data flow, for tests that need the whole path in seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def tiny_workbench(cache: Path, imagenet: Path | None = None) -> tuple[Any, Any, Any]:
    """A Workbench on 8 embedded images (or the folder ``imagenet``), timm's tiny
    ``test_efficientnet`` with seeded random weights at 32 x 32, and the cpu chip."""
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import (
        ArchSpec,
        PreprocessSpec,
        load_chips,
        load_models,
        load_policy,
    )

    bench = Workbench(RunConfig(imagenet=imagenet, cache_dir=cache, embedded_images=8, weights="random", threads=1,
                                workers=1), load_policy())
    spec = dataclasses.replace(load_models()["efficientnet_lite0"], name="tiny",
                               arch=ArchSpec(source="timm", name="test_efficientnet"),
                               preprocess=PreprocessSpec(resize=36, crop=32), preprocess_variants={})
    return bench, spec, load_chips()["cpu"]
