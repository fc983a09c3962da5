"""Guarded readers of files from outside the trust boundary (docs/security.md).

JSON text (result.json, a reference file's index, results lines), ``.npy`` arrays (ais_bench
predictions, reference-file members) and zip members (reference files) come from other machines
and other people. Each reader here learns what it is about to allocate from the data's own header
(nesting depth, number sizes, an ``.npy`` header's shape and dtype, a zip's central directory),
checks it against what the caller expects and a hard cap, and only then allocates; a refusal is
an :class:`UntrustedInput` (a :class:`~harness.errors.UsageError`) naming ``where`` and what was
found. Callers add the fix and re-raise it as their own error (``DataError``,
``PredictionsError``, ``ReferenceFileError``).

Python's own readers fail otherwise in ways no caller expects: ``json.loads`` raises
``RecursionError`` on 100,000 nested brackets and ``ValueError`` on an integer of more than 4300
digits, turns ``1e999`` into infinity; ``np.load`` allocates whatever a 192-byte header claims
(3.6 TiB: a ``MemoryError``), and accepts complex, datetime and string arrays; ``ZipFile.read``
allocates a member's whole declared size before anything is checked.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

# Nothing the suite writes nests deeper than ~10 (a results line: record -> part -> mapping ->
# list); 64 leaves room and keeps every later recursive walk (json.dumps, repr) far from Python's
# recursion limit.
MAX_JSON_DEPTH = 64
# The longest number token: an int64, a float's 17 significant digits with an exponent, and room.
# Python refuses ints over 4300 digits with a ValueError; far longer floats parse, slowly.
MAX_NUMBER_CHARS = 100
# An .npy header is a few dozen bytes padded to 64 (np.save); numpy's own limit is 10,000.
MAX_NPY_HEADER = 10_000
# The largest array read_npy allocates unless a caller says otherwise (the expected shape does).
DEFAULT_MAX_NPY_BYTES = 512 << 20
_CHUNK = 1 << 20

Source = Path | str | bytes | bytearray | memoryview


class UntrustedInput(UsageError, ValueError):
    """Data from outside refused before it could cost memory or crash a reader: the message
    names where it came from, what was expected and what was found."""


class JsonSyntaxError(UntrustedInput, json.JSONDecodeError):
    """Text that is not JSON. A :class:`json.JSONDecodeError` too (``msg``, ``pos``, ``lineno``,
    ``colno``), so a caller can tell a line cut short from a garbled one; ``str()`` is the
    message naming where."""

    def __init__(self, message: str, cause: json.JSONDecodeError) -> None:
        json.JSONDecodeError.__init__(self, cause.msg, cause.doc, cause.pos)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> Any:  # picklable across worker processes despite the two-argument __init__
        return (_rebuild_syntax_error, (self.args[0], self.msg, self.doc, self.pos))


def _rebuild_syntax_error(message: str, msg: str, doc: str, pos: int) -> JsonSyntaxError:
    return JsonSyntaxError(message, json.JSONDecodeError(msg, doc, pos))


# -- JSON ---------------------------------------------------------------------------------------

# A JSON string, escapes included (the unrolled form is linear and fast); what remains outside
# strings is counted for brackets.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", np.uint8)
_CLOSE = np.frombuffer(b"]}", np.uint8)


def json_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside strings, without parsing it (an upper
    bound when the text is not JSON: an unterminated string's brackets are counted)."""
    if "[" not in text and "{" not in text:
        return 0
    outside = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "surrogatepass"), np.uint8)
    opens = np.isin(outside, _OPEN)
    brackets = opens | np.isin(outside, _CLOSE)
    steps = np.where(opens[brackets], 1, -1)
    return int(np.cumsum(steps).max(initial=0))


class _Refused(UntrustedInput):
    """Raised from inside json.loads' hooks (without ``where``); re-raised with it."""


