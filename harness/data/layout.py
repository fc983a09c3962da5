"""Where a dataset's images are on disk: the ModelZoo and ImageFolder layouts.

:func:`locate_dataset` decides the layout of an ``--imagenet`` directory (images flat beside a
``val_label.txt``, or in ``<wnid>/`` class folders) and finds its label file;
:func:`scan_imagefolder` reads an ImageFolder tree's folders and what else it holds
(:class:`ImageFolderInfo`); :func:`flat_images` lists a flat folder's images. Only names and
folders are read here, never image bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.data.errors import DataError, examples
from harness.data.labels import LABEL_FILE_NAME, WNID_PATTERN, WNIDS_SOURCE

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

_LAYOUT_HELP = (
    "expected either DIR/val/*.JPEG with DIR/val_label.txt (the layout of imagenet-val-1300), "
    "or DIR/*.JPEG with DIR/val_label.txt, or an ImageFolder tree DIR/val/<wnid>/*.JPEG or "
    "DIR/<wnid>/*.JPEG (wnids like n01440764); pass it as --imagenet DIR, and add "
    "--imagenet-labels FILE if the label file lives elsewhere"
)


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
        wnid_like = [d for d in _subfolders(candidate) if WNID_PATTERN.fullmatch(d)]
        if has_images and wnid_like:
            # Half of a valprep.sh run, or two copies in one folder: either reading would be wrong.
            raise DataError(
                f"{candidate} mixes both layouts: JPEGs directly inside and {len(wnid_like)} "
                f"wnid folder(s) ({examples(wnid_like, 3)}); expected one of them: move every "
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
                f"{examples(subdirs, 3)})"
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


def scan_imagefolder(root: Path, wnids: Sequence[str]) -> tuple[dict[str, str], ImageFolderInfo]:
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
            f"wnids: {examples(unknown)}; expected only folders named after the 1000 classes "
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
            f"{root}: {len(nested)} folder(s) inside wnid folders: {examples(nested)}; expected "
            f"the images directly in each wnid folder (val/n01440764/*.JPEG): move them up"
        )
    if duplicates:
        raise DataError(
            f"{root}: {len(duplicates)} image name(s) appear in two wnid folders: "
            f"{examples(duplicates)}; expected each image once (labels are joined by file "
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


def flat_images(directory: Path) -> set[str]:
    """The image file names directly inside ``directory`` (dot files skipped)."""
    with os.scandir(directory) as it:
        return {e.name for e in it if _is_image_name(e.name) and e.is_file()}
