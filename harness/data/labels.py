"""Class labels: ModelZoo label files (``val_label.txt``) and the ILSVRC2012 wnid order.

A label file maps image file names to 0-based class indices (``ILSVRC2012_val_00000001.JPEG 65``
per line); an ImageFolder tree's class is the position of its folder's wnid in
``fixtures/imagenet_wnids.txt``. Both readers refuse anything malformed with a :class:`DataError`
naming the file and line. Joining labels to images is :mod:`harness.data.listing`'s job.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from harness.data.errors import DataError, examples
from harness.specs import FIXTURES_DIR

LABEL_FILE_NAME = "val_label.txt"
# The class order of an ImageFolder tree: ILSVRC2012's wnids sorted (fixtures/README.md).
WNIDS_FILE = FIXTURES_DIR / "imagenet_wnids.txt"
WNIDS_SOURCE = "fixtures/imagenet_wnids.txt"
WNID_PATTERN = re.compile(r"n[0-9]{8}")
# A class index: ASCII digits only (a minus sign is read, to be refused as out of range). int()
# would also take "1_0" (10), "+3" and any Unicode digit ("\u0661\u0662" is 12): a label file that
# needs any of them is not a ModelZoo label file.
CLASS_INDEX = re.compile(r"-?[0-9]+")
# Everything str.splitlines() breaks a line at: a name holding one cannot be written on one line
# of a label file, a names file or a message, and str.split() reads it as a field separator.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def shown(name: str) -> str:
    """``name`` as a message shows it: as is when printable, else quoted with escapes.

    A byte that is not UTF-8 (a surrogate from :func:`os.fsdecode`) is shown as ``\\xNN``, a
    line break or control character as its Python escape (``\\n``, ``\\u2028``), so that the
    message stays on one line and names the file exactly.
    """
    if name.isprintable():
        return name
    parts = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            parts.append("\\\\")
        else:
            parts.append(ch if ch.isprintable() else repr(ch)[1:-1])
    return "'" + "".join(parts) + "'"


def name_bytes(name: str) -> bytes:
    """The bytes of a file name as the OS holds them (UTF-8; a surrogate-escaped byte as itself).

    Every name :func:`os.scandir` returns round-trips; a string no OS listing could produce (a
    lone surrogate outside U+DC80..U+DCFF) is a :class:`DataError`.
    """
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise DataError(
            f"image name {shown(name)} is not a file name (it holds a lone surrogate that no "
            f"directory listing produces); expected names as os.listdir returns them"
        ) from None


def image_stem(name: str) -> str:
    """A file name without its extension, as predictions are joined to images (``Path.stem``:
    ``ILSVRC2012_val_00000001.JPEG`` -> ``ILSVRC2012_val_00000001``; a dot file keeps its name)."""
    i = name.rfind(".")
    return name[:i] if 0 < i < len(name) - 1 else name


def read_labels(path: Path, num_classes: int = 1000) -> dict[str, int]:
    """Parse a ModelZoo label file: one ``ILSVRC2012_val_00000001.JPEG 65`` per line.

    Blank lines are ignored. Raises :class:`DataError` naming the file and line for a wrong field
    count, a label that is not ASCII digits (``1_0``, ``-1``, Unicode digits), a label outside
    ``[0, num_classes)``, a name with a ``/`` (a path, not a file name), a repeated image name,
    two names of one stem (``X.JPEG`` and ``X.png``: predictions are joined by stem), an empty
    file or a missing file.
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
    stems: dict[str, str] = {}
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
                f"{_short(line.strip())!r}; fix that line or pass the right file with --imagenet-labels FILE"
            )
        name, raw = fields
        if not CLASS_INDEX.fullmatch(raw):
            raise DataError(
                f"{path}:{lineno}: expected an integer class index of ASCII digits 0-9, found {_short(raw)!r} "
                f"(line {_short(line.strip())!r}); labels are 0-based class indices, not synset ids"
            )
        # Compared as text first: int() refuses more than 4300 digits (a ValueError).
        label = int(raw) if len(raw.lstrip("-0")) <= len(str(num_classes)) else num_classes
        if not 0 <= label < num_classes:
            raise DataError(
                f"{path}:{lineno}: expected a label in [0, {num_classes}), found {_short(raw)} "
                f"(line {_short(line.strip())!r}); is this label file for another dataset or 1-based?"
            )
        if "/" in name or "\0" in name:
            raise DataError(
                f"{path}:{lineno}: expected an image file name, found {name!r}, a path; labels are "
                f"joined to the images of one folder by file name: write the name without folders"
            )
        if name in labels:
            raise DataError(
                f"{path}:{lineno}: image {name!r} is labelled twice (first on line "
                f"{first_line[name]}); expected one line per image, remove the duplicate"
            )
        stem = image_stem(name)
        if stem in stems:
            other = stems[stem]
            raise DataError(
                f"{path}:{lineno}: images {other!r} (line {first_line[other]}) and {name!r} have "
                f"the same stem {stem!r}; predictions are joined to labels by stem (ais_bench "
                f"writes <stem>_0.*), so expected one label per stem: remove one of the two lines"
            )
        labels[name] = label
        first_line[name] = lineno
        stems[stem] = name
    if not labels:
        raise DataError(
            f"label file {path} is empty; expected one 'ILSVRC2012_val_00000001.JPEG 65' line per "
            f"image; pass the right file with --imagenet-labels FILE"
        )
    return labels


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a message (a 5000-digit label stays readable)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@functools.cache
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
    malformed = [w for w in lines if not WNID_PATTERN.fullmatch(w)]
    problem = ""
    if len(lines) != 1000:
        problem = f"{len(lines)} wnids"
    elif malformed:
        problem = f"malformed entries {examples(malformed)}"
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
