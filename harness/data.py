"""ImageNet listing, label files, and preprocessing into a content-addressed uint8 cache.

The data path is: a directory of JPEGs plus a ModelZoo label file (``name label`` per line), or
an ImageFolder tree (``val/<wnid>/*.JPEG``, the class given by the folder)
-> :func:`list_dataset` (labels joined to files by name, never by order) -> :func:`prepare_dataset`
(every image decoded and resized once, in parallel, into one raw uint8 NCHW file inside an
:class:`~harness.cache.ArtifactCache` entry) -> :meth:`PreparedDataset.batches` (normalized to
float32 per batch). Storing uint8 loses nothing: after resize and crop the pixels *are* uint8,
exactly what PIL produces, and normalization is applied the way torchvision's
``ToTensor() + Normalize()`` applies it.

This module must stay light: it never imports torch or torchvision (workers import it in fresh
processes, and the reference pipeline is only needed by the tests).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from harness.cache import DEFAULT_CACHE_ENV, ArtifactCache, CacheError
from harness.errors import UsageError
from harness.progress import progress
from harness.specs import FIXTURES_DIR, RESIZE_METHODS, PreprocessSpec

# Bump when the layout of a "dataset" cache entry or the pixel pipeline changes: old entries then
# stop matching instead of being misread.
CACHE_FORMAT = 2  # 2: keyed by the listed labels, not the label file's bytes
LABEL_FILE_NAME = "val_label.txt"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MISMATCH_POLICIES = ("error", "intersect")
# The class order of an ImageFolder tree: ILSVRC2012's wnids sorted (fixtures/README.md).
WNIDS_FILE = FIXTURES_DIR / "imagenet_wnids.txt"
WNIDS_SOURCE = "fixtures/imagenet_wnids.txt"
_WNID = re.compile(r"n[0-9]{8}")
# How JPEGs are decoded. "exact" (default): the full decode torchvision does, bit for bit.
# "draft": libjpeg's DCT-domain downscaling by 1/2, 1/4 or 1/8 (PIL ``Image.draft``) wherever the
# file is at least twice the resize target; about twice as fast on such photos, but different
# pixels, so opt-in only (README "Harness speed" has its measured speed and accuracy effect).
DECODE_MODES = ("exact", "draft")
# Small enough that the progress bar moves and a 2-core run stays balanced, large enough that
# per-task overhead (pickling a list of paths) is negligible next to decoding 64 JPEGs.
CHUNK_SIZE = 64
# normalize() works image by image on float32 batches larger than this (see there).
_NORMALIZE_BLOCK_BYTES = 32 << 20

_RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

_LAYOUT_HELP = (
    "expected either DIR/val/*.JPEG with DIR/val_label.txt (the layout of imagenet-val-1300), "
    "or DIR/*.JPEG with DIR/val_label.txt, or an ImageFolder tree DIR/val/<wnid>/*.JPEG or "
    "DIR/<wnid>/*.JPEG (wnids like n01440764); pass it as --imagenet DIR, and add "
    "--imagenet-labels FILE if the label file lives elsewhere"
)


class DataError(UsageError, ValueError):
    """Bad input data: the message says what was expected, what was found and how to fix it."""


# Single-channel modes deeper than 8 bits. PIL's convert("RGB") clips them to 0..255 (a 16-bit
# photo comes out almost white) where it would have to scale: refused rather than misread.
# 16-bit RGB PNGs are not here: PIL opens them as 8-bit RGB, correctly scaled.
_CLIPPED_MODES = {
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale",
    "I": "32-bit integer grayscale",
    "F": "32-bit float grayscale",
}


# --------------------------------------------------------------------------------------------
# Labels and listing


def read_labels(path: Path, num_classes: int = 1000) -> dict[str, int]:
    """Parse a ModelZoo label file: one ``ILSVRC2012_val_00000001.JPEG 65`` per line.

    Blank lines are ignored. Raises :class:`DataError` naming the file and line for a wrong field
    count, a non-integer label, a label outside ``[0, num_classes)``, a repeated image name, an
    empty file or a missing file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"label file not found: {path}; expected a ModelZoo label file "
            f"('ILSVRC2012_val_00000001.JPEG 65' per line); pass it with --imagenet-labels FILE"
        ) from None
    except IsADirectoryError:
        raise DataError(
            f"label file {path} is a directory; expected a text file "
            f"('ILSVRC2012_val_00000001.JPEG 65' per line); pass it with --imagenet-labels FILE"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text ({exc}); expected a ModelZoo label file "
            f"('ILSVRC2012_val_00000001.JPEG 65' per line)"
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot read label file {path}: {exc.strerror or exc}; expected a readable ModelZoo "
            f"label file; pass it with --imagenet-labels FILE"
        ) from exc
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    # Lines end at \n, \r\n or \r only, as editors and grep -n count them: str.splitlines()
    # also breaks at \v, \f, \x1c-\x1e, \x85 and \u2028, which split() treats as field spaces.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(
                f"{path}:{lineno}: expected 2 fields 'IMAGE_NAME LABEL', found {len(fields)}: "
                f"{line.strip()!r}; fix that line or pass the right file with --imagenet-labels FILE"
            )
        name, raw = fields
        try:
            label = int(raw)
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: expected an integer class index, found {raw!r} "
                f"(line {line.strip()!r}); labels are 0-based class indices, not synset ids"
            ) from None
        if not 0 <= label < num_classes:
            raise DataError(
                f"{path}:{lineno}: expected a label in [0, {num_classes}), found {label} "
                f"(line {line.strip()!r}); is this label file for another dataset or 1-based?"
            )
        if name in labels:
            raise DataError(
                f"{path}:{lineno}: image {name!r} is labelled twice (first on line "
                f"{first_line[name]}); expected one line per image, remove the duplicate"
            )
        labels[name] = label
        first_line[name] = lineno
    if not labels:
        raise DataError(
            f"label file {path} is empty; expected one 'ILSVRC2012_val_00000001.JPEG 65' line per "
            f"image; pass the right file with --imagenet-labels FILE"
        )
    return labels


