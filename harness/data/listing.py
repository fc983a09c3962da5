"""The listing: which images a run scores, with their labels, and the listing's identity.

:func:`list_dataset` finds the layout (:mod:`harness.data.layout`), reads the labels
(:mod:`harness.data.labels`), joins them to the images by file name (never by order), and with
``limit`` takes a deterministic subset. :meth:`DatasetListing.fingerprint` is the listing's
content identity in the prepared dataset's cache key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.errors import DataError, examples
from harness.data.labels import LABEL_FILE_NAME, WNIDS_SOURCE, load_wnids, name_bytes, read_labels, shown
from harness.data.layout import (
    ImageFolderInfo,
    flat_images,
    locate_dataset,
    scan_imagefolder,
)

MISMATCH_POLICIES = ("error", "intersect")


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
            return [self.image_dir / f / n for f, n in zip(self.folders, self.names, strict=True)]
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
        for name, image in zip(self.names, self.image_paths(), strict=True):
            try:
                st = os.stat(image)
            except OSError as exc:
                raise DataError(
                    f"image {shown(str(image))} was listed but cannot be read now ({exc.strerror}); "
                    f"did the dataset change during the run? rerun to list it again"
                ) from exc
            # A name that is not UTF-8 hashes as its bytes on disk (surrogateescape).
            digest.update(name_bytes(name) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {
            "count": len(self.names),
            "labels_sha256": hashlib.sha256(np.asarray(self.labels, dtype="<i8").tobytes()).hexdigest(),
            "images_stat_sha256": digest.hexdigest(),
        }


def _subset(names: Sequence[str], limit: int) -> list[str]:
    # Ordering by a hash of the name gives a subset that does not depend on listing order, is
    # the same on every machine, and is spread over all classes (the val files are not sorted by
    # class, but other datasets are: taking the first N names would be biased there).
    by_hash = sorted(names, key=lambda n: hashlib.sha256(name_bytes(n)).digest())
    return sorted(by_hash[:limit])


def _writable(name: str) -> bool:
    """Whether a label file line can name ``name``: UTF-8, one whitespace-free field."""
    return name.split() == [name] and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)


def _join(
    images: set[str], labels: Mapping[str, int], image_dir: Path, labels_path: Path, on_mismatch: str
) -> tuple[list[str], int, int]:
    """Names present in both, sorted, and the unlabeled / missing counts (or a DataError)."""
    unlabeled = sorted(images - labels.keys())
    missing = sorted(labels.keys() - images)
    if (unlabeled or missing) and on_mismatch == "error":
        # A label file is UTF-8 text split at whitespace: some names cannot be written in one.
        unwritable = [shown(n) for n in unlabeled if not _writable(n)]
        note = (
            f" ({len(unwritable)} of them, e.g. {examples(unwritable, 3)}, have names that are not "
            f"UTF-8 or hold a space: no label file can name them; rename them, e.g. with convmv, "
            f"or use an ImageFolder tree val/<wnid>/)"
        ) if unwritable else ""
        raise DataError(
            f"{shown(str(image_dir))} and {labels_path} do not match: {len(unlabeled)} image(s) have no "
            f"label (e.g. {examples([shown(n) for n in unlabeled]) or 'none'}){note} and {len(missing)} "
            f"label(s) name images that are not there (e.g. {examples([shown(n) for n in missing]) or 'none'}); "
            f"expected every image to have exactly one label line; pass the label file that matches "
            f"these images with --imagenet-labels FILE, or score only the labelled images that exist "
            f"with --on-label-mismatch intersect (on_mismatch='intersect')"
        )
    names = sorted(images & labels.keys())
    if not names:
        raise DataError(
            f"no image in {shown(str(image_dir))} has a label in {labels_path} ({len(images)} images, "
            f"{len(labels)} labels, e.g. images {examples([shown(n) for n in images], 3)} vs labels "
            f"{examples([shown(n) for n in labels], 3)}); pass the matching label file with "
            f"--imagenet-labels FILE"
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
                f"{shown(str(image_dir))} is an ImageFolder tree of ILSVRC2012's {len(wnids)} classes, but the "
                f"model has {num_classes}; pass a ModelZoo label file for its classes with "
                f"--imagenet-labels FILE and a flat folder of images"
            )
        folder_of, info = scan_imagefolder(image_dir, wnids)
        index = {w: i for i, w in enumerate(wnids)}
        labels = {name: index[folder] for name, folder in folder_of.items()}
        if layout.label_file is None:
            names = sorted(labels)
        else:
            file_labels = read_labels(layout.label_file, num_classes)
            names, unlabeled, missing = _join(set(labels), file_labels, image_dir, layout.label_file, on_mismatch)
            disagree = [n for n in names if labels[n] != file_labels[n]]
            if disagree:
                cases = [
                    f"{shown(n)} (folder {folder_of[n]} = {labels[n]}, file {file_labels[n]} = "
                    f"{wnids[file_labels[n]]})"
                    for n in disagree[:5]
                ]
                raise DataError(
                    f"{shown(str(image_dir))} (ImageFolder) and {layout.label_file} disagree on "
                    f"{len(disagree)} of {len(names)} images: {'; '.join(cases)}"
                    f"{'; ...' if len(disagree) > 5 else ''}; expected the same class for every "
                    f"image (class = position of the wnid in {WNIDS_SOURCE}); one of them is for "
                    f"another dataset or another class order: pass the matching label file with "
                    f"--imagenet-labels FILE, or omit it to take the labels from the folders"
                )
    else:
        assert layout.label_file is not None  # locate_dataset found or was given one
        labels = read_labels(layout.label_file, num_classes)
        names, unlabeled, missing = _join(flat_images(image_dir), labels, image_dir, layout.label_file, on_mismatch)
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
