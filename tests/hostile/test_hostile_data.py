"""Hostile data folders and label files (issue 25): each case a real listing, and where it is
listed, a real preparation, of a small folder of real ImageNet JPEGs.

A data folder and its label file are outside data (DESIGN.md, "Trust boundaries"). Every case
ends in a result or a :class:`DataError` naming the file (escaped) and the fix, never a traceback:

- labels: ASCII digits only (``1_0``, ``+3``, Unicode digits refused), in range, one per image
  stem (``X.JPEG`` and ``X.png`` refused: predictions join by stem), file names not paths;
- file names: not UTF-8 (handled: listed, prepared, stored as the bytes on disk, shown ``\\xNN``;
  refused in a flat folder, whose UTF-8 label file cannot name them); a line break of any kind
  (refused: no label file or names file line can hold one); other odd characters (handled,
  round-trip through the dataset cache entry and its names file, reused on the next run);
- OSError while listing (symlink loops, permissions, names too long): a DataError with the fix.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from harness.cache import ArtifactCache
from harness.data import (
    DataError,
    coverage,
    dataset_cache_inputs,
    list_dataset,
    load_wnids,
    prepare_dataset,
    read_labels,
)
from harness.data.labels import LINE_BREAKS, shown
from harness.data.prepared import NAMES_FILE, _read_names
from harness.specs import PreprocessSpec

VAL_1300 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "imagenet-val-1300"
ABSENT = "(CI keeps ../shared/datasets beside the checkout; a user's machine may not have it)"
WNIDS = load_wnids()
TENCH, GOLDFISH = WNIDS[0], WNIDS[1]
TINY = PreprocessSpec(resize=8, crop=8)
NOT_UTF8 = b"caf\xe9.JPEG"  # Latin-1 e-acute: what an old tarball or a Windows copy leaves


@pytest.fixture(scope="module")
def jpegs() -> list[Path]:
    """Four real validation JPEGs (read only)."""
    if not (VAL_1300 / "val").is_dir():
        pytest.skip(f"real ImageNet val subset not found at {VAL_1300} {ABSENT}")
    return sorted((VAL_1300 / "val").iterdir())[:4]


def put(folder: Path, name: str | bytes, source: Path) -> None:
    """Copy ``source`` to ``folder/name``; a bytes name is used as the OS holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
    shutil.copyfile(source, target)


def flat(root: Path, jpegs: Sequence[Path], names: Sequence[str | bytes], labels: Mapping[str, object]) -> Path:
    """``root/val/<name>`` for each name and ``root/val_label.txt`` of ``labels``."""
    for i, name in enumerate(names):
        put(root / "val", name, jpegs[i % len(jpegs)])
    (root / "val_label.txt").write_text("".join(f"{n} {lbl}\n" for n, lbl in labels.items()), encoding="utf-8")
    return root


def imagefolder(root: Path, jpegs: Sequence[Path], classes: Mapping[str, Sequence[str | bytes]]) -> Path:
    """``root/val/<wnid>/<name>`` for each wnid and name."""
    i = 0
    for wnid, names in classes.items():
        for name in names:
            put(root / "val" / wnid, name, jpegs[i % len(jpegs)])
            i += 1
    return root


def assert_clean(exc: BaseException) -> str:
    """A DataError's message is one printable line: names escaped, no raw line break or surrogate."""
    message = str(exc)
    assert isinstance(exc, DataError)
    assert not any(c in message for c in LINE_BREAKS), message
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in message), message
    return message


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


def prepare_twice(listing, cache: ArtifactCache):  # type: ignore[no-untyped-def]
    """Prepare ``listing``, then prepare it again: the second run must reuse the entry as is
    (no CacheEntryRebuilt warning, same files), never refuse it as inconsistent."""
    first = prepare_dataset(listing, TINY, cache, workers=1)
    images = first.path / "images.u8"
    stamp = images.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = prepare_dataset(listing, TINY, cache, workers=1)
    assert second.path == first.path and (second.path / "images.u8").stat().st_mtime_ns == stamp
    assert second.names == first.names == listing.names
    assert list(second.labels) == list(listing.labels)
    return second


