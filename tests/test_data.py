"""harness.data: label files, dataset layouts, the join by name, preprocessing parity with
torchvision (the reference, used only here), normalization, bad files, and the uint8 cache."""

from __future__ import annotations

import functools
import os
import random
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.cache import ArtifactCache, CacheError, Entry, content_key
from harness.data import (
    DataError,
    DatasetListing,
    NoRoomForDataset,
    PreparedDataset,
    dataset_cache_inputs,
    list_dataset,
    locate_dataset,
    normalize,
    prepare_dataset,
    preprocess_image,
    read_labels,
    synthetic_dataset,
)
from harness.errors import UsageError
from harness.specs import INTERPOLATIONS, PreprocessSpec, load_models

torch = pytest.importorskip("torch", reason="torch is the reference for normalization parity")
T = pytest.importorskip("torchvision.transforms", reason="torchvision is the preprocessing reference")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
VAL_1300 = DATASETS / "imagenet-val-1300"
SAMPLE_1000 = DATASETS / "imagenet-sample-1000"
ABSENT = "(CI keeps ../shared/datasets beside the checkout; a user's machine may not have it)"

BASE = PreprocessSpec(resize=256, crop=224)


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


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
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small read-only-by-convention synthetic dataset shared by tests that do not mutate it."""
    return synthetic_dataset(ArtifactCache(tmp_path_factory.mktemp("synthetic")), 12)


@pytest.fixture
def mutable_dataset(tmp_path: Path, synthetic: Path) -> Path:
    """A private copy of the synthetic dataset that a test may change."""
    out = tmp_path / "ds"
    shutil.copytree(synthetic, out)
    return out


def located(path: Path, label_file: Path | None = None) -> tuple[Path, Path | None]:
    """Where locate_dataset found the images and the label file."""
    layout = locate_dataset(path, label_file)
    return layout.image_dir, layout.label_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height``: enough for PIL's bomb check at open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@functools.cache
def reference_rgb(path: str) -> Image.Image:
    """torchvision's ImageFolder ``pil_loader``, cached: several specs reuse one decode."""
    with open(path, "rb") as fh:
        img = Image.open(fh)
        return img.convert("RGB")


