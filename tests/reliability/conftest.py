"""Fixtures of the reliability tests: small directories of real ImageNet JPEGs, copied to tmp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import ABSENT, SAMPLE_1000, VAL_1300, copy_real_images, reap

REAL_IMAGES = 24


@pytest.fixture(autouse=True)
def _no_leaked_children() -> Iterator[None]:
    """A test that fails half-way must not leave its stalled child processes running."""
    yield
    reap()


@pytest.fixture(scope="session")
def val_1300() -> Path:
    if not (VAL_1300 / "val").is_dir() or not (VAL_1300 / "val_label.txt").is_file():
        pytest.skip(f"real ImageNet val subset not found at {VAL_1300} {ABSENT}")
    return VAL_1300


@pytest.fixture(scope="session")
def sample_1000() -> Path:
    if not (SAMPLE_1000 / "images").is_dir():
        pytest.skip(f"full-resolution ImageNet sample not found at {SAMPLE_1000} {ABSENT}")
    return SAMPLE_1000


@pytest.fixture(scope="session")
def real_images(val_1300: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real validation JPEGs with their val_label.txt; read-only by convention."""
    return copy_real_images(tmp_path_factory.mktemp("real") / "val", REAL_IMAGES)


@pytest.fixture
def own_real_images(val_1300: Path, tmp_path: Path) -> Path:
    """A private copy of the 24 real JPEGs that a test may change."""
    return copy_real_images(tmp_path / "images", REAL_IMAGES)