# --------------------------------------------------------------------------------------------
# Label files: strict parsing


@pytest.mark.parametrize("label", ["1_0", "\u0661\u0662", "\uff11", "+3", "0x1", "1.0", "\u00b2", "1e2", "IV"])
def test_a_label_that_is_not_ascii_digits_is_refused_with_file_and_line(tmp_path: Path, label: str) -> None:
    """int() reads "1_0" as 10, Arabic-Indic "\u0661\u0662" as 12, full-width "\uff11" as 1."""
    path = tmp_path / "val_label.txt"
    path.write_text(f"a.JPEG 3\nb.JPEG {label}\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected an integer class index of ASCII digits 0-9") as err:
        read_labels(path)
    assert f"{path}:2:" in assert_clean(err.value)


@pytest.mark.parametrize("label", ["1000", "-1", "9" * 5000, "00000001000"])
def test_a_label_out_of_range_is_refused_with_file_and_line(tmp_path: Path, label: str) -> None:
    """Including a 5000-digit one: int() refuses more than 4300 digits with a ValueError."""
    path = tmp_path / "val_label.txt"
    path.write_text(f"a.JPEG 3\n\nb.JPEG {label}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"expected a label in \[0, 1000\)") as err:
        read_labels(path, 1000)
    message = assert_clean(err.value)
    assert f"{path}:3:" in message and len(message) < 600


def test_leading_zeros_are_ascii_digits(tmp_path: Path) -> None:
    path = tmp_path / "val_label.txt"
    path.write_text("a.JPEG 007\nb.JPEG 0\n", encoding="utf-8")
    assert read_labels(path) == {"a.JPEG": 7, "b.JPEG": 0}


def test_two_labels_for_one_stem_are_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "val_label.txt"
    path.write_text("X.JPEG 1\nY.JPEG 2\nX.png 3\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_labels(path)
    message = assert_clean(err.value)
    assert f"{path}:3:" in message and "'X.JPEG' (line 1) and 'X.png'" in message and "same stem 'X'" in message


def test_a_path_in_a_label_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "val_label.txt"
    path.write_text("val/a.JPEG 1\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected an image file name, found 'val/a.JPEG', a path"):
        read_labels(path)


# --------------------------------------------------------------------------------------------
# One image per stem in the listing


def test_two_images_of_one_stem_in_a_flat_folder_are_refused_naming_both(tmp_path: Path, jpegs: list[Path]) -> None:
    """X.JPEG and X.png used to be both scored, and the predictions join by stem."""
    root = flat(tmp_path / "ds", jpegs, ["X.JPEG", "X.png", "Y.JPEG"], {"X.JPEG": 1, "Y.JPEG": 2})
    for policy in ("error", "intersect"):
        with pytest.raises(DataError) as err:
            list_dataset(root, on_mismatch=policy)
        message = assert_clean(err.value)
        assert "X.JPEG and X.png" in message and "share a file stem" in message


def test_two_images_of_one_stem_in_two_class_folders_are_refused_naming_both(
    tmp_path: Path, jpegs: list[Path]
) -> None:
    root = imagefolder(tmp_path / "ds", jpegs, {TENCH: ["X.JPEG", "A.JPEG"], GOLDFISH: ["X.jpg"]})
    with pytest.raises(DataError) as err:
        list_dataset(root)
    message = assert_clean(err.value)
    assert f"{TENCH}/X.JPEG and {GOLDFISH}/X.jpg" in message


def test_a_label_out_of_range_is_refused_in_a_real_listing(tmp_path: Path, jpegs: list[Path]) -> None:
    root = flat(tmp_path / "ds", jpegs, ["a.JPEG", "b.JPEG"], {"a.JPEG": 1, "b.JPEG": 1000})
    with pytest.raises(DataError, match=r"val_label.txt:2: expected a label in \[0, 1000\)"):
        list_dataset(root)


# --------------------------------------------------------------------------------------------
# File names that are not UTF-8


def test_a_name_that_is_not_utf8_in_an_imagefolder_tree_is_listed_prepared_and_reused(
    tmp_path: Path, jpegs: list[Path], cache: ArtifactCache
) -> None:
    """Handled: ImageFolder labels come from the folders, so nothing needs to spell the name in
    UTF-8. It used to raise UnicodeEncodeError while keying the cache entry."""
    root = imagefolder(tmp_path / "ds", jpegs, {TENCH: [NOT_UTF8, "plain.JPEG"], GOLDFISH: [b"\xff\xfe.png"]})
    listing = list_dataset(root)
    assert set(listing.names) == {os.fsdecode(NOT_UTF8), "plain.JPEG", os.fsdecode(b"\xff\xfe.png")}
    assert all(p.is_file() for p in listing.image_paths())
    prepared = prepare_twice(listing, cache)
    # Stored as the bytes on disk, one per line.
    assert b"caf\xe9.JPEG\n" in (prepared.path / NAMES_FILE).read_bytes()
    assert coverage(listing).kind == "other"
    assert "'caf\\xe9.JPEG'" in coverage(listing).describe()
    # The same listing with --limit: its hash order takes the bytes too.
    assert len(list_dataset(root, limit=2)) == 2


def test_a_name_that_is_not_utf8_in_a_flat_folder_is_refused_naming_it_escaped(
    tmp_path: Path, jpegs: list[Path]
) -> None:
    """Refused: a label file is UTF-8 text and cannot name the image; under intersect the image
    is one without a label, skipped and counted."""
    root = flat(tmp_path / "ds", jpegs, [NOT_UTF8, "a.JPEG"], {"a.JPEG": 5})
    with pytest.raises(DataError) as err:
        list_dataset(root)
    message = assert_clean(err.value)
    assert "'caf\\xe9.JPEG'" in message and "not UTF-8" in message and "rename them" in message
    listing = list_dataset(root, on_mismatch="intersect")
    assert listing.names == ("a.JPEG",) and listing.skipped_unlabeled == 1


def test_a_label_file_that_is_not_utf8_is_refused(tmp_path: Path, jpegs: list[Path]) -> None:
    root = flat(tmp_path / "ds", jpegs, [NOT_UTF8], {})
    (root / "val_label.txt").write_bytes(NOT_UTF8 + b" 5\n")
    with pytest.raises(DataError, match="not UTF-8 text") as err:
        list_dataset(root)
    assert_clean(err.value)


def test_a_folder_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path, jpegs: list[Path]) -> None:
    root = imagefolder(tmp_path / "ds", jpegs, {TENCH: ["a.JPEG"]})
    os.mkdir(os.path.join(os.fsencode(root / "val"), b"n0144\xff"))
    with pytest.raises(DataError, match="not ILSVRC2012 wnids") as err:
        list_dataset(root)
    assert "'n0144\\xff'" in assert_clean(err.value)


# --------------------------------------------------------------------------------------------
# Line breaks and other odd characters in names

BREAKS = sorted(set(LINE_BREAKS))


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(c):04X}" for c in BREAKS])
def test_a_name_with_a_line_break_is_refused_at_listing_time(tmp_path: Path, jpegs: list[Path], brk: str) -> None:
    """Every character str.splitlines() splits at. Such a name used to give a dataset cache
    entry whose names file read back one name too many: refused as inconsistent on every run."""
    name = f"a{brk}b.JPEG"
    root = imagefolder(tmp_path / "if", jpegs, {TENCH: [name, "c.JPEG"]})
    with pytest.raises(DataError, match="hold a line break") as err:
        list_dataset(root)
    assert shown(name) in assert_clean(err.value) and "rename or remove" in str(err.value)
    root = flat(tmp_path / "flat", jpegs, [name, "c.JPEG"], {"c.JPEG": 1})
    for policy in ("error", "intersect"):
        with pytest.raises(DataError, match="hold a line break") as err:
            list_dataset(root, on_mismatch=policy)
        assert shown(name) in assert_clean(err.value)