def reference_pixels(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """The torchvision pipeline the cache must reproduce bit for bit."""
    mode = T.InterpolationMode(spec.interpolation)
    if spec.method == "resize_crop":
        tf = T.Compose([T.Resize(spec.resize, interpolation=mode), T.CenterCrop(spec.crop)])
    elif spec.method == "squash_crop":
        tf = T.Compose([T.Resize((spec.resize, spec.resize), interpolation=mode), T.CenterCrop(spec.crop)])
    else:
        raise AssertionError(spec.method)
    return np.asarray(tf(reference_rgb(str(path)))).transpose(2, 0, 1)


def reference_ecentercrop(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """ResNeSt's upstream ``ECenterCrop`` (crop imgsize/(imgsize+32) of the short side, resize)."""
    img = reference_rgb(str(path))
    width, height = img.size
    crop_size = float(spec.crop) / spec.resize * min(width, height)
    crop_top = int(round((height - crop_size) / 2.0))
    crop_left = int(round((width - crop_size) / 2.0))
    img = img.crop((crop_left, crop_top, crop_left + crop_size, crop_top + crop_size))
    resize = T.Resize((spec.crop, spec.crop), interpolation=T.InterpolationMode(spec.interpolation))
    return np.asarray(resize(img)).transpose(2, 0, 1)


def key_of(listing: DatasetListing, spec: PreprocessSpec = BASE) -> str:
    return content_key(dataset_cache_inputs(listing, spec))


class RecordingCache(ArtifactCache):
    """An ArtifactCache that remembers every entry it handed out."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.entries: list[Entry] = []

    def get_or_build(
        self,
        kind: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        lock_timeout: float = -1,
    ) -> Entry:
        entry = super().get_or_build(kind, inputs, build, lock_timeout)
        self.entries.append(entry)
        return entry


# --------------------------------------------------------------------------------------------
# Label files


def test_read_labels_good_file(tmp_path: Path) -> None:
    path = write(tmp_path / "l.txt", "\ufeffa.JPEG 0\r\n\n  b.JPEG\t999  \n\nc.jpeg 65\n")
    assert read_labels(path) == {"a.JPEG": 0, "b.JPEG": 999, "c.jpeg": 65}


def test_read_labels_lone_cr_line_ends(tmp_path: Path) -> None:
    """Classic-Mac line ends (a lone CR) end lines too, and errors count lines the same way."""
    path = write(tmp_path / "l.txt", "a.JPEG 0\rb.JPEG 1\r\rc.JPEG 2\r")
    assert read_labels(path) == {"a.JPEG": 0, "b.JPEG": 1, "c.JPEG": 2}
    bad = write(tmp_path / "bad.txt", "a.JPEG 0\rb.JPEG 1\rc.JPEG x\r")
    with pytest.raises(DataError, match=r"bad.txt:3: expected an integer"):
        read_labels(bad)


def test_read_labels_real_file_agrees_with_the_50000_ground_truth(val_1300: Path) -> None:
    subset = read_labels(val_1300 / "val_label.txt")
    full = read_labels(DATASETS / "ilsvrc2012_val_label_50000.txt")
    assert len(subset) == 1300 and len(full) == 50000
    assert subset["ILSVRC2012_val_00000347.JPEG"] == 472
    assert all(full[name] == label for name, label in subset.items())


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a.JPEG 1\nb.JPEG\n", 2, "expected 2 fields"),
        ("a.JPEG 1 7\n", 1, "expected 2 fields"),
        ("\n\na.JPEG n01440764\n", 3, "expected an integer"),
        ("a.JPEG 1.0\n", 1, "expected an integer"),
        ("a.JPEG 1\nb.JPEG 1000\n", 2, "expected a label in [0, 1000)"),
        ("a.JPEG -1\n", 1, "expected a label in [0, 1000)"),
        ("a.JPEG 1\n\nb.JPEG 2\na.JPEG 3\n", 4, "labelled twice (first on line 1)"),
    ],
    ids=["missing-label", "extra-field", "synset-not-int", "float", "too-large", "negative", "duplicate"],
)
def test_read_labels_rejects_bad_lines_with_line_number(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path / "labels.txt", text)
    with pytest.raises(DataError) as err:
        read_labels(path)
    assert f"{path}:{line}:" in str(err.value)
    assert fragment in str(err.value)


def test_read_labels_respects_num_classes(tmp_path: Path) -> None:
    path = write(tmp_path / "l.txt", "a.JPEG 9\nb.JPEG 10\n")
    with pytest.raises(DataError, match=r":2: expected a label in \[0, 10\)"):
        read_labels(path, num_classes=10)
    assert read_labels(path, num_classes=11) == {"a.JPEG": 9, "b.JPEG": 10}


@pytest.mark.parametrize("text", ["", "\n  \n\t\n"], ids=["zero-bytes", "blank-lines"])
def test_read_labels_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "l.txt", text)
    with pytest.raises(DataError, match="is empty.*--imagenet-labels"):
        read_labels(path)


def test_read_labels_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found.*--imagenet-labels FILE"):
        read_labels(tmp_path / "nope.txt")


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_]{1,20}\.JPEG", fullmatch=True), st.integers(0, 999), min_size=1))
def test_read_labels_round_trips(mapping: dict[str, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.txt"
        path.write_text("".join(f"{n} {v}\n" for n, v in mapping.items()))
        assert read_labels(path) == mapping


# --------------------------------------------------------------------------------------------
# Dataset layouts


def test_locate_dataset_val_subdir_layout(val_1300: Path) -> None:
    assert located(val_1300) == (val_1300 / "val", val_1300 / "val_label.txt")


def test_locate_dataset_flat_layout(synthetic: Path) -> None:
    assert located(synthetic) == (synthetic, synthetic / "val_label.txt")


def test_locate_dataset_explicit_label_file_overrides(tmp_path: Path, synthetic: Path) -> None:
    elsewhere = write(tmp_path / "other" / "labels.txt", "x.JPEG 1\n")
    assert located(synthetic, elsewhere) == (synthetic, elsewhere)
    nested = tmp_path / "nested"
    shutil.copytree(synthetic, nested / "val")
    (nested / "val" / "val_label.txt").unlink()
    assert located(nested, elsewhere) == (nested / "val", elsewhere)


def test_locate_dataset_label_file_inside_val_dir(tmp_path: Path, synthetic: Path) -> None:
    shutil.copytree(synthetic, tmp_path / "root" / "val")
    assert located(tmp_path / "root") == (tmp_path / "root" / "val", tmp_path / "root" / "val" / "val_label.txt")


def test_locate_dataset_errors(tmp_path: Path, synthetic: Path) -> None:
    cases: list[tuple[Path, Path | None, str]] = []
    cases.append((tmp_path / "missing", None, "does not exist"))
    cases.append((write(tmp_path / "file.txt", "x"), None, "is a file, not a directory"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", None, "is empty"))
    write(tmp_path / "noimages" / "val_label.txt", "a.JPEG 1\n")
    cases.append((tmp_path / "noimages", None, "no .JPEG/.jpg/.png files"))
    write(tmp_path / "classnames" / "tench" / "x.JPEG", "x")
    cases.append((tmp_path / "classnames", None, "none named after an ILSVRC2012 wnid: tench"))
    nolabels = tmp_path / "nolabels"
    shutil.copytree(synthetic, nolabels)
    (nolabels / "val_label.txt").unlink()
    cases.append((nolabels, None, "no val_label.txt"))
    cases.append((synthetic, tmp_path / "absent.txt", "does not exist or is not a file"))
    for path, labels, fragment in cases:
        with pytest.raises(DataError) as err:
            located(path, labels)
        message = str(err.value)
        assert fragment in message, (path, message)
        assert "--imagenet" in message, (path, message)


def test_locate_dataset_points_to_parent_when_given_the_val_dir(tmp_path: Path, synthetic: Path) -> None:
    shutil.copytree(synthetic, tmp_path / "root" / "val")
    shutil.move(tmp_path / "root" / "val" / "val_label.txt", tmp_path / "root" / "val_label.txt")
    with pytest.raises(DataError, match=f"did you mean --imagenet {tmp_path / 'root'}"):
        located(tmp_path / "root" / "val")


# --------------------------------------------------------------------------------------------
# Join by name, mismatch policy, limit


def test_labels_are_joined_by_name_not_order(tmp_path: Path, val_1300: Path) -> None:
    lines = (val_1300 / "val_label.txt").read_text().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = write(tmp_path / "shuffled.txt", "\n".join(lines) + "\n")
    a = list_dataset(val_1300)
    b = list_dataset(val_1300, label_file=shuffled)
    assert a.names == b.names and a.labels == b.labels
    assert list(a.names) == sorted(a.names) and len(a.names) == 1300
    assert a.labels[a.names.index("ILSVRC2012_val_00000347.JPEG")] == 472
    assert (a.skipped_unlabeled, a.skipped_missing) == (0, 0)


def test_image_extensions_and_hidden_files(mutable_dataset: Path) -> None:
    shutil.copy(mutable_dataset / "synthetic_00000001.JPEG", mutable_dataset / "extra.jpg")
    shutil.copy(mutable_dataset / "synthetic_00000001.JPEG", mutable_dataset / "._synthetic_00000001.JPEG")
    Image.new("RGB", (8, 8)).save(mutable_dataset / "extra2.PNG")
    write(mutable_dataset / "notes.txt", "not an image")
    with (mutable_dataset / "val_label.txt").open("a") as fh:
        fh.write("extra.jpg 3\nextra2.PNG 4\n")
    listing = list_dataset(mutable_dataset)
    assert "extra.jpg" in listing.names and "extra2.PNG" in listing.names
    assert len(listing) == 14


def test_mismatch_is_an_error_by_default_with_counts(mutable_dataset: Path) -> None:
    labels = (mutable_dataset / "val_label.txt").read_text().splitlines()
    write(mutable_dataset / "val_label.txt", "\n".join(labels[:9] + ["gone_1.JPEG 1", "gone_2.JPEG 2"]) + "\n")
    with pytest.raises(DataError) as err:
        list_dataset(mutable_dataset)
    message = str(err.value)
    assert "3 image(s) have no label" in message
    assert "synthetic_00000010.JPEG, synthetic_00000011.JPEG, synthetic_00000012.JPEG" in message
    assert "2 label(s) name images that are not there (e.g. gone_1.JPEG, gone_2.JPEG)" in message
    assert "--imagenet-labels FILE" in message and "intersect" in message

    listing = list_dataset(mutable_dataset, on_mismatch="intersect")
    assert len(listing) == 9
    assert (listing.skipped_unlabeled, listing.skipped_missing) == (3, 2)
    assert listing.labels == tuple(i % 1000 for i in range(9))


def test_mismatch_examples_are_capped_at_five(tmp_path: Path, synthetic: Path) -> None:
    text = "".join(f"other_{i}.JPEG 1\n" for i in range(20)) + "synthetic_00000001.JPEG 0\n"
    labels = write(tmp_path / "l.txt", text)
    with pytest.raises(DataError, match=r"11 image\(s\) have no label .*, \.\.\.\) and 20 label\(s\)"):
        list_dataset(synthetic, label_file=labels)


def test_no_overlap_is_an_error_even_when_intersecting(tmp_path: Path, synthetic: Path) -> None:
    labels = write(tmp_path / "l.txt", "other.JPEG 1\n")
    with pytest.raises(DataError, match="no image in .* has a label"):
        list_dataset(synthetic, label_file=labels, on_mismatch="intersect")


def test_bad_on_mismatch_and_limit(synthetic: Path) -> None:
    with pytest.raises(DataError, match="on_mismatch must be one of error, intersect"):
        list_dataset(synthetic, on_mismatch="ignore")
    for bad in (0, -3):
        with pytest.raises(DataError, match="limit must be a positive number"):
            list_dataset(synthetic, limit=bad)


def test_limit_is_deterministic_nested_and_sorted(val_1300: Path) -> None:
    first = list_dataset(val_1300, limit=50)
    again = list_dataset(val_1300, limit=50)
    larger = list_dataset(val_1300, limit=200)
    assert first == again
    assert len(first) == 50 and list(first.names) == sorted(first.names)
    assert set(first.names) <= set(larger.names)
    full = list_dataset(val_1300)
    assert (
        dict(zip(first.names, first.labels, strict=True)).items()
        <= dict(zip(full.names, full.labels, strict=True)).items()
    )
    # Not the first 50 files: a hash-ordered subset is spread over the whole listing.
    assert first.names != full.names[:50]
    assert max(first.names) > full.names[650]
    assert list_dataset(val_1300, limit=5000).names == full.names


def test_limit_is_unbiased_on_a_class_sorted_dataset(sample_1000: Path) -> None:
    listing = list_dataset(sample_1000 / "images", label_file=sample_1000 / "labels.txt", limit=100)
    assert len(set(listing.labels)) == 100
    assert 300 < float(np.mean(listing.labels)) < 700


# --------------------------------------------------------------------------------------------
# preprocess_image parity with torchvision


def _registry_specs() -> list[PreprocessSpec]:
    specs = []
    for model in load_models().values():
        specs += [model.preprocess, *model.preprocess_variants.values()]
    return specs


def _spec_id(spec: PreprocessSpec) -> str:
    return f"{spec.method}-{spec.resize}-{spec.crop}-{spec.interpolation}"


def _parity_specs(methods: tuple[str, ...]) -> list[PreprocessSpec]:
    specs = {
        _spec_id(s): PreprocessSpec(s.resize, s.crop, s.interpolation, s.method)
        for s in _registry_specs()
        if s.method in methods
    }
    for method in methods:
        for interp in INTERPOLATIONS:
            s = PreprocessSpec(256, 224, interp, method)
            specs.setdefault(_spec_id(s), s)
    # Resize to the val images' own 227 (a no-op resize) and a crop larger than the resize (padding).
    for s in (PreprocessSpec(227, 224, "bilinear", methods[0]), PreprocessSpec(100, 128, "bilinear", methods[0])):
        specs.setdefault(_spec_id(s), s)
    return list(specs.values())


RESIZE_SPECS = _parity_specs(("resize_crop", "squash_crop"))
CROP_RESIZE_SPECS = _parity_specs(("crop_resize",))


def test_parity_specs_cover_every_registry_interpolation() -> None:
    used = {(s.method, s.interpolation) for s in _registry_specs()}
    covered = {(s.method, s.interpolation) for s in RESIZE_SPECS + CROP_RESIZE_SPECS}
    assert used <= covered


@pytest.fixture(scope="session")
def val_images(val_1300: Path) -> list[Path]:
    listing = list_dataset(val_1300, limit=40)
    return [listing.image_dir / n for n in listing.names]


@pytest.fixture(scope="session")
def sample_images(sample_1000: Path) -> list[Path]:
    """40 full-resolution images: every non-RGB one (23 grayscale here) plus RGB ones."""
    paths = sorted((sample_1000 / "images").iterdir())
    odd = []
    for p in paths:
        with Image.open(p) as img:
            if img.mode != "RGB":
                odd.append(p)
    assert odd, "expected some grayscale images in imagenet-sample-1000"
    rgb = [p for p in paths if p not in odd]
    return odd + rgb[:: max(1, len(rgb) // max(1, 40 - len(odd)))][: max(0, 40 - len(odd))]


@pytest.fixture(scope="session")
def mode_images(tmp_path_factory: pytest.TempPathFactory, synthetic: Path) -> list[Path]:
    """Every colour mode torchvision's loader converts: CMYK JPEG, palette, RGBA, LA, L, 1, tiny."""
    out = tmp_path_factory.mktemp("modes")
    with Image.open(synthetic / "synthetic_00000001.JPEG") as src:
        rgb = src.convert("RGB")
    made = []
    for name, img, fmt in [
        ("cmyk.jpg", rgb.convert("CMYK"), "JPEG"),
        ("palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        ("rgba.png", rgb.convert("RGBA"), "PNG"),
        ("la.png", rgb.convert("LA"), "PNG"),
        ("gray.jpg", rgb.convert("L"), "JPEG"),
        ("bilevel.png", rgb.convert("1"), "PNG"),
        ("tiny.png", rgb.resize((7, 5)), "PNG"),
        ("portrait.jpg", rgb.resize((201, 403)), "JPEG"),
    ]:
        img.save(out / name, format=fmt)
        made.append(out / name)
    with Image.open(out / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    return made


SOURCES = ["val_images", "sample_images", "mode_images"]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("spec", RESIZE_SPECS, ids=_spec_id)
def test_preprocess_matches_torchvision_bit_exact(
    request: pytest.FixtureRequest, source: str, spec: PreprocessSpec
) -> None:
    for path in request.getfixturevalue(source):
        ours = preprocess_image(path, spec)
        assert ours.dtype == np.uint8 and ours.shape == (3, spec.crop, spec.crop) and ours.flags.c_contiguous
        np.testing.assert_array_equal(ours, reference_pixels(path, spec), err_msg=str(path))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("spec", CROP_RESIZE_SPECS, ids=_spec_id)
def test_crop_resize_matches_resnest_ecentercrop(
    request: pytest.FixtureRequest, source: str, spec: PreprocessSpec
) -> None:
    for path in request.getfixturevalue(source):
        ours = preprocess_image(path, spec)
        assert ours.shape == (3, spec.crop, spec.crop)
        np.testing.assert_array_equal(ours, reference_ecentercrop(path, spec), err_msg=str(path))


def test_crop_resize_default_is_resnest_0875() -> None:
    assert 224 / 256 == 224 / (224 + 32)


def test_padding_actually_happens_when_crop_exceeds_resize(mode_images: list[Path]) -> None:
    tiny = next(p for p in mode_images if p.name == "tiny.png")
    out = preprocess_image(tiny, PreprocessSpec(100, 128, "bilinear", "squash_crop"))
    assert (out[:, :14, :] == 0).all() and (out[:, -14:, :] == 0).all()


def test_preprocess_rejects_unknown_method_and_interpolation(synthetic: Path) -> None:
    path = synthetic / "synthetic_00000001.JPEG"
    with pytest.raises(DataError, match="unknown preprocessing method 'stretch'"):
        preprocess_image(path, PreprocessSpec(256, 224, method="stretch"))
    with pytest.raises(DataError, match="unknown interpolation 'area'"):
        preprocess_image(path, PreprocessSpec(256, 224, interpolation="area"))


# --------------------------------------------------------------------------------------------
# normalize


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ((0.0, 0.1, 0.9), (1.0, 0.3, 2.0)),
    ],
    ids=["imagenet", "half", "odd"],
)
def test_normalize_bit_exact_with_totensor_normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    batch = np.random.default_rng(0).integers(0, 256, size=(5, 3, 13, 17), dtype=np.uint8)
    batch[0] = 0
    batch[1] = 255
    reference = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    expected = torch.stack([reference(Image.fromarray(x.transpose(1, 2, 0))) for x in batch]).numpy()
    ours = normalize(batch, mean, std)
    assert ours.dtype == np.float32 and ours.shape == batch.shape
    np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32))


