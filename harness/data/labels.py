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