ODD = ["tab\there.JPEG", "sp ace.JPEG", "back\\slash.JPEG", "quote'\".JPEG", "ctl\x01\x7f.JPEG",
       "nbsp\u00a0.JPEG", "rtl\u202e.JPEG", "zw\u200b.JPEG", "\u00e9t\u00e9.JPEG", "emoji\U0001f600.png",
       "dots...JPEG", "-dash.jpg", "x" * 250 + ".JPEG"]


def test_names_with_other_odd_characters_round_trip_through_the_cache_entry(
    tmp_path: Path, jpegs: list[Path], cache: ArtifactCache
) -> None:
    """Handled: anything but a line break (and / and NUL, which no name holds) is listed,
    prepared, stored in the names file and read back exactly, and the entry is reused."""
    root = imagefolder(tmp_path / "ds", jpegs, {TENCH: ODD[::2], GOLDFISH: [*ODD[1::2], NOT_UTF8]})
    listing = list_dataset(root)
    assert set(listing.names) == {*ODD, os.fsdecode(NOT_UTF8)}
    prepared = prepare_twice(listing, cache)
    assert _read_names(prepared.path / NAMES_FILE) == listing.names


def test_a_names_file_is_read_by_newline_only() -> None:
    """Entries written before: splitlines() broke names at \\x1c, \\x85, \\u2028... ; the reader
    now splits at \\n only, on bytes (no \\r translation), so they read back as written."""
    import tempfile

    names = ("a\x85b.JPEG", "c\u2028.JPEG", "d\rx.JPEG", "e\x1c.JPEG", "caf\udce9.JPEG", "f.JPEG")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NAMES_FILE
        path.write_bytes(b"".join(os.fsencode(n) + b"\n" for n in names))
        assert _read_names(path) == names