def test_full_pipeline_matches_torchvision_on_real_images(val_images: list[Path]) -> None:
    spec = PreprocessSpec(256, 224, "bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tf = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])
    paths = val_images[:8]
    expected = torch.stack([tf(reference_rgb(str(p))) for p in paths]).numpy()
    ours = normalize(np.stack([preprocess_image(p, spec) for p in paths]), spec.mean, spec.std)
    np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32))


def test_normalize_rejects_float_input() -> None:
    with pytest.raises(DataError, match=r"\(N, 3, H, W\) uint8"):
        normalize(np.zeros((1, 3, 4, 4), np.float32), (0, 0, 0), (1, 1, 1))


# --------------------------------------------------------------------------------------------
# Bad image files


@pytest.fixture
def bad_files(tmp_path: Path, synthetic: Path) -> dict[str, Path]:
    good = (synthetic / "synthetic_00000002.JPEG").read_bytes()
    files = {
        "truncated": tmp_path / "truncated.JPEG",
        "corrupt": tmp_path / "corrupt.JPEG",
        "zero-byte": tmp_path / "zero.JPEG",
        "not-an-image": tmp_path / "text.JPEG",
    }
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["corrupt"].write_bytes(good[:20] + bytes(range(256)) * 8)
    files["zero-byte"].write_bytes(b"")
    files["not-an-image"].write_text("<html>404 not found</html>")
    return files


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "zero-byte", "not-an-image"])
def test_undecodable_files_raise_data_error_naming_the_file(bad_files: dict[str, Path], kind: str) -> None:
    with pytest.raises(DataError) as err:
        preprocess_image(bad_files[kind], BASE)
    assert str(bad_files[kind]) in str(err.value)
    assert "cannot decode image" in str(err.value)


