"""Reading a reference-logits file (``python -m harness reference import``): a zip from another
machine, checked before anything in it is allocated.

The file is what :func:`harness.run.reference.export_references` writes: one ``reference.json``
index and one ``.npy`` member of float32 logits per entry, stored. Everything in it is outside
data (docs/security.md), so :func:`read_reference_file` checks, in this order: the
zip's member count and central directory (before :class:`zipfile.ZipFile` reads it); the index's
declared and streamed size and its JSON (depth, number sizes: :mod:`harness.safe_load`); every
index field's type; the key against its inputs; each member's declared size against the shape the
index gives it (and a cap), its compression ratio, the bytes actually streamed; its SHA-256; its
``.npy`` header (shape and dtype) before its data; finally the values. Any failure is a
:class:`ReferenceFileError` naming the file and the fix, never another exception.
"""

from __future__ import annotations

import hashlib
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from harness.cache import content_key
from harness.errors import UsageError
from harness.safe_load import (
    MAX_NPY_HEADER,
    UntrustedInput,
    check_zip_directory,
    load_json_text,
    read_npy,
    read_zip_member,
)

KEY_FORMAT = 2  # 1: keyed by torch version, weights path and the images' stat (before the file format)
FILE_FORMAT = "modelzoo-cert reference-logits"
FILE_VERSION = 1
INDEX = "reference.json"
_FILE_FIELDS = ("key", "inputs", "model", "shape", "sha256", "member")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Limits of a reference file. The full ImageNet val set's logits are 50,000 x 1,000 float32 = 200 MB
# per model: a member may hold 2.5 times that, a file ten such (export fewer models per file beyond).
# An index entry is ~1 KB; 1,024 entries (models) per file is far beyond any registry.
MAX_ENTRIES = 1024
MAX_MEMBER_BYTES = 512 << 20
MAX_TOTAL_BYTES = 2 << 30
MAX_INDEX_BYTES = 16 << 20
MAX_DIRECTORY_BYTES = 4 << 20  # the central directory: ~100 bytes a member, names included
# Logits do not compress (random mantissas: ~1.1x deflated); zeros deflate 1000x. Export stores.
MAX_RATIO = 20.0


class ReferenceFileError(UsageError):
    """A reference-logits file that cannot be imported: not one, corrupt, altered or inconsistent."""


@dataclass(frozen=True)
class FileEntry:
    """One verified entry of a reference file."""

    key: str
    inputs: Mapping[str, Any]
    model: str
    logits: np.ndarray
    origin: Mapping[str, Any]  # torch, computed_host, computed_at


def _shown(value: Any, limit: int = 80) -> str:
    """``value`` for a message, cut: a hostile index may hold megabytes in one field."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _index(zf: zipfile.ZipFile, path: Path) -> Mapping[str, Any]:
    what = f"{path} is not a reference-logits file (python -m harness reference export writes them)"
    try:
        blob = read_zip_member(zf, INDEX, f"{path}: {INDEX}", max_bytes=MAX_INDEX_BYTES)
        index = load_json_text(blob, f"{path}: {INDEX}")
    except KeyError:
        raise ReferenceFileError(f"{what}: it has no {INDEX}") from None
    except UntrustedInput as exc:
        raise ReferenceFileError(f"{exc}; the file is corrupt or not one python -m harness reference export "
                                 "wrote: export it again") from None
    if not isinstance(index, dict) or index.get("format") != FILE_FORMAT:
        found = index.get("format") if isinstance(index, dict) else index
        raise ReferenceFileError(f"{what}: {INDEX} says format {_shown(found)}")
    if index.get("version") != FILE_VERSION:
        raise ReferenceFileError(f"{path}: reference file version {_shown(index.get('version'))}, this harness "
                                 f"reads version {FILE_VERSION}; export it with the same harness version")
    entries = index.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ReferenceFileError(f"{path}: no entries in {INDEX}")
    if len(entries) > MAX_ENTRIES:
        raise ReferenceFileError(f"{path}: {len(entries)} entries in {INDEX}, more than {MAX_ENTRIES}; export "
                                 "fewer models per file")
    return index


def _checked_fields(path: Path, item: Any) -> tuple[str, dict[str, Any], str, str]:
    """``item``'s key, inputs, model and member, every field of the right type; else the error."""
    if not isinstance(item, dict) or any(f not in item for f in _FILE_FIELDS):
        raise ReferenceFileError(f"{path}: an entry of {INDEX} lacks one of {', '.join(_FILE_FIELDS)}; the file "
                                 "is corrupt")
    key, inputs, model, shape, sha, member = (item[f] for f in _FILE_FIELDS)
    wrong = [name for name, ok in (
        ("key", isinstance(key, str) and _HEX64.fullmatch(key)),
        ("inputs", isinstance(inputs, dict)),
        ("model", isinstance(model, str) and 0 < len(model) <= 200),
        ("shape", isinstance(shape, list) and len(shape) == 2 and all(_is_count(d) for d in shape)),
        ("sha256", isinstance(sha, str) and _HEX64.fullmatch(sha)),
        ("member", isinstance(member, str) and 0 < len(member) <= 1024),
    ) if not ok]
    if wrong:
        raise ReferenceFileError(
            f"{path}: an entry of {INDEX} ({_shown(key)}) has field(s) of the wrong type: "
            + ", ".join(f"{name} {_shown(item[name])}" for name in wrong)
            + " (expected a 64-hex-digit key and sha256, an inputs table, a model name, a member name, a shape "
            "[images, classes]); the file is corrupt or was altered, export it again")
    return key, inputs, model, member


