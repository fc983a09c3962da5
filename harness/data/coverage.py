"""Dataset coverage: did a run score the full ILSVRC2012 validation set, or a part?

A published accuracy was measured on all 50,000 validation images with their canonical labels;
a figure measured on anything else is not comparable with it. :func:`coverage` says which case a
listing is, and how it knows:

- ``full``: exactly the 50,000 images, with the canonical labels. Recognised by content, never by
  a path or a file name: the SHA-256 of the listing's canonical form (sorted ``STEM LABEL`` lines,
  or ``STEM WNID`` lines for an ImageFolder tree) equals the digest in
  ``fixtures/imagenet_val.toml``, which was computed from the real ground-truth file.
- ``subset``: N of the 50,000 (every image is named ``ILSVRC2012_val_000xxxxx``), chosen by
  ``--limit`` (the first N names in SHA-256-of-name order, :func:`harness.data.listing.list_dataset`)
  or by the folder the user gave. Whether its labels are canonical is known only when they came
  from a label file that is itself recognised as the full ground truth.
- ``other``: not (a part of) the validation set: images not named like val images, more than
  50,000, or all 50,000 with labels that differ from the canonical ones (another label file or
  class order).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.data.errors import DataError, examples
from harness.data.labels import WNIDS_SOURCE, image_stem, name_bytes, read_labels, shown
from harness.data.listing import DatasetListing
from harness.specs import FIXTURES_DIR
from harness.specs.reader import Reader, SpecError, hex_string, load_toml

VAL_SET_FILE = FIXTURES_DIR / "imagenet_val.toml"
VAL_SET_SOURCE = "fixtures/imagenet_val.toml"
VAL_STEM = re.compile(r"ILSVRC2012_val_([0-9]{8})")


@dataclass(frozen=True)
class ValSet:
    """What recognises the full validation set (``fixtures/imagenet_val.toml``)."""

    images: int
    classes: int
    labels_sha256: str  # canonical "STEM LABEL" lines, LABEL = index in fixtures/imagenet_wnids.txt
    wnids_sha256: str  # canonical "STEM WNID" lines: an ImageFolder tree's content
    source: str


@functools.cache
def load_val_set(path: Path = VAL_SET_FILE) -> ValSet:
    """Read and validate ``fixtures/imagenet_val.toml`` (a SpecError names any bad field)."""
    data = load_toml(Path(path))
    if set(data) != {"val"}:
        raise SpecError(f"{path}: expected exactly one [val] table, found {sorted(data) or 'none'}; "
                        f"restore {VAL_SET_SOURCE} from the repository")
    r = Reader(str(path), "val", data["val"])
    val = ValSet(
        images=r.integer("images", 1, 10**7),
        classes=r.integer("classes", 1, 10**6),
        labels_sha256=hex_string(r, "labels_sha256", (64,)) or "",
        wnids_sha256=hex_string(r, "wnids_sha256", (64,)) or "",
        source=r.text("source"),
    )
    r.integer("images_per_class", 1, 10**7, None)
    hex_string(r, "source_file_sha256", (64,))
    r.finish()
    if not val.labels_sha256 or not val.wnids_sha256:
        raise r.fail("labels_sha256/wnids_sha256", "both digests", "<missing>")
    return val


def stem(name: str) -> str:
    """An image file name without its extension: the canonical form ignores how it was encoded.
    The stem predictions are joined by (:func:`harness.data.labels.image_stem`)."""
    return image_stem(name)


def canonical_sha256(names: Iterable[str], labels: Iterable[object]) -> str:
    """SHA-256 of the sorted ``STEM LABEL`` lines (UTF-8, each ending in a newline).

    The form ``fixtures/imagenet_val.toml`` stores: independent of the order images were listed
    in, of the label file's layout and of the images' file extension. A name that is not UTF-8
    counts as its bytes on disk.
    """
    names, labels = list(names), list(labels)
    if len(names) != len(labels):
        raise DataError(f"{len(names)} image names but {len(labels)} labels; expected one label per image")
    lines = sorted(name_bytes(stem(n)) + f" {label}\n".encode() for n, label in zip(names, labels, strict=True))
    return hashlib.sha256(b"".join(lines)).hexdigest()


def label_file_is_canonical(path: Path, val: ValSet | None = None) -> bool:
    """Whether ``path`` is the full validation ground truth, by content (any line order, extension)."""
    val = val or load_val_set()
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _label_file_digest(str(path), st.st_size, st.st_mtime_ns) == val.labels_sha256


@functools.lru_cache(maxsize=16)
def _label_file_digest(path: str, size: int, mtime_ns: int) -> str | None:
    # Keyed by size and mtime too, so an edited file is read again; a file that is no label file
    # of the 1000 classes (wrong format, other class count) is simply not the canonical one.
    try:
        labels = read_labels(Path(path), 1000)
    except DataError:
        return None
    return canonical_sha256(labels, labels.values())


@dataclass(frozen=True)
class Coverage:
    """How much of the ILSVRC2012 validation set a run scored, and how that was decided.

    ``kind``: ``full`` | ``subset`` | ``other`` (module docstring). ``images``: how many were
    scored; ``total``: the validation set's size (50,000). ``chosen_by``: how the images were
    picked (all of them, ``--limit N`` hash order, the folder the user gave). ``recognised_by``:
    the evidence for ``kind`` (the digest compared, or what did not match).
    """

    kind: str
    images: int
    total: int
    chosen_by: str
    recognised_by: str

    @property
    def full(self) -> bool:
        return self.kind == "full"

    @property
    def not_applicable(self) -> str:
        """Why a full-set comparison (the published gate) cannot be decided here ("" when full)."""
        if self.kind == "full":
            return ""
        if self.kind == "subset":
            return f"subset of {self.images} images"
        return f"not the ILSVRC2012 validation set ({self.images} images)"

    def describe(self) -> str:
        """One line for a record or a message."""
        if self.kind == "full":
            return (f"full: all {self.total:,} ILSVRC2012 val images with the canonical labels "
                    f"({self.recognised_by})")
        if self.kind == "subset":
            return (f"subset: {self.images:,} of {self.total:,} ILSVRC2012 val images, chosen by "
                    f"{self.chosen_by}; {self.recognised_by}")
        return (f"other: {self.images:,} images that are not the ILSVRC2012 validation set "
                f"({self.recognised_by}); chosen by {self.chosen_by}")

    def short(self) -> str:
        """A few words for a message's first line (harness.judge.headline): ``1,300 images (subset)``;
        :meth:`describe` follows on a later line."""
        return f"{self.images:,} images ({self.kind})"

    def as_record(self) -> dict[str, object]:
        """The record fields: ``dataset_coverage``, ``images``, and the explanation."""
        return {"dataset_coverage": self.kind, "images": self.images, "dataset_coverage_detail": self.describe()}


def coverage(listing: DatasetListing, limit: int | None = None, val: ValSet | None = None) -> Coverage:
    """The coverage of ``listing``; ``limit`` is the ``--limit`` the listing was made with (None:
    none). The listing does not remember it, and a subset cannot be told from a folder the user
    filled by hand without it."""
    chosen = f"the images under {listing.image_dir}"
    if listing.imagefolder is not None and not listing.imagefolder.full:
        chosen += f" ({listing.imagefolder.describe()})"
    skipped = [f"{k} {what}" for k, what in ((listing.skipped_unlabeled, "images without a label"),
                                              (listing.skipped_missing, "labels without an image")) if k]
    if skipped:
        chosen += f", leaving out {' and '.join(skipped)} (--on-label-mismatch intersect)"
    canonical_file = listing.label_file is not None and label_file_is_canonical(listing.label_file, val)
    return coverage_of(
        listing.names, listing.labels, folders=listing.folders, limit=limit, chosen=chosen,
        label_source=listing.label_source, canonical_labels=canonical_file, val=val,
    )


def coverage_of(
    names: Sequence[str],
    labels: Sequence[int],
    *,
    folders: Sequence[str] = (),
    limit: int | None = None,
    chosen: str = "the images given",
    label_source: str = "",
    canonical_labels: bool = False,
    val: ValSet | None = None,
) -> Coverage:
    """The coverage of scored images ``names`` with ``labels`` (class indices in
    ``fixtures/imagenet_wnids.txt`` order); ``folders``: each image's wnid folder (ImageFolder).

    ``canonical_labels``: the labels came from a label file recognised as the full ground truth
    (:func:`label_file_is_canonical`), so a subset's labels are known to be canonical too.
    ``chosen`` says how the images were picked unless ``limit`` (the ``--limit`` given) picked them.
    """
    val = val or load_val_set()
    n = len(names)
    if n == 0:
        raise DataError("no images to judge the coverage of; expected at least one listed image")
    if folders and len(folders) != n:
        raise DataError(f"{n} image names but {len(folders)} wnid folders; expected one folder per image")
    if len(labels) != n:
        raise DataError(f"{n} image names but {len(labels)} labels; expected one label per image")
    if limit is not None and limit == n:
        chosen = (f"--limit {limit} (the first {limit} images in SHA-256-of-file-name order, "
                  f"harness.data.listing, of {chosen})")
    not_val = [name for name in names if not _is_val_name(name, val.images)]
    if not_val:
        return Coverage(
            "other",
            n,
            val.images,
            chosen,
            f"{len(not_val)} of them not named like ILSVRC2012 val images "
            f"(ILSVRC2012_val_00000001 ... {val.images:08d}), e.g. {examples([shown(n) for n in not_val], 3)}",
        )
    if n > val.images:
        return Coverage("other", n, val.images, chosen,
                        f"more images than the {val.images:,} of the validation set (repeated names?)")
    if n == val.images:
        if folders:
            digest, form, expected = canonical_sha256(names, folders), "STEM WNID", val.wnids_sha256
        else:
            digest, form, expected = canonical_sha256(names, labels), "STEM LABEL", val.labels_sha256
        how = f"SHA-256 of the {n:,} sorted '{form}' lines {digest[:16]}..."
        if digest == expected:
            return Coverage("full", n, val.images, "all of them",
                            f"{how} matches {VAL_SET_SOURCE}")
        return Coverage("other", n, val.images, chosen,
                        f"every val image, but the labels differ from the canonical ones: {how}, "
                        f"expected {expected[:16]}... ({VAL_SET_SOURCE}); another label file, or "
                        f"another class order than {WNIDS_SOURCE}")
    where = f" ({label_source})" if label_source else ""
    if canonical_labels:
        labels_note = (f"labels{where}, a file recognised as the full ground truth "
                       f"(its digest matches {VAL_SET_SOURCE})")
    else:
        labels_note = (f"labels{where} not checked against the canonical ones (only the full "
                       f"list's digest is stored, in {VAL_SET_SOURCE})")
    return Coverage("subset", n, val.images, chosen, labels_note)


def _is_val_name(name: str, images: int) -> bool:
    match = VAL_STEM.fullmatch(stem(name))
    return match is not None and 1 <= int(match.group(1)) <= images