def test_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent.JPEG not found"):
        preprocess_image(tmp_path / "absent.JPEG", BASE)


@pytest.mark.parametrize(
    "side",
    [10_000, 20_000],
    ids=["over-limit-warning", "over-twice-limit-error"],
)
def test_decompression_bombs_raise_data_error(tmp_path: Path, side: int) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    path = png_header_only(tmp_path / f"bomb_{side}.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bomb must not leak as a warning either
        with pytest.raises(DataError) as err:
            preprocess_image(path, BASE)
    message = str(err.value)
    assert str(path) in message and "decompression bomb" in message
    assert f"{side * side} pixels" in message and f"{path.stat().st_size} bytes" in message
    assert Image.MAX_IMAGE_PIXELS == limit_before


# --------------------------------------------------------------------------------------------
# prepare_dataset and the cache


def test_prepare_dataset_end_to_end_with_two_workers(tmp_path: Path, val_1300: Path) -> None:
    listing = list_dataset(val_1300, limit=100)
    spec = PreprocessSpec(256, 224, "bicubic")
    cache = RecordingCache(tmp_path / "cache")
    prepared = prepare_dataset(listing, spec, cache, workers=2)

    assert cache.entries[-1].built_here and cache.entries[-1].manifest["workers"] == 2
    assert isinstance(prepared.images, np.memmap) and not prepared.images.flags.writeable
    assert prepared.images.shape == (100, 3, 224, 224) and prepared.images.dtype == np.uint8
    assert len(prepared) == 100 and prepared.names == listing.names
    assert prepared.labels.dtype == np.int64 and tuple(prepared.labels) == listing.labels
    assert prepared.key == key_of(listing, spec) and prepared.path == cache.entries[-1].path
    assert cache.entries[-1].manifest["shape"] == [100, 3, 224, 224]
    assert (prepared.path / "images.u8").stat().st_size == 100 * 3 * 224 * 224
    for i, name in enumerate(listing.names):
        expected = preprocess_image(listing.image_dir / name, spec)
        np.testing.assert_array_equal(prepared.images[i], expected, err_msg=name)

    starts, batches = zip(*prepared.batches(32), strict=True)
    assert starts == (0, 32, 64, 96) and [len(b) for b in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate(batches), normalize(np.asarray(prepared.images), spec.mean, spec.std))

    # Warm rerun: found in the cache, not rebuilt, same bytes.
    mtime = (prepared.path / "images.u8").stat().st_mtime_ns
    again = prepare_dataset(list_dataset(val_1300, limit=100), spec, cache, workers=2)
    assert cache.entries[-1].built_here is False
    assert again.key == prepared.key and (again.path / "images.u8").stat().st_mtime_ns == mtime


def test_prepare_dataset_in_process_and_warm_rerun_skips_build(
    tmp_path: Path, synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = list_dataset(synthetic)
    cache = RecordingCache(tmp_path / "cache")
    prepared = prepare_dataset(listing, BASE, cache, workers=1)
    assert cache.entries[-1].built_here
    for i, name in enumerate(listing.names):
        np.testing.assert_array_equal(prepared.images[i], preprocess_image(synthetic / name, BASE))

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm prepare_dataset must not preprocess anything")

    monkeypatch.setattr("harness.data.prepared._preprocess_chunk", must_not_run)
    warm = prepare_dataset(list_dataset(synthetic), BASE, cache, workers=1)
    assert cache.entries[-1].built_here is False and warm.key == prepared.key
    np.testing.assert_array_equal(warm.images, prepared.images)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_image_fails_the_build_and_publishes_nothing(
    tmp_path: Path, mutable_dataset: Path, workers: int
) -> None:
    (mutable_dataset / "synthetic_00000009.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really")
    cache = ArtifactCache(tmp_path / "cache")
    listing = list_dataset(mutable_dataset)
    with pytest.raises(DataError, match="synthetic_00000009.JPEG.*cannot decode image"):
        prepare_dataset(listing, BASE, cache, workers=workers)
    assert cache.lookup("dataset", dataset_cache_inputs(listing, BASE)) is None
    leftovers = [p.name for p in (tmp_path / "cache" / "dataset").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_prepare_dataset_rejects_bad_arguments(tmp_path: Path, synthetic: Path) -> None:
    listing = list_dataset(synthetic)
    with pytest.raises(DataError, match="workers must be positive"):
        prepare_dataset(listing, BASE, ArtifactCache(tmp_path), workers=0)
    prepared = prepare_dataset(listing, BASE, ArtifactCache(tmp_path), workers=1)
    with pytest.raises(DataError, match="batch_size must be positive"):
        next(prepared.batches(0))
    assert isinstance(prepared, PreparedDataset)


def test_a_dataset_that_cannot_fit_is_a_usage_error_of_the_cache(
    tmp_path: Path, synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known before any decode: the user's to fix (--cache-dir), so a DataError (a usage error,
    reported without traceback), and a CacheError like the cache's other no-room errors."""
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000))
    with pytest.raises(NoRoomForDataset, match=r"needs 1\.9 MB at .*, 0\.0 MB free") as err:
        prepare_dataset(list_dataset(synthetic), BASE, ArtifactCache(tmp_path / "cache"), workers=1)
    assert isinstance(err.value, DataError) and isinstance(err.value, UsageError)
    assert isinstance(err.value, CacheError)


def test_cache_key_is_stable_for_identical_listings(synthetic: Path) -> None:
    a, b = list_dataset(synthetic), list_dataset(synthetic)
    assert a.fingerprint() == b.fingerprint()
    assert key_of(a) == key_of(b)
    # Normalization is applied per batch, so mean/std must not split the cache.
    assert key_of(a, PreprocessSpec(256, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))) == key_of(a)