def _expected_shape(inputs: Mapping[str, Any], where: str) -> tuple[int, int]:
    """(images, classes) as the key's inputs say: the only shape the entry's logits may have."""
    images = inputs.get("images")
    shape = images.get("shape") if isinstance(images, dict) else None
    classes = inputs.get("num_classes")
    if not (isinstance(shape, list) and shape and _is_count(shape[0]) and _is_count(classes) and classes > 0):
        raise ReferenceFileError(
            f"{where}: its inputs lack the images' shape or the class count (images.shape "
            f"{_shown(shape)}, num_classes {_shown(classes)}); the file is corrupt, export it again"
        )
    return shape[0], classes


def _verified(zf: zipfile.ZipFile, path: Path, item: Any, budget: list[int]) -> FileEntry:
    """One index item, checked: fields, key against its inputs, the member's size before it is read,
    checksum, array header and values. ``budget``: the bytes the file's entries may still take."""
    key, inputs, model, member = _checked_fields(path, item)
    where = f"{path}: entry {key} ({model if model.isprintable() and len(model) <= 80 else _shown(model)})"
    if inputs.get("format") != KEY_FORMAT:
        raise ReferenceFileError(f"{where}: key format {_shown(inputs.get('format'))}, this harness keys "
                                 f"references with format {KEY_FORMAT}; export it with the same version")
    if content_key(inputs) != key:
        raise ReferenceFileError(f"{where}: the key does not match its inputs; the file was altered, export it again")
    expected = _expected_shape(inputs, where)
    if list(expected) != item["shape"]:
        raise ReferenceFileError(
            f"{where}: the file says shape {item['shape']}, its key says {list(expected)} "
            f"({expected[0]} images x {expected[1]} classes); the file was altered, export it again"
        )
    data_bytes = 4 * math.prod(expected)
    if data_bytes > min(MAX_MEMBER_BYTES, budget[0]):
        raise ReferenceFileError(
            f"{where}: {expected[0]} images x {expected[1]} classes of float32 logits are {data_bytes} bytes, more "
            f"than {'one entry' if data_bytes > MAX_MEMBER_BYTES else 'the file'} may hold "
            f"({min(MAX_MEMBER_BYTES, budget[0])} bytes left); export fewer models per file")
    try:
        # Never more than the shape the key gives it (smaller: read_npy says what is wrong).
        blob = read_zip_member(zf, member, f"{where}: member {_shown(member)}",
                               max_bytes=data_bytes + 12 + MAX_NPY_HEADER, max_ratio=MAX_RATIO)
    except KeyError:
        raise ReferenceFileError(f"{where}: member {_shown(member)} is missing; the file is truncated") from None
    except UntrustedInput as exc:
        raise ReferenceFileError(f"{exc}; the file is corrupt or was altered, export it again") from None
    budget[0] -= len(blob)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != item["sha256"]:
        raise ReferenceFileError(f"{where}: checksum mismatch (sha256 {digest}, the file says {item['sha256']}); "
                                 "the file is corrupt or was altered, export it again")
    try:
        logits = read_npy(blob, f"{where}: the logits", shape=expected, kinds="f")
    except UntrustedInput as exc:
        raise ReferenceFileError(f"{exc} (expected {expected[0]} images x {expected[1]} classes of float32, as "
                                 "its key says); the file was altered, export it again") from None
    if logits.dtype != np.float32:
        raise ReferenceFileError(f"{where}: logits of shape {logits.shape} {logits.dtype}, expected {expected} float32 "
                                 f"({expected[0]} images x {expected[1]} classes, as its key says)")
    origin = {k: item.get(k) for k in ("torch", "computed_host", "computed_at", "reference_path")}
    return FileEntry(key=key, inputs=inputs, model=model, logits=logits, origin=origin)


def read_reference_file(path: Path) -> tuple[Mapping[str, Any], list[FileEntry]]:
    """The file's index and every entry, each verified; a :class:`ReferenceFileError` otherwise."""
    try:
        check_zip_directory(path, str(path), max_members=MAX_ENTRIES + 1,
                            max_directory_bytes=MAX_DIRECTORY_BYTES)
        with zipfile.ZipFile(path) as zf:
            index = _index(zf, path)
            budget = [MAX_TOTAL_BYTES]
            return index, [_verified(zf, path, item, budget) for item in index["entries"]]
    except UntrustedInput as exc:
        raise ReferenceFileError(f"{exc}: not a reference-logits file as python -m harness reference export "
                                 "writes them") from None
    except zipfile.BadZipFile as exc:
        raise ReferenceFileError(f"{path} is not a reference-logits file ({exc}): expected the zip file "
                                 "python -m harness reference export writes") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ReferenceFileError(f"{path}: unreadable reference file ({type(exc).__name__}: {exc})") from exc
