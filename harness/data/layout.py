"""Where a dataset's images are on disk: the ModelZoo and ImageFolder layouts.

:func:`locate_dataset` decides the layout of an ``--imagenet`` directory (images flat beside a
``val_label.txt``, or in ``<wnid>/`` class folders) and finds its label file;
:func:`scan_imagefolder` reads an ImageFolder tree's folders and what else it holds
(:class:`ImageFolderInfo`); :func:`flat_images` lists a flat folder's images. Only names and
folders are read here, never image bytes.

A dataset folder is outside data. Every name the OS can hold is listed or refused by name:
names that are not UTF-8 are kept as :func:`os.fsdecode` gives them (surrogate-escaped; shown
as ``\\xNN``, stored as the original bytes); an image name with a line break is refused (no label
file line or names file can hold it); two images of one stem (``X.JPEG`` and ``X.png``) are
refused (predictions join by stem). An OSError while listing (a symlink loop, a permission, a
name too long) is a :class:`DataError` naming the path and the fix.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.data.errors import DataError, examples
from harness.data.labels import LABEL_FILE_NAME, LINE_BREAKS, WNID_PATTERN, WNIDS_SOURCE, image_stem, shown

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_LINE_BREAK = re.compile(f"[{re.escape(LINE_BREAKS)}]")

_LAYOUT_HELP = (
    "expected either DIR/val/*.JPEG with DIR/val_label.txt (the layout of imagenet-val-1300), "
    "or DIR/*.JPEG with DIR/val_label.txt, or an ImageFolder tree DIR/val/<wnid>/*.JPEG or "
    "DIR/<wnid>/*.JPEG (wnids like n01440764); pass it as --imagenet DIR, and add "
    "--imagenet-labels FILE if the label file lives elsewhere"
)
# What to do about an OSError met while listing a dataset, by errno.
_FIXES = {
    errno.ELOOP: "it is a symbolic link that leads back to itself (a loop of links): remove the link "
                 "or point it at the real file or folder",
    errno.EACCES: "this user may not read it: make it readable (chmod/chown) or pass a readable copy",
    errno.EPERM: "this user may not read it: make it readable (chmod/chown) or pass a readable copy",
    errno.ENAMETOOLONG: "the path is longer than the OS allows: move the dataset to a shorter path "
                        "or rename the file",
    errno.ENOENT: "it vanished while being listed (the dataset changed during the run?): rerun",
    errno.EIO: "the disk reported an I/O error: check the disk (dmesg) or copy the dataset elsewhere",
}


def unreadable(path: Path | str, exc: OSError, doing: str = "listing the dataset") -> DataError:
    """The :class:`DataError` for an OSError at ``path``: the path (escaped), the cause, the fix."""
    fix = _FIXES.get(exc.errno or 0, "fix or remove it, or pass another copy of the dataset")
    return DataError(f"cannot read {shown(str(path))} while {doing}: {exc.strerror or exc}; {fix}")


def _kind(path: Path) -> str | None:
    """``"dir"``, ``"file"`` or ``"other"`` for what ``path`` leads to, None when nothing is there;
    a symlink loop, a permission or a name-length error is a :class:`DataError`."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise unreadable(path, exc) from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _scan(directory: Path) -> list[tuple[str, str]]:
    """``(name, kind)`` of every entry of ``directory`` that is not a dot file, ``kind`` as
    :func:`_kind` says (symlinks followed; a dangling one is ``"other"``). Dot files are
    editor/OS droppings (macOS "._x.JPEG", .ipynb_checkpoints), never images or classes."""
    current: Path = directory
    out: list[tuple[str, str]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                current = directory / entry.name
                kind = "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
                out.append((entry.name, kind))
    except OSError as exc:
        raise unreadable(current, exc) from None
    return out


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _images(entries: Iterable[tuple[str, str]]) -> list[str]:
    return [name for name, kind in entries if kind == "file" and _is_image_name(name)]


def _folders(entries: Iterable[tuple[str, str]]) -> list[str]:
    return sorted(name for name, kind in entries if kind == "dir")


def _refuse_line_breaks(directory: Path, names: Sequence[str]) -> None:
    """Image names with a line break (anything ``str.splitlines`` splits at) are refused: no label
    file line, names file of the dataset cache entry or message line can hold one."""
    broken = [shown(n) for n in names if _LINE_BREAK.search(n)]
    if broken:
        raise DataError(
            f"{shown(str(directory))}: {len(broken)} image name(s) hold a line break (\\n, \\r, "
            f"\\v, \\f, \\x1c-\\x1e, \\x85, \\u2028 or \\u2029): {examples(broken)}; no label "
            f"file or names file can hold such a name: rename or remove those files"
        )


def _refuse_shared_stems(where: Path, paths: Iterable[tuple[str, str]]) -> None:
    """Two images of one stem (``X.JPEG`` and ``X.png``, in one folder or two) are refused:
    predictions are joined to images by stem, so one of them would take the other's."""
    first: dict[str, str] = {}
    clashes: list[str] = []
    for folder, name in paths:
        stem = image_stem(name)
        shown_path = shown(f"{folder}/{name}" if folder else name)
        if stem in first:
            clashes.append(f"{first[stem]} and {shown_path}")
        else:
            first[stem] = shown_path
    if clashes:
        raise DataError(
            f"{shown(str(where))}: {len(clashes)} image(s) share a file stem with another: "
            f"{examples(clashes)}; predictions are joined to images and labels by stem (ais_bench "
            f"writes <stem>_0.*), so expected one image per stem: remove or rename one of each pair"
        )


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
    kind = _kind(path)
    if kind is None:
        dangling = " (a symbolic link to nothing)" if os.path.islink(path) else ""
        raise DataError(f"ImageNet directory {shown(str(path))} does not exist{dangling}; {_LAYOUT_HELP}")
    if kind != "dir":
        raise DataError(f"--imagenet {shown(str(path))} is a file, not a directory; {_LAYOUT_HELP}")
    try:
        empty = not os.listdir(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if empty:
        raise DataError(f"ImageNet directory {shown(str(path))} is empty; {_LAYOUT_HELP}")

    val = path / "val"
    # DIR itself is scanned only when DIR/val holds nothing: what lies beside val/ is not read.
    candidates = [val, path] if _kind(val) == "dir" else [path]
    image_dir: Path | None = None
    imagefolder = False
    for candidate in candidates:
        entries = _scan(candidate)
        has_images = bool(_images(entries))
        wnid_like = [d for d in _folders(entries) if WNID_PATTERN.fullmatch(d)]
        if has_images and wnid_like:
            # Half of a valprep.sh run, or two copies in one folder: either reading would be wrong.
            raise DataError(
                f"{shown(str(candidate))} mixes both layouts: JPEGs directly inside and {len(wnid_like)} "
                f"wnid folder(s) ({examples(wnid_like, 3)}); expected one of them: move every "
                f"image into its wnid folder (ImageFolder) or out of them (with {LABEL_FILE_NAME})"
            )
        if has_images or wnid_like:
            image_dir, imagefolder = candidate, bool(wnid_like)
            break
    if image_dir is None:
        found = f"no .JPEG/.jpg/.png files in {shown(str(path))}"
        if len(candidates) > 1:
            found += f" or {shown(str(val))}"
        subdirs = _folders(_scan(path))
        if subdirs:
            found += (
                f" ({len(subdirs)} subdirectories, none named after an ILSVRC2012 wnid: "
                f"{examples([shown(d) for d in subdirs], 3)})"
            )
        raise DataError(f"{found}; {_LAYOUT_HELP}")

    if label_file is not None:
        label_file = Path(label_file)
        if _kind(label_file) != "file":
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
        if _kind(candidate) == "file":
            return DatasetLayout(image_dir, candidate, False)
    hint = ""
    if (path.parent / LABEL_FILE_NAME).is_file():
        hint = f" (there is one in the parent directory: did you mean --imagenet {path.parent}?)"
    raise DataError(
        f"found images in {shown(str(image_dir))} but no {LABEL_FILE_NAME} in {shown(str(path))}{hint}; "
        f"{_LAYOUT_HELP}"
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
            text = (f"imagefolder: {self.folders} of {total} wnid folders "
                    f"(subset: {len(self.missing_wnids)} classes absent)")
        extras = []
        if self.empty_folders:
            extras.append(f"{len(self.empty_folders)} empty")
        if self.ignored_files:
            extras.append(f"{self.ignored_files} non-image files ignored")
        extra = f", {', '.join(extras)}" if extras else ""
        return f"{text}{extra} ({WNIDS_SOURCE} order)"


def scan_imagefolder(root: Path, wnids: Sequence[str]) -> tuple[dict[str, str], ImageFolderInfo]:
    """``{image name: wnid folder}`` of ``root/<wnid>/*``, with what else the tree held.

    Refuses folders that are not ILSVRC2012 wnids, folders inside class folders, image names
    present in two folders, two images of one stem and names with a line break; non-image files
    are skipped and counted (torchvision's ImageFolder skips them too: e.g. the ``valprep.sh`` or
    ``LOC_val_solution.csv`` beside the folders).
    """
    known = set(wnids)
    top = _scan(root)
    folders = _folders(top)
    unknown = [shown(f) for f in folders if f not in known]
    if unknown:
        raise DataError(
            f"{shown(str(root))} is an ImageFolder tree, but {len(unknown)} folder(s) there are not "
            f"ILSVRC2012 wnids: {examples(unknown)}; expected only folders named after the 1000 "
            f"classes (n01440764 ... n15075141, {WNIDS_SOURCE}): move or remove the others"
        )
    ignored = sum(1 for _, kind in top if kind != "dir")
    folder_of: dict[str, str] = {}
    duplicates: list[str] = []
    nested: list[str] = []
    empty: list[str] = []
    for folder in folders:
        entries = _scan(root / folder)
        nested.extend(shown(f"{folder}/{name}") for name in _folders(entries))
        images = _images(entries)
        ignored += len(entries) - len(images) - len(_folders(entries))
        for name in images:
            if name in folder_of:
                duplicates.append(f"{shown(name)} (in {folder_of[name]}/ and {folder}/)")
            else:
                folder_of[name] = folder
        if not images:
            empty.append(folder)
    if nested:
        # torchvision would read them recursively; silently skipping them would drop images.
        raise DataError(
            f"{shown(str(root))}: {len(nested)} folder(s) inside wnid folders: {examples(nested)}; "
            f"expected the images directly in each wnid folder (val/n01440764/*.JPEG): move them up"
        )
    if duplicates:
        raise DataError(
            f"{shown(str(root))}: {len(duplicates)} image name(s) appear in two wnid folders: "
            f"{examples(duplicates)}; expected each image once (labels are joined by file "
            f"name): remove the copy in the wrong class folder"
        )
    if not folder_of:
        raise DataError(
            f"{shown(str(root))}: {len(folders)} wnid folder(s) but no .JPEG/.jpg/.png file in any "
            f"of them; expected the images in val/<wnid>/; {_LAYOUT_HELP}"
        )
    _refuse_line_breaks(root, list(folder_of))
    _refuse_shared_stems(root, sorted((f, n) for n, f in folder_of.items()))
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
    """The image file names directly inside ``directory`` (dot files skipped); a name with a line
    break or two images of one stem are a :class:`DataError`."""
    names = _images(_scan(directory))
    _refuse_line_breaks(directory, names)
    _refuse_shared_stems(directory, sorted(("", n) for n in names))
    return set(names)