@pytest.mark.parametrize(
    "changed",
    [
        PreprocessSpec(288, 224),
        PreprocessSpec(256, 192),
        PreprocessSpec(256, 224, interpolation="bicubic"),
        PreprocessSpec(256, 224, method="squash_crop"),
    ],
    ids=["resize", "crop", "interpolation", "method"],
)
def test_cache_key_changes_with_each_preprocessing_field(synthetic: Path, changed: PreprocessSpec) -> None:
    listing = list_dataset(synthetic)
    assert key_of(listing, changed) != key_of(listing)


def test_cache_key_changes_with_dataset_content(mutable_dataset: Path) -> None:
    base = key_of(list_dataset(mutable_dataset))
    keys = {"base": base}

    keys["file list"] = key_of(list_dataset(mutable_dataset, limit=11))

    labels = mutable_dataset / "val_label.txt"
    original = labels.read_text()
    labels.write_text(original.replace("synthetic_00000003.JPEG 2", "synthetic_00000003.JPEG 5"))
    changed_labels = list_dataset(mutable_dataset)
    assert changed_labels.names == list_dataset(mutable_dataset).names
    keys["label content"] = key_of(changed_labels)
    labels.write_text(original)
    assert key_of(list_dataset(mutable_dataset)) == base

    image = mutable_dataset / "synthetic_00000004.JPEG"
    st0 = image.stat()
    os.utime(image, ns=(st0.st_atime_ns, st0.st_mtime_ns + 1_000_000_000))
    keys["mtime"] = key_of(list_dataset(mutable_dataset))
    with image.open("ab") as fh:
        fh.write(b"\0")
    os.utime(image, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # same mtime as at first: size alone differs
    keys["size"] = key_of(list_dataset(mutable_dataset))

    shutil.copy(mutable_dataset / "synthetic_00000001.JPEG", mutable_dataset / "added.JPEG")
    labels.write_text(original + "added.JPEG 7\n")
    keys["added image"] = key_of(list_dataset(mutable_dataset))

    assert len(set(keys.values())) == len(keys), keys


# --------------------------------------------------------------------------------------------
# Synthetic dataset


def test_synthetic_dataset_is_deterministic(tmp_path: Path, synthetic: Path) -> None:
    other = synthetic_dataset(ArtifactCache(tmp_path / "again"), 12)
    def data_files(root: Path) -> list[str]:  # not the cache's manifest, which says when it was built
        return sorted(p.name for p in root.iterdir() if p.suffix == ".JPEG" or p.name == "val_label.txt")

    names = data_files(synthetic)
    assert len(names) == 13 and names == data_files(other)
    for name in names:
        assert (synthetic / name).read_bytes() == (other / name).read_bytes(), name
    different = synthetic_dataset(ArtifactCache(tmp_path / "seed1"), 3, seed=1)
    assert (different / "synthetic_00000001.JPEG").read_bytes() != (synthetic / "synthetic_00000001.JPEG").read_bytes()
    # A larger set starts with the same images: each image depends only on (seed, index).
    larger = synthetic_dataset(ArtifactCache(tmp_path / "larger"), 14)
    assert (larger / "synthetic_00000012.JPEG").read_bytes() == (synthetic / "synthetic_00000012.JPEG").read_bytes()


def test_synthetic_dataset_contents(synthetic: Path) -> None:
    listing = list_dataset(synthetic)
    assert listing.names[0] == "synthetic_00000001.JPEG" and len(listing) == 12
    assert listing.labels == tuple(range(12))
    modes, sides = set(), []
    for name in listing.names:
        with Image.open(synthetic / name) as img:
            assert img.format == "JPEG"
            modes.add(img.mode)
            sides += img.size
    assert modes == {"RGB", "L"}
    assert 200 <= min(sides) and max(sides) <= 600 and len(set(sides)) > 10
    assert not [p for p in synthetic.parent.iterdir() if ".tmp-" in p.name]  # nothing half-built left


def test_synthetic_dataset_is_a_cache_entry_built_once(
    tmp_path: Path, synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded images are a "synthetic" entry of the cache (its lock, its atomic publish):
    the same files in every cache, listed like any dataset, reused by the next call,
    and a leftover of a killed build is removed by the next build of that entry."""
    cache = RecordingCache(tmp_path / "cache")
    (cache.root / "synthetic").mkdir(parents=True)
    key = content_key({"version": 1, "count": 12, "seed": 0})
    stale = cache.root / "synthetic" / f".tmp-{key}-otherhost-1"
    stale.mkdir()
    path = synthetic_dataset(cache, 12)
    assert cache.entries[-1].built_here and path == cache.root / "synthetic" / key
    assert not stale.exists()
    for name in sorted(p.name for p in synthetic.iterdir() if p.suffix == ".JPEG"):
        assert (path / name).read_bytes() == (synthetic / name).read_bytes(), name
    assert (path / "val_label.txt").read_text() == (synthetic / "val_label.txt").read_text()
    listing = list_dataset(path)
    assert len(listing) == 12 and listing.labels == tuple(range(12))

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished synthetic entry must not be generated again")

    monkeypatch.setattr("harness.data.synthetic._write_images", must_not_run)
    assert synthetic_dataset(cache, 12) == path and cache.entries[-1].built_here is False
    with pytest.raises(AssertionError, match="generated again"):
        synthetic_dataset(cache, 12, seed=1)
    with pytest.raises(DataError, match="must be positive"):
        synthetic_dataset(cache, 0)