def load_json_text(text: str | bytes | bytearray, where: str, *, max_depth: int = MAX_JSON_DEPTH,
                   max_number_chars: int = MAX_NUMBER_CHARS, nonfinite: bool = False) -> Any:
    """``json.loads(text)`` for text from outside: nesting deeper than ``max_depth`` and number
    tokens longer than ``max_number_chars`` are refused before they are parsed; ``NaN``,
    ``Infinity`` and numbers that overflow to infinity (``1e999``) are refused unless
    ``nonfinite`` (results files, whose writer spells a missing figure ``NaN``). Bytes must be
    UTF-8. Raises :class:`JsonSyntaxError` for text that is not JSON and :class:`UntrustedInput`
    for the rest, each naming ``where``; never another exception."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UntrustedInput(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise UntrustedInput(f"{where}: JSON nested {depth} deep, more than the {max_depth} levels any file of "
                             "this suite has; refused before parsing")

    def number(token: str, kind: type) -> Any:
        if len(token) > max_number_chars:
            raise _Refused(f"a number of {len(token)} characters ({token[:20]}...), more than {max_number_chars}")
        value = kind(token)
        if not nonfinite and isinstance(value, float) and not math.isfinite(value):
            raise _Refused(f"the number {token[:40]} is not a finite float")
        return value

    def constant(token: str) -> float:
        if not nonfinite:
            raise _Refused(f"{token} is not a number JSON allows")
        return float(token)

    try:
        return json.loads(text, parse_int=lambda t: number(t, int), parse_float=lambda t: number(t, float),
                          parse_constant=constant)
    except _Refused as exc:
        raise UntrustedInput(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", exc) from None
    except (RecursionError, ValueError, MemoryError) as exc:  # the depth was checked: the stack was already deep
        raise UntrustedInput(f"{where}: not readable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_json_file(path: Path | str, max_bytes: int, where: str | None = None, **limits: Any) -> Any:
    """A whole JSON file from outside: its size checked against ``max_bytes`` before it is read,
    then :func:`load_json_text` (``limits`` passed on). OSError becomes :class:`UntrustedInput`."""
    where = where or str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise UntrustedInput(f"{where}: {size} bytes, more than the {max_bytes} such a JSON file may have")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UntrustedInput(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while being read, or not a regular file
        raise UntrustedInput(f"{where}: more than the {max_bytes} bytes such a JSON file may have")
    return load_json_text(data, where, **limits)


# -- .npy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` header promises: ``offset`` is where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def _prefix(source: Source, count: int) -> tuple[bytes, int]:
    """The first ``count`` bytes of ``source`` and its total length."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        return bytes(view[:count]), view.nbytes
    with open(source, "rb") as fh:
        return fh.read(count), os.fstat(fh.fileno()).st_size


def npy_header(source: Source, where: str) -> NpyHeader:
    """The header of an ``.npy`` file or buffer, read without reading (or allocating) its data."""
    try:
        head, total = _prefix(source, 12 + MAX_NPY_HEADER)
    except OSError as exc:
        raise UntrustedInput(f"{where}: cannot read it ({exc.strerror or exc})") from None
    buf = io.BytesIO(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's "created on Python 2" note
            version = np.lib.format.read_magic(buf)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"npy format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
    except Exception as exc:  # anything numpy's header parser raises is a fact about this header
        raise UntrustedInput(f"{where}: not a readable .npy header ({type(exc).__name__}: {str(exc)[:200]})") from None
    offset = buf.tell()
    if any(d < 0 for d in shape):
        raise UntrustedInput(f"{where}: .npy header with a negative dimension, shape {shape}")
    if offset > total:
        raise UntrustedInput(f"{where}: truncated .npy header")
    return NpyHeader(tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran), offset)


def _dtype_problem(dtype: np.dtype, kinds: str) -> str | None:
    if dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject:
        return f"a structured or object dtype ({dtype})"
    if dtype.kind not in kinds:
        names = {"f": "float", "i": "signed integer", "u": "unsigned integer"}
        return f"dtype {dtype} ({dtype.kind!r} kind), expected {' or '.join(names.get(k, k) for k in kinds)}"
    return None