def test_a_listing_built_by_hand_with_a_newline_name_is_refused_before_building(
    tmp_path: Path, jpegs: list[Path], cache: ArtifactCache
) -> None:
    """prepare_dataset's own guard, for a DatasetListing not made by list_dataset."""
    from dataclasses import replace

    listing = list_dataset(imagefolder(tmp_path / "ds", jpegs, {TENCH: ["a.JPEG"]}))
    put(tmp_path / "ds" / "val" / TENCH, "a\nb.JPEG", jpegs[0])
    by_hand = replace(listing, names=("a\nb.JPEG",))
    for call in (lambda: dataset_cache_inputs(by_hand, TINY), lambda: prepare_dataset(by_hand, TINY, cache, workers=1)):
        with pytest.raises(DataError, match="hold a newline") as err:
            call()
        assert "'a\\nb.JPEG'" in assert_clean(err.value)
    assert not (cache.root / "dataset").exists()


# --------------------------------------------------------------------------------------------
# OSError while listing


def loop(path: Path) -> None:
    os.symlink(path.name, path)


@pytest.mark.parametrize("where", ["val", "image", "folder-in-val", "wnid-folder", "image-in-wnid", "root"])
def test_a_symlink_loop_is_a_data_error_naming_the_link(tmp_path: Path, jpegs: list[Path], where: str) -> None:
    """ELOOP used to escape as an OSError traceback from DirEntry.is_file()."""
    root = tmp_path / "ds"
    if where == "val":
        root.mkdir()
        (root / "val_label.txt").write_text("a.JPEG 1\n")
        link = root / "val"
    elif where in ("image", "folder-in-val"):
        flat(root, jpegs, ["a.JPEG"], {"a.JPEG": 1})
        link = root / "val" / ("b.JPEG" if where == "image" else "sub")
    elif where == "wnid-folder":
        imagefolder(root, jpegs, {TENCH: ["a.JPEG"]})
        link = root / "val" / GOLDFISH
    elif where == "image-in-wnid":
        imagefolder(root, jpegs, {TENCH: ["a.JPEG"]})
        link = root / "val" / TENCH / "b.JPEG"
    else:
        link = root
    loop(link)
    with pytest.raises(DataError) as err:
        list_dataset(root)
    message = assert_clean(err.value)
    assert f"cannot read {link} while listing the dataset: Too many levels of symbolic links" in message
    assert "a loop of links): remove the link" in message