def _is_image_name(name: str) -> bool:
    # Dot files are skipped: they are editor/OS droppings (macOS "._x.JPEG"), never images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _has_images(directory: Path) -> bool:
    with os.scandir(directory) as it:
        return any(_is_image_name(e.name) and e.is_file() for e in it)


def _subfolders(directory: Path) -> list[str]:
    # Hidden folders (.ipynb_checkpoints, .AppleDouble) are droppings, like hidden files.
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


@functools.lru_cache(maxsize=None)
def load_wnids(path: Path = WNIDS_FILE) -> tuple[str, ...]:
    """The 1000 ILSVRC2012 wnids in class-index order (``fixtures/imagenet_wnids.txt``).

    Class ``i`` of every ImageNet-1k model here is the ``i``-th wnid in sorted order, the order
    torchvision's ``ImageFolder`` and timm give the ``val/<wnid>/`` folders. Raises
    :class:`DataError` unless the file holds exactly 1000 unique, sorted ``nXXXXXXXX`` lines.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the ILSVRC2012 wnid list {path} ({exc}); it ships with the suite "
            f"(fixtures/imagenet_wnids.txt): restore it from the repository"
        ) from exc
    malformed = [w for w in lines if not _WNID.fullmatch(w)]
    problem = ""
    if len(lines) != 1000:
        problem = f"{len(lines)} wnids"
    elif malformed:
        problem = f"malformed entries {_examples(malformed)}"
    elif len(set(lines)) != 1000:
        problem = f"{1000 - len(set(lines))} repeated wnid(s)"
    elif lines != sorted(lines):
        problem = "wnids out of sorted order"
    if problem:
        raise DataError(
            f"{path}: expected the 1000 unique ILSVRC2012 wnids (nXXXXXXXX), sorted, one per line, "
            f"found {problem}; restore fixtures/imagenet_wnids.txt from the repository"
        )
    return tuple(lines)


@dataclass(frozen=True)
class DatasetLayout:
    """Where the images are and, if any, the label file to join them with."""

    image_dir: Path
    label_file: Path | None
    imagefolder: bool  # image_dir/<wnid>/*.JPEG rather than image_dir/*.JPEG


def locate_dataset(path: Path, label_file: Path | None = None) -> DatasetLayout:
    """Find the layout under ``path``: ModelZoo (``path/val/*.JPEG`` or ``path/*.JPEG`` with a
    ``val_label.txt`` there, or ``label_file``) or ImageFolder (``path/val/<wnid>/`` or
    ``path/<wnid>/``, labels from the folders: a ``val_label.txt`` there is not read implicitly).
    A :class:`DataError` says what was expected and how to pass it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"ImageNet directory {path} does not exist; {_LAYOUT_HELP}")
    if not path.is_dir():
        raise DataError(f"--imagenet {path} is a file, not a directory; {_LAYOUT_HELP}")
    if not any(path.iterdir()):
        raise DataError(f"ImageNet directory {path} is empty; {_LAYOUT_HELP}")

    val = path / "val"
    candidates = [val, path] if val.is_dir() else [path]
    image_dir: Path | None = None
    imagefolder = False
    for candidate in candidates:
        has_images = _has_images(candidate)
        wnid_like = [d for d in _subfolders(candidate) if _WNID.fullmatch(d)]
        if has_images and wnid_like:
            # Half of a valprep.sh run, or two copies in one folder: either reading would be wrong.
            raise DataError(
                f"{candidate} mixes both layouts: JPEGs directly inside and {len(wnid_like)} "
                f"wnid folder(s) ({_examples(wnid_like, 3)}); expected one of them: move every "
                f"image into its wnid folder (ImageFolder) or out of them (with {LABEL_FILE_NAME})"
            )
        if has_images or wnid_like:
            image_dir, imagefolder = candidate, bool(wnid_like)
            break
    if image_dir is None:
        found = f"no .JPEG/.jpg/.png files in {path}" + (f" or {val}" if val.is_dir() else "")
        subdirs = _subfolders(path)
        if subdirs:
            found += (
                f" ({len(subdirs)} subdirectories, none named after an ILSVRC2012 wnid: "
                f"{_examples(subdirs, 3)})"
            )
        raise DataError(f"{found}; {_LAYOUT_HELP}")

    if label_file is not None:
        label_file = Path(label_file)
        if not label_file.is_file():
            raise DataError(
                f"label file {label_file} (from --imagenet-labels) does not exist or is not a "
                f"file; expected a ModelZoo label file ('ILSVRC2012_val_00000001.JPEG 65' per line)"
            )
        return DatasetLayout(image_dir, label_file, imagefolder)
    if imagefolder:
        # The folders are the labels; a val_label.txt lying around is not read implicitly, so
        # a subset of classes copied with the full label file is not a label mismatch.
        return DatasetLayout(image_dir, None, True)

    for candidate in (path / LABEL_FILE_NAME, image_dir / LABEL_FILE_NAME):
        if candidate.is_file():
            return DatasetLayout(image_dir, candidate, False)
    hint = ""
    if (path.parent / LABEL_FILE_NAME).is_file():
        hint = f" (there is one in the parent directory: did you mean --imagenet {path.parent}?)"
    raise DataError(
        f"found images in {image_dir} but no {LABEL_FILE_NAME} in {path}{hint}; {_LAYOUT_HELP}"
    )


@dataclass(frozen=True)
class ImageFolderInfo:
    """What an ImageFolder tree (``root/<wnid>/*.JPEG``) held, beyond its images.

    Recorded with the results (:attr:`DatasetListing.label_source`), so that a subset of the
    classes is never mistaken for the full validation set.
    """

    root: Path
    folders: int  # wnid folders present (every one a known ILSVRC2012 wnid)
    empty_folders: tuple[str, ...]  # wnid folders without any image (allowed, counted)
    missing_wnids: tuple[str, ...]  # ILSVRC2012 classes without a folder
    ignored_files: int  # non-image files beside the folders or inside them (skipped, counted)

    @property
    def full(self) -> bool:
        """True when every one of the 1000 classes has a folder."""
        return not self.missing_wnids

    def describe(self) -> str:
        """One line for the records, e.g. ``imagefolder: 725 of 1000 wnid folders (subset: ...)``."""
        text = f"imagefolder: {self.folders} wnid folders"
        if not self.full:
            total = self.folders + len(self.missing_wnids)
            text = f"imagefolder: {self.folders} of {total} wnid folders (subset: {len(self.missing_wnids)} classes absent)"
        extras = []
        if self.empty_folders:
            extras.append(f"{len(self.empty_folders)} empty")
        if self.ignored_files:
            extras.append(f"{self.ignored_files} non-image files ignored")
        extra = f", {', '.join(extras)}" if extras else ""
        return f"{text}{extra} ({WNIDS_SOURCE} order)"


@dataclass(frozen=True)
class DatasetListing:
    """The images to score and their labels, joined by file name.

    ``names`` are image file names, sorted and unique; ``labels`` follow the same order. In the
    ModelZoo layout the files are ``image_dir/<name>`` and the labels come from ``label_file``;
    in an ImageFolder tree they are ``image_dir/<folder>/<name>`` (``folders``, same order),
    the labels come from the folder names (``imagefolder``) and ``label_file``, if given, was
    checked to agree with them. ``skipped_unlabeled`` / ``skipped_missing`` count images
    without labels and labels without images that ``on_mismatch="intersect"`` left out.
    """

    image_dir: Path
    label_file: Path | None
    names: tuple[str, ...]
    labels: tuple[int, ...]
    skipped_unlabeled: int = 0
    skipped_missing: int = 0
    folders: tuple[str, ...] = ()  # ImageFolder only: each image's wnid folder
    imagefolder: ImageFolderInfo | None = None

    def __len__(self) -> int:
        return len(self.names)

    def image_paths(self) -> list[Path]:
        """Every listed image's path, in ``names`` order."""
        if self.folders:
            return [self.image_dir / f / n for f, n in zip(self.folders, self.names)]
        return [self.image_dir / n for n in self.names]

    @property
    def label_source(self) -> str:
        """Where the labels came from, for the records: ``val_label.txt: PATH`` or ``imagefolder: ...``."""
        if self.imagefolder is None:
            return f"{LABEL_FILE_NAME}: {self.label_file}"
        text = self.imagefolder.describe()
        if self.label_file is not None:
            text += f", agrees with {LABEL_FILE_NAME}: {self.label_file}"
        return text

    def fingerprint(self) -> dict[str, Any]:
        """The content identity used in cache keys.

        Images are identified by (name, size, mtime_ns) from ``stat`` only, never by reading
        their bytes, so a warm rerun over 50,000 images costs 50,000 stats rather than 6 GB of
        reads. The labels are hashed as the entry stores them (the listed images' classes), so
        the same images with the same labels share one entry whichever layout or label file gave
        them, and a label that changes for a listed image changes the key.
        """
        digest = hashlib.sha256()
        for name, image in zip(self.names, self.image_paths()):
            try:
                st = os.stat(image)
            except OSError as exc:
                raise DataError(
                    f"image {image} was listed but cannot be read now ({exc.strerror}); "
                    f"did the dataset change during the run? rerun to list it again"
                ) from exc
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {
            "count": len(self.names),
            "labels_sha256": hashlib.sha256(np.asarray(self.labels, dtype="<i8").tobytes()).hexdigest(),
            "images_stat_sha256": digest.hexdigest(),
        }


def _examples(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _subset(names: Sequence[str], limit: int) -> list[str]:
    # Ordering by a hash of the name gives a subset that does not depend on listing order, is
    # the same on every machine, and is spread over all classes (the val files are not sorted by
    # class, but other datasets are: taking the first N names would be biased there).
    by_hash = sorted(names, key=lambda n: hashlib.sha256(n.encode()).digest())
    return sorted(by_hash[:limit])


def _scan_imagefolder(root: Path, wnids: Sequence[str]) -> tuple[dict[str, str], ImageFolderInfo]:
    """``{image name: wnid folder}`` of ``root/<wnid>/*``, with what else the tree held.

    Refuses folders that are not ILSVRC2012 wnids, folders inside class folders and image names
    present in two folders; non-image files are skipped and counted (torchvision's ImageFolder
    skips them too: e.g. the ``valprep.sh`` or ``LOC_val_solution.csv`` beside the folders).
    """
    known = set(wnids)
    folders = _subfolders(root)
    unknown = [f for f in folders if f not in known]
    if unknown:
        raise DataError(
            f"{root} is an ImageFolder tree, but {len(unknown)} folder(s) there are not ILSVRC2012 "
            f"wnids: {_examples(unknown)}; expected only folders named after the 1000 classes "
            f"(n01440764 ... n15075141, {WNIDS_SOURCE}): move or remove the others"
        )
    with os.scandir(root) as it:
        ignored = sum(1 for e in it if not e.name.startswith(".") and not e.is_dir())
    folder_of: dict[str, str] = {}
    duplicates: list[str] = []
    nested: list[str] = []
    empty: list[str] = []
    for folder in folders:
        count = 0
        with os.scandir(root / folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    nested.append(f"{folder}/{entry.name}")
                elif not (_is_image_name(entry.name) and entry.is_file()):
                    ignored += 1
                elif entry.name in folder_of:
                    duplicates.append(f"{entry.name} (in {folder_of[entry.name]}/ and {folder}/)")
                else:
                    folder_of[entry.name] = folder
                    count += 1
        if count == 0:
            empty.append(folder)
    if nested:
        # torchvision would read them recursively; silently skipping them would drop images.
        raise DataError(
            f"{root}: {len(nested)} folder(s) inside wnid folders: {_examples(nested)}; expected "
            f"the images directly in each wnid folder (val/n01440764/*.JPEG): move them up"
        )
    if duplicates:
        raise DataError(
            f"{root}: {len(duplicates)} image name(s) appear in two wnid folders: "
            f"{_examples(duplicates)}; expected each image once (labels are joined by file "
            f"name): remove the copy in the wrong class folder"
        )
    if not folder_of:
        raise DataError(
            f"{root}: {len(folders)} wnid folder(s) but no .JPEG/.jpg/.png file in any of them; "
            f"expected the images in val/<wnid>/; {_LAYOUT_HELP}"
        )
    present = set(folders)
    info = ImageFolderInfo(
        root=root,
        folders=len(folders),
        empty_folders=tuple(empty),
        missing_wnids=tuple(w for w in wnids if w not in present),
        ignored_files=ignored,
    )
    return folder_of, info


def _join(
    images: set[str], labels: Mapping[str, int], image_dir: Path, labels_path: Path, on_mismatch: str
) -> tuple[list[str], int, int]:
    """Names present in both, sorted, and the unlabeled / missing counts (or a DataError)."""
    unlabeled = sorted(images - labels.keys())
    missing = sorted(labels.keys() - images)
    if (unlabeled or missing) and on_mismatch == "error":
        raise DataError(
            f"{image_dir} and {labels_path} do not match: {len(unlabeled)} image(s) have no label "
            f"(e.g. {_examples(unlabeled) or 'none'}) and {len(missing)} label(s) name images that "
            f"are not there (e.g. {_examples(missing) or 'none'}); expected every image to have "
            f"exactly one label line; pass the label file that matches these images with "
            f"--imagenet-labels FILE, or score only the labelled images that exist with "
            f"--on-label-mismatch intersect (on_mismatch='intersect')"
        )
    names = sorted(images & labels.keys())
    if not names:
        raise DataError(
            f"no image in {image_dir} has a label in {labels_path} ({len(images)} images, "
            f"{len(labels)} labels, e.g. images {_examples(sorted(images), 3)} vs labels "
            f"{_examples(sorted(labels), 3)}); pass the matching label file with --imagenet-labels FILE"
        )
    return names, len(unlabeled), len(missing)


def list_dataset(
    path: Path,
    label_file: Path | None = None,
    limit: int | None = None,
    num_classes: int = 1000,
    on_mismatch: str = "error",
) -> DatasetListing:
    """List the images under ``path`` and join them to their labels by file name.

    Layouts: ModelZoo (``path/val/*.JPEG`` or ``path/*.JPEG``, labels from ``val_label.txt``
    there or ``label_file``) or ImageFolder (``path/val/<wnid>/*.JPEG`` or ``path/<wnid>/*.JPEG``,
    class = position of the wnid in :func:`load_wnids`; a subset of the classes is allowed and
    recorded in :attr:`DatasetListing.imagefolder`). An ImageFolder tree given a ``label_file``
    too must agree with it image by image (a disagreement is a :class:`DataError` naming the
    images and both labels); a ``val_label.txt`` inside the tree is not read implicitly.

    ``on_mismatch="error"`` (default) refuses images without labels or labels without images;
    ``"intersect"`` scores only the images that have labels and records what it skipped.
    ``limit`` takes a deterministic, unbiased subset (the first ``limit`` names ordered by the
    SHA-256 of the name), returned sorted by name.
    """
    if on_mismatch not in MISMATCH_POLICIES:
        raise DataError(f"on_mismatch must be one of {', '.join(MISMATCH_POLICIES)}, found {on_mismatch!r}")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be a positive number of images, found {limit}; omit it to use all images")
    layout = locate_dataset(path, label_file)
    image_dir = layout.image_dir
    folder_of: dict[str, str] = {}
    info: ImageFolderInfo | None = None
    unlabeled = missing = 0
    if layout.imagefolder:
        wnids = load_wnids()
        if num_classes != len(wnids):
            raise DataError(
                f"{image_dir} is an ImageFolder tree of ILSVRC2012's {len(wnids)} classes, but the "
                f"model has {num_classes}; pass a ModelZoo label file for its classes with "
                f"--imagenet-labels FILE and a flat folder of images"
            )
        folder_of, info = _scan_imagefolder(image_dir, wnids)
        index = {w: i for i, w in enumerate(wnids)}
        labels = {name: index[folder] for name, folder in folder_of.items()}
        if layout.label_file is None:
            names = sorted(labels)
        else:
            file_labels = read_labels(layout.label_file, num_classes)
            names, unlabeled, missing = _join(set(labels), file_labels, image_dir, layout.label_file, on_mismatch)
            disagree = [n for n in names if labels[n] != file_labels[n]]
            if disagree:
                shown = [
                    f"{n} (folder {folder_of[n]} = {labels[n]}, file {file_labels[n]} = "
                    f"{wnids[file_labels[n]]})"
                    for n in disagree[:5]
                ]
                raise DataError(
                    f"{image_dir} (ImageFolder) and {layout.label_file} disagree on "
                    f"{len(disagree)} of {len(names)} images: {'; '.join(shown)}"
                    f"{'; ...' if len(disagree) > 5 else ''}; expected the same class for every "
                    f"image (class = position of the wnid in {WNIDS_SOURCE}); one of them is for "
                    f"another dataset or another class order: pass the matching label file with "
                    f"--imagenet-labels FILE, or omit it to take the labels from the folders"
                )
    else:
        assert layout.label_file is not None  # locate_dataset found or was given one
        labels = read_labels(layout.label_file, num_classes)
        with os.scandir(image_dir) as it:
            images = {e.name for e in it if _is_image_name(e.name) and e.is_file()}
        names, unlabeled, missing = _join(images, labels, image_dir, layout.label_file, on_mismatch)
    if limit is not None and limit < len(names):
        names = _subset(names, limit)
    return DatasetListing(
        image_dir=image_dir,
        label_file=layout.label_file,
        names=tuple(names),
        labels=tuple(labels[n] for n in names),
        skipped_unlabeled=unlabeled,
        skipped_missing=missing,
        folders=tuple(folder_of[n] for n in names) if layout.imagefolder else (),
        imagefolder=info,
    )


# --------------------------------------------------------------------------------------------
# One image


@dataclass(frozen=True)
class _Decoded:
    """An image decoded to RGB; with draft decoding ``image`` may be 1/2, 1/4 or 1/8 of ``size``."""

    image: Image.Image
    size: tuple[int, int]  # the file's own (width, height)
    box: tuple[float, float, float, float]  # the file's full extent in ``image`` coordinates


def _load_rgb(path: Path, draft: Callable[[int, int], tuple[int, int]] | None = None) -> _Decoded:
    """Decode ``path`` into an RGB PIL image, as torchvision's ImageFolder loader does.

    ``draft`` (draft decoding only) maps the file's (width, height) to the smallest size the
    decoded image may have; libjpeg then decodes at the largest DCT scale that stays at least
    that big (PIL ``Image.draft``; a no-op for other formats).
    """
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; a bomb must fail loudly here,
        # not exhaust a worker's memory, so the warning is escalated for this call only.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.mode in _CLIPPED_MODES:
                    raise DataError(
                        f"{path}: a {_CLIPPED_MODES[img.mode]} image (PIL mode {img.mode}); PIL's "
                        f"RGB conversion clips such pixels to 0..255 instead of scaling them, so "
                        f"the model would see a mostly white image; expected an 8-bit JPEG/PNG: "
                        f"convert it to 8 bits (e.g. 'convert IN -depth 8 OUT') or remove it"
                    )
                size = img.size
                box: tuple[float, float, float, float] = (0, 0, *size)
                if draft is not None:
                    drafted = img.draft("RGB", draft(*size))
                    if drafted is not None:
                        box = drafted[1]
                # load() forces the full decode, so truncation errors surface here, inside the
                # try, and not later in resize. An RGB image is used as decoded: convert("RGB")
                # would only copy it (3-4% of the time per image, measured).
                img.load()
                return _Decoded(img if img.mode == "RGB" else img.convert("RGB"), size, box)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"image {path} not found; it was listed earlier: did the dataset change during the "
            f"run? rerun to list it again"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refusing a possible decompression bomb ({_file_size(path)} on disk): {exc}; "
            f"expected an ImageNet-sized photo (at most {Image.MAX_IMAGE_PIXELS} pixels): "
            f"remove that file or replace it with a normal-sized copy"
        ) from exc
    except Exception as exc:
        # Any failure inside PIL while decoding this file is a fact about this file.
        raise DataError(
            f"{path}: cannot decode image ({_file_size(path)}): {type(exc).__name__}: {exc}; "
            f"expected a readable JPEG/PNG: re-extract or remove that file"
        ) from exc


def _file_size(path: Path) -> str:
    try:
        return f"{os.stat(path).st_size} bytes"
    except OSError as exc:
        return f"size unknown: {exc.strerror}"


def _center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    """torchvision ``CenterCrop`` on an (H, W, C) array: zero padding, then rounded offsets."""
    h, w = arr.shape[:2]
    if crop > w or crop > h:
        pad_w = max(crop - w, 0)
        pad_h = max(crop - h, 0)
        arr = np.pad(arr, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    # Python's round (half to even) on purpose: it is what torchvision uses.
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return arr[top : top + crop, left : left + crop]


def _short_side_size(target: int, w: int, h: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``: shorter side -> ``target``, longer side truncated, not rounded."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = target, int(target * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _draft_request(spec: PreprocessSpec, w: int, h: int) -> tuple[int, int]:
    """The smallest decoded size of a (w, h) file that loses nothing the resize keeps.

    ``squash_crop`` resizes to ``resize x resize``; ``resize_crop`` to a shorter side of
    ``resize``; ``crop_resize``'s box is ``crop / resize`` of the shorter side, so it too keeps
    at least ``crop`` pixels when the shorter side is ``resize``.
    """
    if spec.method == "squash_crop":
        return (spec.resize, spec.resize)
    return _short_side_size(spec.resize, w, h)


def preprocess_image(path: Path, spec: PreprocessSpec, decode: str = "exact") -> np.ndarray:
    """Decode, resize and crop one image to a ``(3, crop, crop)`` uint8 array.

    With ``decode="exact"`` (default), bit-exact with torchvision's PIL pipeline
    (``Image.open(...).convert("RGB")`` then ``Resize`` + ``CenterCrop`` for ``resize_crop``;
    ``Resize((r, r))`` + ``CenterCrop`` for ``squash_crop``; ResNeSt's ``ECenterCrop`` for
    ``crop_resize``). ``decode="draft"`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale
    when it is at least twice the resize target, then resizes from the exact extent of the file
    (same geometry, different pixels: see :data:`DECODE_MODES`); smaller files come out
    bit-identical to ``exact``. Undecodable files and decompression bombs raise
    :class:`DataError` naming the file.
    """
    if spec.method not in RESIZE_METHODS:
        raise DataError(f"unknown preprocessing method {spec.method!r}; expected one of {', '.join(RESIZE_METHODS)}")
    if decode not in DECODE_MODES:
        raise DataError(f"unknown decode mode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    try:
        resample = _RESAMPLING[spec.interpolation]
    except KeyError:
        raise DataError(
            f"unknown interpolation {spec.interpolation!r}; expected one of {', '.join(_RESAMPLING)}"
        ) from None
    draft = (lambda fw, fh: _draft_request(spec, fw, fh)) if decode == "draft" else None
    decoded = _load_rgb(Path(path), draft)
    img = decoded.image
    w, h = decoded.size
    # A drafted image is smaller than the file: resizing from the file's box keeps the geometry.
    drafted = img.size != (w, h)
    if spec.method == "resize_crop":
        size = _short_side_size(spec.resize, w, h)
        if drafted:
            img = img.resize(size, resample, box=decoded.box)
        elif size != (w, h):
            img = img.resize(size, resample)
        out = _center_crop(np.asarray(img), spec.crop)
    elif spec.method == "squash_crop":
        if drafted:
            img = img.resize((spec.resize, spec.resize), resample, box=decoded.box)
        elif (w, h) != (spec.resize, spec.resize):
            img = img.resize((spec.resize, spec.resize), resample)
        out = _center_crop(np.asarray(img), spec.crop)
    else:
        # ResNeSt's ECenterCrop: a float crop box, which PIL's crop() rounds itself.
        side = spec.crop / spec.resize * min(w, h)
        top = int(round((h - side) / 2.0))
        left = int(round((w - side) / 2.0))
        if drafted:
            fx, fy = decoded.box[2] / w, decoded.box[3] / h
            box = (left * fx, top * fy, (left + side) * fx, (top + side) * fy)
            img = img.resize((spec.crop, spec.crop), resample, box=box)
        else:
            img = img.crop((left, top, left + side, top + side))
            if img.size != (spec.crop, spec.crop):
                img = img.resize((spec.crop, spec.crop), resample)
        out = np.asarray(img)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def normalize(
    batch: np.ndarray, mean: Sequence[float], std: Sequence[float], out: np.ndarray | None = None
) -> np.ndarray:
    """(N, 3, H, W) uint8 -> float32, bit-exact with torchvision ``ToTensor()`` + ``Normalize``.

    Same operations in the same order and precision: divide by 255 in float32, then subtract
    the float32 mean and divide by the float32 std per channel. ``out``: a float32 array of the
    batch's shape to write into (returned), instead of a new one.
    """
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        raise DataError(f"normalize expects an (N, 3, H, W) uint8 batch, found {batch.dtype} {batch.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    if out is None:
        x = np.empty(batch.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != batch.shape or not out.flags.c_contiguous:
        raise DataError(f"normalize: out must be a C-contiguous float32 array of shape {batch.shape}, "
                        f"found {out.dtype} {out.shape}")
    else:
        x = out
    # Above glibc's largest mmap threshold (32 MiB, e.g. 64 images at 224) every batch is fresh,
    # zeroed memory; image by image, the three passes then run over pages still in the CPU
    # cache (~10% faster there, measured; smaller batches are fastest whole).
    blocks = zip(np.asarray(batch), x) if x.nbytes > _NORMALIZE_BLOCK_BYTES else ((batch, x),)
    for src, dst in blocks:
        np.divide(src, np.float32(255), out=dst, dtype=np.float32)
        dst -= m
        dst /= s
    return x


# --------------------------------------------------------------------------------------------
# The uint8 cache


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """A preprocessed dataset: uint8 NCHW pixels memory-mapped from a cache entry.

    ``eq=False``: equality of numpy fields is elementwise and ambiguous; compare ``key`` instead.
    """

    path: Path
    key: str
    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    spec: PreprocessSpec
    listing: DatasetListing
    decode: str = "exact"  # see DECODE_MODES

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int, prefetch: bool = False, reuse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start index, normalized float32 batch)``; the last batch may be short.

        ``prefetch=True`` normalizes the next batch in a background thread while the caller
        works on this one (numpy releases the GIL). Normalizing costs ~60 us per 224x224 image
        on one core: in series with an accelerator at 4000 images/s (250 us per image) the run
        reaches ~75% of the device's speed, overlapped ~97% (benchmarks/bench_overhead.py).

        ``reuse=True`` writes the batches into two buffers taken in turn, so **a batch is valid
        only until the next one is requested**: for callers that run it and keep the outputs
        (Workbench.run). A new 64 x 224 x 224 float32 batch is 38 MB, above glibc's mmap
        threshold: every new array is fresh, zeroed memory whose page faults cost ~15% of the
        feed (benchmarks/bench_feed.py). Default: every batch is a new array.
        """
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, found {batch_size}")
        starts = range(0, len(self), batch_size)
        buffers: list[np.ndarray] = []
        if reuse:
            shape = (min(batch_size, len(self)), *self.images.shape[1:])
            buffers = [np.empty(shape, np.float32) for _ in range(2 if len(starts) > 1 else 1)]

        def make(i: int) -> np.ndarray:
            start = starts[i]
            out = buffers[i % len(buffers)][: min(batch_size, len(self) - start)] if buffers else None
            return normalize(self.images[start : start + batch_size], self.spec.mean, self.spec.std, out=out)

        if not prefetch:
            for i, start in enumerate(starts):
                yield start, make(i)
            return
        # With reuse, batch i + 2 goes into batch i's buffer only once the caller has asked for
        # batch i + 1, i.e. is done with batch i.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="normalize") as pool:
            ahead = [pool.submit(make, 0)] if starts else []
            for i, start in enumerate(starts):
                batch = ahead.pop().result()
                if i + 1 < len(starts):
                    ahead.append(pool.submit(make, i + 1))
                yield start, batch


def _names_sha256(names: Sequence[str]) -> str:
    # NUL cannot occur in a file name, so the joined form is unambiguous.
    return hashlib.sha256("\0".join(names).encode()).hexdigest()


def dataset_cache_inputs(listing: DatasetListing, spec: PreprocessSpec, decode: str = "exact") -> dict[str, Any]:
    """Everything that decides a prepared dataset's bytes: the cache key is a hash of this."""
    inputs = {
        "format": CACHE_FORMAT,
        "preprocess": spec.cache_fields(),
        "dataset": listing.fingerprint(),
        "names": _names_sha256(listing.names),
    }
    # Only a non-default decode joins the key: "exact" entries built before the option existed
    # hold exactly those bytes and stay valid.
    if decode != "exact":
        inputs["decode"] = decode
    return inputs


def _preprocess_chunk(
    paths: Sequence[str], first_row: int, out_file: str, spec: PreprocessSpec, decode: str = "exact"
) -> int:
    """Preprocess ``paths`` into rows ``first_row...`` of ``out_file``; returns the row count.

    Runs in pool workers: rows go straight into the shared file with ``pwrite``, so no pixel
    data is pickled back to the parent.
    """
    row_bytes = 3 * spec.crop * spec.crop
    fd = os.open(out_file, os.O_WRONLY)
    try:
        for i, image in enumerate(paths):
            row = preprocess_image(Path(image), spec, decode)
            data = row.tobytes()
            offset = (first_row + i) * row_bytes
            written = os.pwrite(fd, data, offset)
            while written < len(data):
                written += os.pwrite(fd, data[written:], offset + written)
    finally:
        os.close(fd)
    return len(paths)


def _exit_with_parent() -> None:
    """Pool initializer: end this worker as soon as the process that started the pool dies.

    A run killed with SIGKILL (a CI timeout, the OOM killer) runs no cleanup, and its idle or
    busy workers would otherwise live on, re-parented, for as long as the machine is up (and
    keep the run's stdout pipe open, so whoever waits for it never sees EOF).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _default_workers() -> int:
    # The CPUs this process may actually use (taskset / cpuset), not the machine's total.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_chunks(
    listing: DatasetListing, spec: PreprocessSpec, out_file: Path, workers: int, decode: str = "exact"
) -> None:
    paths = [str(p) for p in listing.image_paths()]
    count = len(paths)
    # Small datasets are split evenly so both cores still get work; large ones use CHUNK_SIZE.
    chunk = max(1, min(CHUNK_SIZE, -(-count // workers)))
    chunks = [(start, paths[start : start + chunk]) for start in range(0, count, chunk)]
    workers = min(workers, len(chunks))
    desc = f"preprocessing {listing.image_dir.name} ({spec.method} {spec.resize}/{spec.crop} {spec.interpolation})"
    if decode != "exact":
        desc = f"{desc[:-1]}, {decode} decode)"
    with progress(count, desc) as bar:
        if workers == 1:
            # In-process on purpose: a debugger or a traceback sees the real failing frame.
            for start, part in chunks:
                bar.update(_preprocess_chunk(part, start, str(out_file), spec, decode))
            return
        # forkserver, not fork: the parent may hold torch's thread pools, and forking a process
        # with live threads can deadlock the child.
        context = multiprocessing.get_context("forkserver")
        # The server (started by the process's first pool; later calls here change nothing)
        # imports this module once, and every worker of every pool forks with numpy and PIL
        # already loaded instead of importing them itself (~0.2 s per worker, per pool).
        context.set_forkserver_preload([__name__])
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_exit_with_parent
        )
        try:
            futures = {
                executor.submit(_preprocess_chunk, part, start, str(out_file), spec, decode): part[0]
                for start, part in chunks
            }
            for future in concurrent.futures.as_completed(futures):
                try:
                    bar.update(future.result())
                except (DataError, OSError):
                    # DataError names the bad image; OSError here is the cache's disk (e.g. full),
                    # which the cache turns into its own error with the fix.
                    raise
                except BrokenProcessPool as exc:
                    raise DataError(
                        f"a preprocessing worker process died ({exc}); its own error, if it "
                        f"printed one, is on stderr above. Usual "
                        f"causes: out of memory (use fewer workers), or a __main__ module that "
                        f"worker processes cannot re-import (run from a file guarded by "
                        f"'if __name__ == \"__main__\":', not from stdin); workers=1 runs in-process"
                    ) from exc
                except Exception as exc:
                    raise DataError(
                        f"preprocessing worker failed on the chunk starting at {futures[future]}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        finally:
            # On failure, do not wait for the remaining chunks: nothing will be published.
            executor.shutdown(wait=True, cancel_futures=True)


def _fsync_file(path: Path) -> None:
    # The cache makes its manifest durable before the rename; the data files must be too, or a
    # power cut could leave a published entry whose pixels never reached the disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_free_space(
    tmp: Path, cache: ArtifactCache, count: int, spec: PreprocessSpec, listing: DatasetListing
) -> None:
    """Fail before decoding anything when the entry cannot fit: its size is known in advance."""
    # Pixels, int64 labels, names with newlines, and a generous allowance for the manifest.
    names_bytes = sum(len(n.encode()) + 1 for n in listing.names)
    needed = count * 3 * spec.crop * spec.crop + 8 * count + names_bytes + 65536
    free = shutil.disk_usage(tmp).free
    if needed > free:
        raise CacheError(
            f"preprocessing {count} images to {spec.crop}x{spec.crop} needs {needed / 1e6:.1f} MB "
            f"at {cache.root}, {free / 1e6:.1f} MB free; free space there or pass --cache-dir "
            f"DIR (or set ${DEFAULT_CACHE_ENV}) to a disk with room"
        )


def prepare_dataset(
    listing: DatasetListing,
    spec: PreprocessSpec,
    cache: ArtifactCache,
    workers: int | None = None,
    decode: str = "exact",
) -> PreparedDataset:
    """Preprocess every listed image once into the cache and memory-map the result.

    The entry (``images.u8`` raw uint8 NCHW, ``labels.npy``, ``names.txt``) is keyed by
    :func:`dataset_cache_inputs`: preprocessing fields, the labels (see
    :meth:`DatasetListing.fingerprint`), every image's (name, size, mtime), and the name list.
    ``workers`` defaults to the usable CPUs; ``1`` runs
    in-process. A failing image raises :class:`DataError` and publishes nothing. A cache disk
    without room for the entry is a :class:`CacheError` before any image is decoded (the size is
    known in advance); a warm entry is reused however full the disk is. ``decode="draft"``
    (opt-in, see :data:`DECODE_MODES`) is faster on large JPEGs but changes pixels; it is part of
    the key and recorded in the manifest.
    """
    if decode not in DECODE_MODES:
        raise DataError(f"unknown decode mode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    if workers is not None and workers <= 0:
        raise DataError(f"workers must be positive, found {workers}; omit it to use every core")
    count = len(listing.names)
    if count == 0:
        raise DataError(f"listing of {listing.image_dir} has no images; nothing to prepare")
    shape = (count, 3, spec.crop, spec.crop)
    inputs = dataset_cache_inputs(listing, spec, decode)

    def build(tmp: Path) -> dict[str, Any]:
        started = time.monotonic()
        _check_free_space(tmp, cache, count, spec, listing)
        out_file = tmp / "images.u8"
        with out_file.open("wb") as fh:
            fh.truncate(int(np.prod(shape)))
        used_workers = workers or _default_workers()
        _run_chunks(listing, spec, out_file, used_workers, decode)
        _fsync_file(out_file)
        with (tmp / "labels.npy").open("wb") as fh:
            np.save(fh, np.asarray(listing.labels, dtype=np.int64), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        with (tmp / "names.txt").open("w", encoding="utf-8") as fh:
            fh.write("".join(f"{n}\n" for n in listing.names))
            fh.flush()
            os.fsync(fh.fileno())
        return {
            "shape": list(shape),
            "dtype": "uint8",
            "layout": "NCHW",
            "preprocess": spec.describe(),
            "decode": decode,
            "image_dir": str(listing.image_dir),
            "label_file": None if listing.label_file is None else str(listing.label_file),
            "label_source": listing.label_source,
            "skipped_unlabeled": listing.skipped_unlabeled,
            "skipped_missing": listing.skipped_missing,
            "workers": used_workers,
            "build_seconds": round(time.monotonic() - started, 3),
        }

    entry = cache.get_or_build("dataset", inputs, build)
    prepared = _open_entry(entry.path, entry.key, entry.manifest, spec, listing)
    return replace(prepared, decode=decode)


def _open_entry(
    path: Path, key: str, manifest: Mapping[str, Any], spec: PreprocessSpec, listing: DatasetListing
) -> PreparedDataset:
    fix = "delete that directory and rerun to rebuild it"
    try:
        shape = tuple(int(d) for d in manifest["shape"])
        dtype = np.dtype(manifest["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheError(f"cache entry {path}: manifest lacks a valid shape/dtype ({exc!r}); {fix}") from exc
    images_file = path / "images.u8"
    expected_bytes = int(np.prod(shape)) * dtype.itemsize
    try:
        actual_bytes = images_file.stat().st_size
        names = tuple(path.joinpath("names.txt").read_text(encoding="utf-8").splitlines())
        labels = np.load(path / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache entry {path} is incomplete or unreadable ({exc}); {fix}") from exc
    if (
        len(shape) != 4
        or actual_bytes != expected_bytes
        or len(names) != shape[0]
        or labels.shape != (shape[0],)
        or shape[1:] != (3, spec.crop, spec.crop)
    ):
        raise CacheError(
            f"cache entry {path} is inconsistent: manifest shape {list(shape)}, images.u8 "
            f"{actual_bytes} bytes (expected {expected_bytes}), {len(names)} names, labels "
            f"{labels.shape}; {fix}"
        )
    images = np.memmap(images_file, mode="r", dtype=dtype, shape=shape)
    return PreparedDataset(
        path=path, key=key, images=images, labels=labels, names=names, spec=spec, listing=listing
    )


# --------------------------------------------------------------------------------------------
# Synthetic images for the embedded default run


_SYNTHETIC_MARKER = "synthetic.json"
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


def _synthetic_complete(out_dir: Path, count: int, seed: int) -> bool:
    marker = out_dir / _SYNTHETIC_MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{marker} is unreadable ({exc}); delete {out_dir} and rerun to regenerate it") from exc
    wanted = {"version": _SYNTHETIC_VERSION, "count": count, "seed": seed}
    if recorded != wanted:
        raise DataError(
            f"{out_dir} holds a different synthetic dataset ({recorded}, wanted {wanted}); "
            f"delete it or choose another directory"
        )
    return True


def make_synthetic_dataset(out_dir: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` deterministic synthetic JPEGs plus a ``val_label.txt`` into ``out_dir``.

    For the embedded default run when no ImageNet is given. The labels (``index % 1000``, with
    ``index`` 0-based) are NOT meaningful: they exist so the pipeline runs end to end, and are
    good only for conversion and agreement checks, never for accuracy. The directory appears
    atomically (temp dir + rename); an existing complete one with the same count and seed is
    reused.
    """
    out_dir = Path(out_dir)
    if count <= 0:
        raise DataError(f"synthetic dataset size must be positive, found {count}")
    if out_dir.exists():
        if _synthetic_complete(out_dir, count, seed):
            return out_dir
        raise DataError(
            f"{out_dir} exists but is not a synthetic dataset made by this suite (no "
            f"{_SYNTHETIC_MARKER}); choose an empty or new directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        lines = []
        for index in range(count):
            name = f"synthetic_{index + 1:08d}.JPEG"
            _synthetic_image(index, seed).save(tmp / name, format="JPEG", quality=90)
            lines.append(f"{name} {index % 1000}\n")
        (tmp / LABEL_FILE_NAME).write_text("".join(lines))
        # Written last: its presence is what "complete" means.
        (tmp / _SYNTHETIC_MARKER).write_text(
            json.dumps({"version": _SYNTHETIC_VERSION, "count": count, "seed": seed})
        )
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process published the same directory first: use theirs if it is ours.
            if out_dir.exists() and _synthetic_complete(out_dir, count, seed):
                shutil.rmtree(tmp, ignore_errors=True)
                return out_dir
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
