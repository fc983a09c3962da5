"""The embedded images: deterministic synthetic photos for a run without ImageNet.

:func:`synthetic_dataset` makes ``count`` procedurally generated JPEGs and a ``val_label.txt``
as a cache entry of kind ``synthetic`` (keyed by format, count and seed), built and published
under the :class:`~harness.cache.ArtifactCache`'s lock with its atomic rename, so concurrent
sessions and xdist workers generate them once and an interrupted build leaves nothing that is
read.

The labels (``index % 1000``, ``index`` 0-based) are NOT meaningful: they exist so the pipeline
runs end to end, and are good only for conversion and agreement checks, never for accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.cache import ArtifactCache
from harness.data.errors import DataError
from harness.data.labels import LABEL_FILE_NAME

SYNTHETIC_KIND = "synthetic"
# Bump when the images or their names change: it is part of the cache key.
_SYNTHETIC_VERSION = 1


def _synthetic_image(index: int, seed: int) -> Image.Image:
    """One procedurally generated photo-like image: gradient, shapes, sensor-like noise."""
    rng = np.random.default_rng([seed, index])
    w, h = (int(v) for v in rng.integers(200, 601, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * np.pi)
        freq = rng.uniform(0.002, 0.02)
        base[..., c] = 128 + 60 * (a * xx / w + b * yy / h) + 50 * np.sin(freq * (xx + yy) + phase)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, size=2))
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=color)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        else:
            points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(points, fill=color)
    pixels = np.asarray(img).astype(np.int16) + rng.normal(0, 8, size=(h, w, 3)).astype(np.int16)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    # A few grayscale files, as real ImageNet has, so the RGB conversion path is exercised.
    if index % 10 == 7:
        img = img.convert("L")
    return img


def _write_images(directory: Path, count: int, seed: int) -> None:
    """``synthetic_00000001.JPEG`` ... and their ``val_label.txt`` into ``directory``."""
    lines = []
    for index in range(count):
        name = f"synthetic_{index + 1:08d}.JPEG"
        _synthetic_image(index, seed).save(directory / name, format="JPEG", quality=90)
        lines.append(f"{name} {index % 1000}\n")
    (directory / LABEL_FILE_NAME).write_text("".join(lines))


def synthetic_dataset(cache: ArtifactCache, count: int, seed: int = 0) -> Path:
    """The directory of ``count`` deterministic synthetic JPEGs plus their ``val_label.txt``.

    For the embedded default run when no ImageNet is given: a ``synthetic`` entry of ``cache``,
    made once (whoever comes second waits for the first builder and reuses its entry) and
    published atomically; a build interrupted by a kill leaves a temp dir the next build of the
    same entry removes. List it with :func:`~harness.data.listing.list_dataset`.
    """
    if count <= 0:
        raise DataError(f"synthetic dataset size must be positive, found {count}")
    inputs = {"version": _SYNTHETIC_VERSION, "count": count, "seed": seed}

    def build(tmp: Path) -> dict[str, str]:
        _write_images(tmp, count, seed)
        return {"labels": "index % 1000: not meaningful, never for accuracy"}

    return cache.get_or_build(SYNTHETIC_KIND, inputs, build).path
