"""harness.data.coverage: the full ILSVRC2012 val set recognised by content, subsets and how they
were chosen, and sets that are neither (issue 14).

The real 50,000-line ground truth (``../shared/datasets``) checks the stored digests and the
full/subset decisions on the real thing; constructed listings check the rest everywhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.data import (
    DataError,
    DatasetListing,
    list_dataset,
    load_wnids,
    read_labels,
)
from harness.data.coverage import (
    VAL_SET_FILE,
    Coverage,
    ValSet,
    canonical_sha256,
    coverage,
    coverage_of,
    label_file_is_canonical,
    load_val_set,
)
from harness.data.listing import _subset
from harness.specs import SpecError

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
FULL_LABELS = DATASETS / "ilsvrc2012_val_label_50000.txt"
VAL_1300 = DATASETS / "imagenet-val-1300"


def wnid_labels(labels: list[int]) -> list[str]:
    """Class indices (0..999) as wnids (``fixtures/imagenet_wnids.txt`` order): the ImageFolder form."""
    wnids = load_wnids()
    return [wnids[i] for i in labels]


@pytest.fixture(scope="module")
def ground_truth() -> dict[str, int]:
    if not FULL_LABELS.is_file():
        pytest.skip(f"the 50,000-line ILSVRC2012 val ground truth is not at {FULL_LABELS} (../shared/datasets absent)")
    return read_labels(FULL_LABELS)


def listing(labels: dict[str, int], image_dir: Path = Path("/data/val"), label_file: Path | None = None,
            imagefolder: bool = False) -> DatasetListing:
    names = tuple(sorted(labels))
    values = tuple(labels[n] for n in names)
    folders = tuple(wnid_labels(values)) if imagefolder else ()
    return DatasetListing(image_dir=image_dir, label_file=label_file, names=names, labels=values, folders=folders)


# --------------------------------------------------------------------------------------------
# The stored identity, recomputed from the real file


def test_the_stored_digests_are_those_of_the_real_ground_truth(ground_truth: dict[str, int]) -> None:
    val = load_val_set()
    assert val.images == len(ground_truth) == 50000 and val.classes == 1000
    assert canonical_sha256(ground_truth, ground_truth.values()) == val.labels_sha256
    assert canonical_sha256(ground_truth, wnid_labels(list(ground_truth.values()))) == val.wnids_sha256
    assert hashlib.sha256(FULL_LABELS.read_bytes()).hexdigest() in VAL_SET_FILE.read_text()
    assert label_file_is_canonical(FULL_LABELS)


def test_the_full_set_is_recognised_in_both_layouts(ground_truth: dict[str, int]) -> None:
    for imagefolder in (False, True):
        cov = coverage(listing(ground_truth, label_file=None if imagefolder else FULL_LABELS, imagefolder=imagefolder))
        assert cov.kind == "full" and cov.full and cov.images == cov.total == 50000
        assert ("'STEM WNID' lines" if imagefolder else "'STEM LABEL' lines") in cov.recognised_by
        assert cov.describe().startswith("full: all 50,000 ILSVRC2012 val images with the canonical labels (SHA-256")
        assert "matches fixtures/imagenet_val.toml" in cov.describe()
        assert cov.as_record()["dataset_coverage"] == "full" and cov.as_record()["images"] == 50000
        assert cov.not_applicable == ""


def test_the_full_set_is_recognised_whatever_the_extension_and_the_label_files_line_order(
        ground_truth: dict[str, int], tmp_path: Path) -> None:
    png = {name.replace(".JPEG", ".png"): label for name, label in ground_truth.items()}
    assert coverage(listing(png)).full
    shuffled = tmp_path / "val_label.txt"
    shuffled.write_text("".join(f"{n} {label}\n" for n, label in sorted(png.items(), reverse=True)))
    assert label_file_is_canonical(shuffled)


def test_one_wrong_label_or_one_missing_image_is_not_full(ground_truth: dict[str, int], tmp_path: Path) -> None:
    wrong = dict(ground_truth)
    wrong["ILSVRC2012_val_00000001.JPEG"] = (wrong["ILSVRC2012_val_00000001.JPEG"] + 1) % 1000
    cov = coverage(listing(wrong))
    assert cov.kind == "other" and "labels differ from the canonical ones" in cov.recognised_by
    assert cov.not_applicable == "not the ILSVRC2012 validation set (50000 images)"
    edited = tmp_path / "val_label.txt"
    edited.write_text("".join(f"{n} {label}\n" for n, label in wrong.items()))
    assert not label_file_is_canonical(edited)

    fewer = dict(ground_truth)
    del fewer["ILSVRC2012_val_00012345.JPEG"]
    cov = coverage(listing(fewer, label_file=FULL_LABELS))
    assert cov.kind == "subset" and cov.images == 49999 and cov.not_applicable == "subset of 49999 images"
    assert "a file recognised as the full ground truth" in cov.recognised_by
    assert cov.describe().startswith(
        "subset: 49,999 of 50,000 ILSVRC2012 val images, chosen by the images under /data/val"
    )


def test_limit_takes_a_hash_order_subset_and_says_so(ground_truth: dict[str, int]) -> None:
    chosen = _subset(sorted(ground_truth), 5000)
    cov = coverage(listing({n: ground_truth[n] for n in chosen}, label_file=FULL_LABELS), limit=5000)
    assert cov.kind == "subset" and cov.images == 5000
    assert cov.chosen_by.startswith("--limit 5000 (the first 5000 images in SHA-256-of-file-name order")
    assert "--limit 5000" in cov.describe() and "recognised as the full ground truth" in cov.describe()
    # a --limit at or above the set's size leaves the full set
    assert coverage(listing(ground_truth, label_file=FULL_LABELS), limit=60000).full


def test_the_real_1300_image_folder_is_a_subset_chosen_by_the_user() -> None:
    if not (VAL_1300 / "val_label.txt").is_file():
        pytest.skip(f"the 1300 real val images are not at {VAL_1300} (../shared/datasets absent)")
    cov = coverage(list_dataset(VAL_1300))
    assert (cov.kind, cov.images, cov.total) == ("subset", 1300, 50000)
    assert cov.chosen_by == f"the images under {VAL_1300 / 'val'}"
    assert "not checked against the canonical ones" in cov.recognised_by
    if FULL_LABELS.is_file():
        joined = list_dataset(VAL_1300, label_file=FULL_LABELS, on_mismatch="intersect", limit=100)
        cov = coverage(joined, limit=100)
        assert cov.kind == "subset" and cov.images == 100 and "--limit 100" in cov.chosen_by
        assert "leaving out 48700 labels without an image (--on-label-mismatch intersect)" in cov.chosen_by
        assert "recognised as the full ground truth" in cov.recognised_by


# --------------------------------------------------------------------------------------------
# Constructed sets: the same decisions without ../shared


def small_val(labels: dict[str, int], images: int) -> ValSet:
    """A stand-in validation set of ``images`` images whose full ground truth is ``labels``."""
    return ValSet(images=images, classes=1000, labels_sha256=canonical_sha256(labels, labels.values()),
                  wnids_sha256=canonical_sha256(labels, wnid_labels(list(labels.values()))), source="test")


TRUTH = {f"ILSVRC2012_val_{i:08d}.JPEG": (7 * i) % 1000 for i in range(1, 9)}
VAL8 = small_val(TRUTH, 8)


def test_constructed_full_subset_and_other() -> None:
    assert coverage(listing(TRUTH), val=VAL8).full
    assert coverage(listing(TRUTH, imagefolder=True), val=VAL8).full
    part = {n: TRUTH[n] for n in list(TRUTH)[:3]}
    cov = coverage(listing(part), val=VAL8)
    assert (cov.kind, cov.images, cov.total) == ("subset", 3, 8)
    assert cov.as_record() == {"dataset_coverage": "subset", "images": 3, "dataset_coverage_detail": cov.describe()}
    relabelled = {**TRUTH, "ILSVRC2012_val_00000002.JPEG": 0}
    assert coverage(listing(relabelled), val=VAL8).kind == "other"
    moved = listing(TRUTH, imagefolder=True)
    wrong_folder = DatasetListing(moved.image_dir, None, moved.names, moved.labels,
                                  folders=(load_wnids()[999], *moved.folders[1:]))
    assert coverage(wrong_folder, val=VAL8).kind == "other"


@pytest.mark.parametrize(("names", "fragment"), [
    (["n01440764_tench.JPEG", "ILSVRC2012_val_00000001.JPEG"], "1 of them not named like ILSVRC2012 val images"),
    (["ILSVRC2012_val_00000009.JPEG"], "e.g. ILSVRC2012_val_00000009.JPEG"),  # beyond this set's 8 images
    (["ILSVRC2012_val_00000000.JPEG"], "not named like ILSVRC2012 val images"),
    (["ILSVRC2012_val_1.JPEG"], "not named like ILSVRC2012 val images"),
    ([*TRUTH, "ILSVRC2012_val_00000001.png"], "more images than the 8 of the validation set"),
])
def test_images_that_are_not_val_images_are_other(names: list[str], fragment: str) -> None:
    cov = coverage_of(names, [0] * len(names), val=VAL8)
    assert cov.kind == "other" and fragment in cov.recognised_by
    assert cov.describe().startswith(f"other: {len(names)} images that are not the ILSVRC2012 validation set")


def test_limit_is_named_only_when_it_chose_the_images() -> None:
    part = {n: TRUTH[n] for n in list(TRUTH)[:3]}
    assert coverage(listing(part), limit=3, val=VAL8).chosen_by.startswith("--limit 3 ")
    assert coverage(listing(part), limit=5, val=VAL8).chosen_by == "the images under /data/val"


def test_coverage_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(DataError, match="no images"):
        coverage_of([], [], val=VAL8)
    with pytest.raises(DataError, match="2 image names but 1 wnid folders"):
        coverage_of(list(TRUTH)[:2], [0, 0], folders=["n01440764"], val=VAL8)


def test_label_file_recognition_by_content(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"{n} {label}\n" for n, label in reversed(TRUTH.items())))
    assert label_file_is_canonical(path, VAL8)
    other = tmp_path / "other.txt"
    other.write_text("".join(f"{n} {(label + 1) % 1000}\n" for n, label in TRUTH.items()))
    assert not label_file_is_canonical(other, VAL8)
    junk = tmp_path / "junk.txt"
    junk.write_text("not a label file\n")
    assert not label_file_is_canonical(junk, VAL8)
    assert not label_file_is_canonical(tmp_path / "absent.txt", VAL8)


@pytest.mark.parametrize(("text", "message"), [
    ("", r"expected exactly one \[val\] table, found none"),
    ('[val]\nimages = 50000\n[extra]\nx = 1\n', r"expected exactly one \[val\] table, found \['extra', 'val'\]"),
    ('[val]\nimages = 50000\nclasses = 1000\nlabels_sha256 = "abc"\nwnids_sha256 = "abc"\nsource = "x"\n',
     r"\[val\] field 'labels_sha256': expected a hex string of length 64"),
    ('[val]\nimages = 0\nclasses = 1000\n', r"\[val\] field 'images': expected an integer in \[1, 10000000\]"),
    ('[val]\nimages = 50000\nclasses = 1000\nsource = "x"\n', r"labels_sha256/wnids_sha256': expected both digests"),
    (f'[val]\nimages = 5\nclasses = 1000\nlabels_sha256 = "{"a" * 64}"\nwnids_sha256 = "{"b" * 64}"\nsource = "x"\n'
     'colour = "red"\n', r"unknown field\(s\) 'colour'"),
])
def test_a_bad_val_set_fixture_is_a_clear_spec_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "imagenet_val.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_val_set(path)


def test_the_shipped_fixture_loads() -> None:
    val = load_val_set()
    assert val.images == 50000 and len(val.labels_sha256) == len(val.wnids_sha256) == 64
    assert isinstance(Coverage("full", 1, 1, "", "").full, bool)