def read_npy(source: Source, where: str, *, shape: tuple[int, ...] | None = None, size: int | None = None,
             kinds: str = "f", finite: bool = True, max_bytes: int = DEFAULT_MAX_NPY_BYTES) -> np.ndarray:
    """An ``.npy`` array from a path or a buffer, its header checked before any data is read:
    ``shape`` exactly or ``size`` values in any shape, a dtype of ``kinds`` (numpy kind letters:
    ``"f"`` float, ``"fiu"`` also integers; never object, structured, complex, datetime, string or
    bool), at most ``max_bytes`` of data, and exactly that many bytes after the header. Fortran
    order is read as numpy reads it. ``finite``: NaN and infinity refused. A buffer's array is a
    view of it when the buffer is writable (a ``bytearray``), else a copy."""
    header = npy_header(source, where)
    problem = _dtype_problem(header.dtype, kinds)
    if problem:
        raise UntrustedInput(f"{where}: {problem}")
    if shape is not None and header.shape != tuple(shape):
        raise UntrustedInput(f"{where}: an array of shape {header.shape}, expected {tuple(shape)}")
    if size is not None and header.size != size:
        raise UntrustedInput(f"{where}: an array of {header.size} values (shape {header.shape}), expected {size}")
    if header.nbytes > max_bytes:
        raise UntrustedInput(f"{where}: its header promises {header.nbytes} bytes of data (shape {header.shape} "
                             f"{header.dtype}), more than the {max_bytes} allowed")
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source)
            data: Any = view[header.offset:]
            available = data.nbytes
        else:
            with open(source, "rb") as fh:
                available = os.fstat(fh.fileno()).st_size - header.offset
                data = bytearray(header.nbytes) if available == header.nbytes else None
                if data is not None:
                    fh.seek(header.offset)
                    got = fh.readinto(data)
                    available = got if got is not None else 0
    except OSError as exc:
        raise UntrustedInput(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if available != header.nbytes:
        raise UntrustedInput(f"{where}: {available} bytes of data after the .npy header, which promises "
                             f"{header.nbytes} (shape {header.shape} {header.dtype}); the file is truncated or padded")
    array = np.frombuffer(data, dtype=header.dtype, count=header.size).reshape(
        header.shape, order="F" if header.fortran_order else "C")
    if not array.flags.writeable:
        array = array.copy()
    if finite and header.dtype.kind == "f" and not np.isfinite(array).all():
        raise UntrustedInput(f"{where}: holds NaN or infinite values")
    return array


# -- zip ----------------------------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = b"PK\x06\x07"


def check_zip_directory(path: Path | str, where: str, *, max_members: int, max_directory_bytes: int) -> None:
    """Before :class:`zipfile.ZipFile` reads a zip's central directory into memory (a ZipInfo of
    ~0.5 KB per member, however many a small file declares): its member count and size from the
    end record, at most ``max_members`` and ``max_directory_bytes``. ZIP64 is refused (the files
    this suite writes never need it). A file that is no zip is left to ZipFile to refuse."""
    try:
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size
            start = max(0, total - (_EOCD.size + 0xFFFF))
            fh.seek(start)
            tail = fh.read()
    except OSError as exc:
        raise UntrustedInput(f"{where}: cannot read it ({exc.strerror or exc})") from None
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return
    _sig, _disk, _cd_disk, _on_disk, members, cd_size, _cd_offset, _comment = _EOCD.unpack_from(tail, at)
    if at >= 20 and tail[at - 20:at - 16] == _ZIP64_LOCATOR:
        raise UntrustedInput(f"{where}: a ZIP64 archive; the files this suite writes are plain zips")
    if members > max_members:
        raise UntrustedInput(f"{where}: {members} members, more than the {max_members} allowed")
    if cd_size > max_directory_bytes:
        raise UntrustedInput(f"{where}: a central directory of {cd_size} bytes, more than the {max_directory_bytes} "
                             "allowed")


def read_zip_member(zf: zipfile.ZipFile, name: str, where: str, *, max_bytes: int, min_bytes: int = 0,
                    max_ratio: float = 100.0) -> bytearray:
    """One member of ``zf``, streamed: its declared size (``ZipInfo.file_size``) within
    ``min_bytes..max_bytes`` and its compression ratio within ``max_ratio`` (members over 1 MiB)
    before anything is decompressed; then read in 1 MiB chunks, never past ``max_bytes``, and
    refused unless exactly the declared size arrived (zipfile's CRC check runs at its end).
    Only stored and deflated members. A missing member is a ``KeyError``, for the caller to name."""
    info = zf.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UntrustedInput(f"{where}: compression method {info.compress_type}, expected stored or deflated")
    declared = info.file_size
    if not min_bytes <= declared <= max_bytes:
        raise UntrustedInput(f"{where}: declares {declared} bytes, expected {min_bytes}..{max_bytes}")
    if declared > _CHUNK and declared > max_ratio * max(info.compress_size, 1):
        raise UntrustedInput(f"{where}: {info.compress_size} compressed bytes declare {declared} (ratio "
                             f"{declared / max(info.compress_size, 1):.0f}, more than {max_ratio:g}): a zip bomb?")
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(min(_CHUNK, max_bytes + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
                if len(out) > max_bytes:
                    raise UntrustedInput(f"{where}: streams more than {max_bytes} bytes")
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, ValueError, struct.error,
            zlib.error) as exc:
        raise UntrustedInput(f"{where}: unreadable member ({type(exc).__name__}: {str(exc)[:200]})") from None
    if len(out) != declared:
        raise UntrustedInput(f"{where}: {len(out)} bytes streamed, its header declares {declared}")
    return out