def test_a_symlink_loop_beside_val_is_not_read(tmp_path: Path, jpegs: list[Path]) -> None:
    """Only what the listing uses is read: DIR itself is scanned only when DIR/val holds nothing."""
    root = flat(tmp_path / "ds", jpegs, ["a.JPEG"], {"a.JPEG": 1})
    loop(root / "junk")
    assert list_dataset(root).names == ("a.JPEG",)


def test_a_name_too_long_is_a_data_error(tmp_path: Path, jpegs: list[Path]) -> None:
    """ENAMETOOLONG: a dataset path with a component over 255 bytes, and a symlink in val/ whose
    target is (the OS stores it, and every stat of it fails)."""
    with pytest.raises(DataError, match="File name too long; the path is longer than the OS allows"):
        list_dataset(tmp_path / ("x" * 300))
    root = flat(tmp_path / "ds", jpegs, ["a.JPEG"], {"a.JPEG": 1})
    os.symlink("y" * 300, root / "val" / "b.JPEG")
    with pytest.raises(DataError, match=r"cannot read .*b\.JPEG while listing the dataset: File name too long"):
        list_dataset(root)


@pytest.fixture
def unreadable_val(tmp_path: Path, jpegs: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``val/`` that this user may not list: chmod 000, or as root (who reads anything) the
    EACCES the OS would give, raised by os.scandir for that folder only."""
    root = flat(tmp_path / "ds", jpegs, ["a.JPEG"], {"a.JPEG": 1})
    val = root / "val"
    if os.geteuid() != 0:
        val.chmod(0)
        yield root
        val.chmod(0o755)
        return
    real = os.scandir

    def scandir(path=".") -> Iterator[os.DirEntry]:  # type: ignore[no-untyped-def]
        if Path(path) == val:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    yield root


def test_a_folder_that_cannot_be_read_is_a_data_error(unreadable_val: Path) -> None:
    with pytest.raises(DataError) as err:
        list_dataset(unreadable_val)
    message = assert_clean(err.value)
    assert f"cannot read {unreadable_val / 'val'} while listing the dataset: Permission denied" in message
    assert "make it readable (chmod/chown)" in message


def test_a_dangling_symlink_for_the_dataset_says_so(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone", tmp_path / "ds")
    with pytest.raises(DataError, match=r"does not exist \(a symbolic link to nothing\)"):
        list_dataset(tmp_path / "ds")


def test_predictions_read_only_ascii_digits(tmp_path: Path) -> None:
    """Output indices, device folders and result.json figures are ASCII digits (``\\d`` and int()
    take other scripts' digits and underscores)."""
    import json

    import numpy as np

    from harness.judge.predictions import DEVICE_FOLDER, PredictionsError, read_ais_bench_folder, read_result_json

    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "a_0.npy", np.zeros(3, dtype=np.float32))
    np.save(out / "b_\u0660.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(PredictionsError, match="naming"):
        read_ais_bench_folder(out, 3)
    assert DEVICE_FOLDER.match("device1_0") and not DEVICE_FOLDER.match("device\u0661")
    for images, top1 in (("5_000", "77.6%"), ("\u0661\u0662", "77.6%"), ("500", "7_7.6%"), ("500", "\u0667\u0667%"),
                         ("500", "nan%")):
        path = tmp_path / "result.json"
        path.write_text(json.dumps({"value": [{"key": "Number of images", "value": images},
                                              {"key": "Top1 accuracy", "value": top1}]}))
        with pytest.raises(PredictionsError):
            read_result_json(path)
