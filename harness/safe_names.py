"""Names and text that come from data, made safe: as a file name, and as printed text.

The suite builds file names from data it does not trust (docs/security.md): a model
field of a results file merged from another machine names a report plot, a test's node name (made of
model names) names its localisation folder. And it prints text from files: a reference file's model,
a results file's fields in the report and on the terminal, error messages quoting them.

- :func:`safe_component`: any text as ONE path component, readable for ordinary names
  (``efficientnet_lite0``, ``test_accuracy[efficientnet_lite0-cpu-bs8]`` unchanged), every other
  character ``%XX``-escaped byte by byte (UTF-8; a lone surrogate of a non-UTF-8 file name by its
  own three bytes), so two different names never give the same component; never empty, ``.`` or
  ``..``, no separator, NUL, control character, Windows-reserved character or device name (``CON``,
  ``NUL.png``), no leading or trailing dot; at most :data:`MAX_COMPONENT` characters (a longer name
  keeps its start and ends in ``~`` and 16 hex digits of its SHA-256; the empty name is ``~empty``:
  a ``~`` is escaped in every other case, so these forms never meet another name's).
- :func:`inside`: the check every writer that joins such a component makes before writing: the
  path, as written and with its symlinks resolved, is below the folder (a ``plots`` symlink planted
  in a results folder from elsewhere, used as the report's folder, is refused, not followed).
- :func:`printable_errors`: around a command, a :class:`~harness.errors.UsageError` or an ``OSError``
  whose message quotes such text is re-raised with the message escaped.
- :func:`printable`: text safe for a terminal, a Markdown table cell or HTML: control characters
  (C0, DEL, C1 such as U+0085), line and paragraph separators (U+2028, U+2029), format characters
  (bidirectional overrides, zero-width), lone surrogates and unassigned code points are shown
  escaped the way Python writes them (``\\x1b``, ``\\n``, ``\\u2028``, ``\\udcff``). Ordinary text,
  backslashes included, is unchanged, so applying it twice changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import UsageError

MAX_COMPONENT = 120  # characters (ASCII): room for "-localization-<n>.png" and a ".<name>.tmp-<pid>" under 255
HASH_DIGITS = 16
EMPTY = "~empty"
_KEPT = frozenset(string.ascii_letters + string.digits + "._-+=@,[]()")
# Windows device names, also with an extension (NUL.png); COM0 and LPT0 included
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\.|$)", re.IGNORECASE)
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class UnsafePath(UsageError, ValueError):
    """A path would land outside the folder it was meant for: through a symlink inside that folder
    pointing out of it (the folder came from elsewhere), or a harness bug (every path built from data
    is built with :func:`safe_component`). Refused with one error line, nothing written."""


def _utf8(text: str) -> bytes:
    """Every code point by its UTF-8 form, lone surrogates too (one-to-one)."""
    return text.encode("utf-8", "surrogatepass")


def _escape(char: str) -> str:
    return "".join(f"%{b:02X}" for b in _utf8(char))


def safe_component(text: object) -> str:
    """``text`` (``str()`` of it) as one file or folder name that is safe on every OS; different
    texts give different names (see the module's docstring for the rules)."""
    text = str(text)
    if not text:
        return EMPTY
    out = "".join(c if c in _KEPT else _escape(c) for c in text)
    if out.startswith("."):  # ".", "..", a hidden file
        out = "%2E" + out[1:]
    if out.endswith("."):  # Windows drops trailing dots
        out = out[:-1] + "%2E"
    if _RESERVED.match(out):
        out = _escape(out[0]) + out[1:]
    if len(out) > MAX_COMPONENT:
        prefix = out[:MAX_COMPONENT - 1 - HASH_DIGITS]
        cut = prefix.find("%", len(prefix) - 2)  # do not split a %XX escape
        prefix = prefix[:cut] if cut >= 0 else prefix
        out = f"{prefix}~{hashlib.sha256(_utf8(text)).hexdigest()[:HASH_DIGITS]}"
    return out


def _below(root: str, full: str) -> bool:
    try:
        return full != root and os.path.commonpath([root, full]) == root
    except ValueError:  # another drive
        return False


def inside(base: Path | str, path: Path | str) -> Path:
    """``path``, after checking that it names something strictly below ``base``, both as written
    (absolute and normalised: a ``..`` or an absolute part cannot step out) and with symlinks
    resolved (a symlink below ``base`` cannot lead out); raises :class:`UnsafePath` otherwise."""
    base_abs, path_abs = os.path.abspath(base), os.path.abspath(path)
    if not (_below(os.path.normpath(base_abs), os.path.normpath(path_abs))
            and _below(os.path.realpath(base_abs), os.path.realpath(path_abs))):
        raise UnsafePath(f"refusing to write {printable(os.fspath(path))}: it is not inside "
                         f"{printable(os.fspath(base))} (a name from data, or a symlink leading out of the folder)")
    return Path(path)


def child(base: Path | str, name: object, suffix: str = "") -> Path:
    """``base / (safe_component(name) + suffix)``, checked with :func:`inside`."""
    return inside(base, Path(base) / (safe_component(name) + suffix))


def _shown(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """``text`` (``str()`` of it) with every character that could move a terminal's cursor, change
    its colours or title, break a line or a table row, or not be encodable as UTF-8, shown escaped;
    ``newlines=True`` keeps ``\\n`` (a line break the caller means)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        c if (newlines and c == "\n") or unicodedata.category(c) not in _ESCAPED_CATEGORIES else _shown(c)
        for c in text)


@contextmanager
def printable_errors() -> Iterator[None]:
    """Re-raise a :class:`~harness.errors.UsageError` or an ``OSError`` (the two ``python -m harness``
    prints as one ``error:`` line) whose message is not :func:`printable` as a ``UsageError`` with the
    message escaped; any other exception, and a clean message, passes unchanged."""
    try:
        yield
    except UsageError as exc:
        if printable(exc) == str(exc):
            raise
        raise UsageError(printable(exc)) from None
    except OSError as exc:
        text = f"{exc.filename or ''}: {exc.strerror or exc}" if exc.filename is not None else str(exc)
        if printable(text) == text:
            raise
        raise UsageError(printable(text)) from None
