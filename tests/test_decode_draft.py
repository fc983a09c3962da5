"""The opt-in draft decode (JPEG DCT-domain downscaling): the default stays exact and bit-identical
with torchvision, draft changes only large JPEGs, keeps the geometry, and has its own cache entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cache import ArtifactCache, content_key
from harness.data import (
    DECODE_MODES,
    DataError,
    dataset_cache_inputs,
    list_dataset,
    prepare_dataset,
    preprocess_image,
)
from harness.specs import PreprocessSpec

T = pytest.importorskip("torchvision.transforms", reason="torchvision is the preprocessing reference")

SAMPLE_1000 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "imagenet-sample-1000"
SPEC = PreprocessSpec(resize=256, crop=224)
METHODS = ("resize_crop", "squash_crop", "crop_resize")


def photo(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth photo-like JPEG (gradients, a disc, mild noise) of ``size``."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / (37 + 9 * c) + c) * np.cos(yy / 53) for c in range(3)], axis=-1)
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 4) ** 2
    base[disc] = (30, 200, 90)
    base += rng.normal(0, 4, size=base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").convert(mode)
    img.save(path, format="JPEG", quality=90)
    return path


def torchvision_pixels(path: Path, spec: PreprocessSpec) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    mode = T.InterpolationMode(spec.interpolation)
    tf = T.Compose([T.Resize(spec.resize, interpolation=mode), T.CenterCrop(spec.crop)])
    return np.asarray(tf(rgb)).transpose(2, 0, 1)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two large JPEGs (draft engages: shorter side >= 2 x 256) and a small one (it does not)."""
    root = tmp_path / "ds"
    root.mkdir()
    photo(root / "big_landscape.JPEG", (1400, 1050), seed=1)
    photo(root / "big_portrait_gray.JPEG", (600, 1100), seed=2, mode="L")
    photo(root / "small.JPEG", (500, 375), seed=3)
    (root / "val_label.txt").write_text("big_landscape.JPEG 1\nbig_portrait_gray.JPEG 2\nsmall.JPEG 3\n")
    return root


def test_default_decode_is_exact_and_matches_torchvision(dataset: Path) -> None:
    for path in sorted(dataset.glob("*.JPEG")):
        default = preprocess_image(path, SPEC)
        assert np.array_equal(default, preprocess_image(path, SPEC, "exact"))
        assert np.array_equal(default, torchvision_pixels(path, SPEC)), path.name


@pytest.mark.parametrize("method", METHODS)
def test_draft_changes_only_large_jpegs_and_keeps_the_geometry(dataset: Path, method: str) -> None:
    spec = PreprocessSpec(resize=256, crop=224, method=method)
    small = dataset / "small.JPEG"
    assert np.array_equal(preprocess_image(small, spec, "draft"), preprocess_image(small, spec, "exact"))
    for name in ("big_landscape.JPEG", "big_portrait_gray.JPEG"):
        exact = preprocess_image(dataset / name, spec, "exact").astype(np.int16)
        draft = preprocess_image(dataset / name, spec, "draft").astype(np.int16)
        assert draft.shape == exact.shape == (3, 224, 224)
        diff = np.abs(draft - exact)
        # Different pixels (that is why it is opt-in), but the same picture in the same place:
        # a crop shifted by even one pixel would move the disc's edge and the sine bands.
        assert diff.max() > 0, f"{name}: draft did not engage on a {method} {spec.resize} target"
        assert diff.mean() < 3.0, f"{name}: mean |draft - exact| {diff.mean():.2f} (geometry off?)"


def test_draft_is_a_no_op_for_png(tmp_path: Path) -> None:
    jpeg = photo(tmp_path / "x.JPEG", (1200, 900))
    png = tmp_path / "x.png"
    with Image.open(jpeg) as img:
        img.save(png)
    assert np.array_equal(preprocess_image(png, SPEC, "draft"), preprocess_image(png, SPEC, "exact"))


def test_unknown_decode_mode_is_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected one of exact, draft"):
        preprocess_image(dataset / "small.JPEG", SPEC, "fast")
    with pytest.raises(DataError, match="unknown decode mode 'fast'"):
        prepare_dataset(list_dataset(dataset), SPEC, ArtifactCache(tmp_path / "cache"), workers=1, decode="fast")
    assert DECODE_MODES == ("exact", "draft")


def test_cache_key_includes_decode_and_the_default_key_is_unchanged(dataset: Path) -> None:
    listing = list_dataset(dataset)
    default = dataset_cache_inputs(listing, SPEC)
    assert "decode" not in default, "exact entries built before the option must keep their key"
    assert content_key(dataset_cache_inputs(listing, SPEC, "exact")) == content_key(default)
    draft = dataset_cache_inputs(listing, SPEC, "draft")
    assert draft["decode"] == "draft"
    assert content_key(draft) != content_key(default)


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_dataset_keeps_exact_and_draft_apart(dataset: Path, tmp_path: Path, workers: int) -> None:
    listing = list_dataset(dataset)
    cache = ArtifactCache(tmp_path / "cache")
    exact = prepare_dataset(listing, SPEC, cache, workers=workers)
    draft = prepare_dataset(listing, SPEC, cache, workers=workers, decode="draft")
    assert exact.decode == "exact" and draft.decode == "draft"
    assert exact.key != draft.key and exact.path != draft.path
    entry = cache.lookup("dataset", dataset_cache_inputs(listing, SPEC, "draft"))
    assert entry is not None and entry.manifest["decode"] == "draft"
    for i, name in enumerate(listing.names):
        assert np.array_equal(exact.images[i], torchvision_pixels(dataset / name, SPEC)), name
        assert np.array_equal(draft.images[i], preprocess_image(dataset / name, SPEC, "draft")), name
    assert not np.array_equal(np.asarray(exact.images), np.asarray(draft.images))
    # A second call reuses each entry rather than rebuilding or mixing them up.
    again = prepare_dataset(listing, SPEC, cache, workers=workers, decode="draft")
    assert again.key == draft.key and again.decode == "draft"


@pytest.mark.slow
def test_draft_on_real_full_resolution_jpegs() -> None:
    """On ImageNet photos draft changes only files whose shorter side is >= 512 (2 x 256)."""
    images = SAMPLE_1000 / "images"
    if not images.is_dir():
        pytest.skip(f"full-resolution ImageNet sample not found at {SAMPLE_1000} (CI keeps ../shared/datasets)")
    spec = PreprocessSpec(resize=256, crop=224, interpolation="bicubic")
    for path in sorted(images.iterdir())[:150]:
        with Image.open(path) as img:
            short = min(img.size)
        same = np.array_equal(preprocess_image(path, spec, "draft"), preprocess_image(path, spec))
        assert same == (short < 512), f"{path.name} (shorter side {short}): draft {'un' if same else ''}changed"
