"""Content-addressed artifact cache shared by sessions, xdist workers and separate processes.

An entry lives at ``<root>/<kind>/<key>/`` where ``key`` is the SHA-256 of a canonical JSON of
every input that decides the artifact. It is built in a temporary sibling directory and appears
with one atomic ``rename`` once complete, its ``manifest.json`` written last inside it, so no
reader ever sees a half-written entry; an interrupted build leaves only a ``.tmp-*`` directory
that the next build of that key removes. A ``FileLock`` per key makes concurrent builders wait
for the first one instead of building twice.

What is on disk is not trusted once written (disks and people edit files): the manifest records
every file's size and SHA-256 and its own checksum, and every read verifies the entry
(:mod:`harness.cache_verify`: sizes always, content of files up to 256 MiB always and of larger
ones with ``verify_all``). An entry that fails is never used: :meth:`ArtifactCache.get_or_build`
warns (:class:`CacheEntryRebuilt`), removes it and builds it again; readers without a build
function (:meth:`ArtifactCache.lookup`, :meth:`ArtifactCache.entries`) refuse it with an
:class:`UnverifiedEntry`, a :class:`CacheError` naming the directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.cache_verify import (  # canonical_json, content_key: re-exported, imported from here
    MANIFEST_FORMAT,
    canonical_json,
    content_key,
    describe_files,
    manifest_problem,
    remember,
    sealed,
    verify_files,
)
from harness.errors import HarnessError, UsageError

MANIFEST = "manifest.json"
DEFAULT_CACHE_ENV = "MZC_CACHE_DIR"
# Fields the cache writes itself; a build's extra fields may not replace them.
_OWN_FIELDS = ("kind", "key", "inputs", "created", "host", "files", "manifest_format", "manifest_sha256")
_FIX = "delete that directory and rerun to rebuild it"


# errno values that mean "no room": a full disk, or the user's quota on a shared one.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A build that fails while less than this is free most likely failed because the disk filled up.
_FULL_BELOW_BYTES = 1 << 20


class CacheError(HarnessError, RuntimeError):
    """The cache directory cannot be used (permissions, full disk, corrupt entry)."""


class CacheNotWritable(CacheError, UsageError):
    """The cache directory is read-only, not the user's, or under a file: a build cannot start
    there (a usage error: the message says to pass another --cache-dir, no traceback)."""


class UnverifiedEntry(CacheError):
    """A published entry that failed verification (edited, truncated, missing files, a manifest
    that does not match its directory) or cannot be verified (made by an older harness)."""

    def __init__(self, path: Path, problem: str, older: bool = False):
        self.path, self.problem, self.older = Path(path), problem, older
        super().__init__(f"cache entry {path} {self._what()}; it was not used: {_FIX}")

    def _what(self) -> str:
        return f"cannot be verified: {self.problem}" if self.older else f"failed verification: {self.problem}"

    def __reduce__(self) -> Any:  # pickles (pool workers) with its fields, not the message
        return (type(self), (self.path, self.problem, self.older))

    def rebuilding(self) -> str:
        """The warning when a build function is at hand."""
        return f"cache entry {self.path} {self._what()}: not used, removing it and building it again"


class CacheEntryRebuilt(HarnessError, UserWarning):
    """Warning: a cache entry failed verification (or predates it) and is being rebuilt."""


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def free_bytes(path: Path) -> int:
    """Free bytes for unprivileged writers on the file system of ``path`` (or its nearest parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def _tree_bytes(root: Path) -> int:
    """Apparent size of every file under ``root``; 0 when it is gone or unreadable."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _disk_full(
    kind: str, key: str, kind_dir: Path, written: int | None, cause: BaseException | None = None
) -> CacheError:
    # Apparent sizes: a preallocated (sparse) file counts in full, so this is a lower bound of
    # the room the entry needs, exact for the dataset's pixel file.
    size = f"it needs at least {_mb(written)}, " if written else ""
    own = f" (the build's own error: {type(cause).__name__}: {cause})" if cause is not None else ""
    return CacheError(
        f"disk full while writing cache entry {kind}/{key} under {kind_dir}: {size}"
        f"{_mb(free_bytes(kind_dir))} free there{own}; free space there or pass --cache-dir "
        f"(or set ${DEFAULT_CACHE_ENV}) to a disk with room, then rerun: finished entries are reused"
    )


def _unwritable(kind: str, key: str, kind_dir: Path, step: str, exc: OSError) -> CacheError:
    """The cache directory cannot be written (read-only, not ours, full): which, where, and the fix."""
    if exc.errno in _DISK_FULL:
        return _disk_full(kind, key, kind_dir, None)
    why = {errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.ENOTDIR: "a part of that path is a file",
           errno.EEXIST: "a part of that path is a file"}.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheNotWritable(
        f"cache directory {kind_dir} is not writable ({why}: [Errno {exc.errno}] could not {step} for "
        f"entry {kind}/{key}); pass --cache-dir DIR (or set ${DEFAULT_CACHE_ENV}) to a writable place: a "
        "read-only cache can only serve entries that are already in it"
    )


def default_cache_root() -> Path:
    """``$MZC_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelzoo-cert``, else ``~/.cache/modelzoo-cert``."""
    if os.environ.get(DEFAULT_CACHE_ENV):
        return Path(os.environ[DEFAULT_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelzoo-cert"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """A finished cache entry."""

    path: Path
    key: str
    manifest: Mapping[str, Any]
    built_here: bool


class ArtifactCache:
    """Build-once, read-many storage keyed by the content of every input.

    Every read verifies the entry (see the module's docstring); ``verify_all`` (``--verify-cache``)
    hashes the files over :data:`harness.cache_verify.FULL_HASH_BYTES` too, which are otherwise
    checked by size.
    """

    def __init__(self, root: Path, verify_all: bool = False):
        self.root = Path(root)
        self.verify_all = verify_all

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, inputs: Mapping[str, Any]) -> Entry | None:
        """The finished, verified entry for ``inputs``, or None (never a partial one); an entry
        that fails verification is an :class:`UnverifiedEntry`."""
        key = content_key(inputs)
        return self._read(kind, key, built_here=False)

    def entries(self, kind: str, refused: list[UnverifiedEntry] | None = None) -> list[Entry]:
        """Every finished entry of ``kind``, each verified, in key order (builds in progress and
        lock files are not entries). Entries that fail verification are a :class:`CacheError`
        naming each of them, or, when a ``refused`` list is given, appended to it and left out."""
        found: list[Entry] = []
        bad: list[UnverifiedEntry] = []
        kind_dir = self.root / kind
        for path in sorted(kind_dir.iterdir()) if kind_dir.is_dir() else ():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                entry = self._read(kind, path.name, built_here=False)
            except UnverifiedEntry as exc:
                bad.append(exc)
                continue
            if entry is not None:
                found.append(entry)
        if refused is not None:
            refused.extend(bad)
        elif len(bad) == 1:
            raise bad[0]
        elif bad:
            listed = "; ".join(f"{b.path} ({b.problem})" for b in bad)
            raise CacheError(f"{len(bad)} cache entries of {kind} failed verification "
                             f"and were not used: {listed}; delete those directories and rerun to rebuild them")
        return found

    def get_or_build(
        self,
        kind: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        lock_timeout: float = -1,
    ) -> Entry:
        """Return the entry for ``inputs``, calling ``build(tmp_dir)`` once if it is missing.

        ``build`` writes its files into ``tmp_dir`` and may return extra manifest fields; every
        file it wrote is flushed to disk before the entry is published, so it needs no fsync of
        its own. If it raises, nothing is published and the exception propagates; a full disk
        (or quota) is a :class:`CacheError` naming the directory, the room the entry needs and
        the free space. An entry that fails verification is rebuilt with a
        :class:`CacheEntryRebuilt` warning saying what failed.
        """
        key = content_key(inputs)
        try:
            found = self._read(kind, key, built_here=False)
        except UnverifiedEntry:
            found = None  # decided again under the lock: another process may be rebuilding it
        if found is not None:
            return found
        kind_dir = self.root / kind
        try:
            kind_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(kind, key, kind_dir, "create the directory", exc) from exc
        with ExitStack() as held:
            try:
                held.enter_context(FileLock(str(kind_dir / f"{key}.lock"), timeout=lock_timeout))
            except OSError as exc:  # EROFS, EACCES, ENOSPC... creating or opening the lock file
                raise _unwritable(kind, key, kind_dir, "create its lock file", exc) from exc
            try:
                try:
                    found = self._read(kind, key, built_here=False)
                except UnverifiedEntry as bad:
                    warnings.warn(CacheEntryRebuilt(bad.rebuilding()), stacklevel=2)
                    _discard(bad, kind_dir / f".bad-{key}-{socket.gethostname()}-{os.getpid()}")
                if found is not None:
                    return found
                self._build(kind, key, inputs, build, kind_dir)
            except OSError as exc:
                # Creating the temp dir can hit a full disk too, before any build.
                if exc.errno in _DISK_FULL:
                    raise _disk_full(kind, key, kind_dir, None) from exc
                raise
        entry = self._read(kind, key, built_here=True)
        assert entry is not None
        return entry

    def _build(
        self,
        kind: str,
        key: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        kind_dir: Path,
    ) -> None:
        """Build ``kind/key`` in a temp dir and publish it; the caller holds the key's lock."""
        for stale in (*kind_dir.glob(f".tmp-{key}-*"), *kind_dir.glob(f".bad-{key}-*")):
            shutil.rmtree(stale, ignore_errors=True)
        final = kind_dir / key
        if final.exists():
            # A directory without a manifest was never published by us (publishing renames a
            # complete directory): someone deleted the manifest. Rebuild it from scratch.
            warnings.warn(CacheEntryRebuilt(f"cache entry {final} has no {MANIFEST} (deleted after it was "
                                            "published?): removing it and building it again"), stacklevel=3)
            shutil.rmtree(final)
        tmp = kind_dir / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        try:
            tmp.mkdir()
        except OSError as exc:
            raise _unwritable(kind, key, kind_dir, "create its temporary directory", exc) from exc
        try:
            extra = dict(build(tmp) or {})
            clash = sorted(set(extra) & set(_OWN_FIELDS))
            if clash:
                raise ValueError(f"the build of {kind} returned manifest fields the cache writes itself: {clash}")
            files, stamps = describe_files(tmp)
            manifest = sealed({
                **extra,
                "kind": kind,
                "key": key,
                "inputs": json.loads(canonical_json(inputs)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": socket.gethostname(),
                "manifest_format": MANIFEST_FORMAT,
                "files": files,
            })
            _fsync_tree(tmp)
            _write_json_durable(tmp / MANIFEST, manifest)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(kind_dir)
            remember(final, files, stamps)
        except OSError as exc:
            written = _tree_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in _DISK_FULL:
                raise _disk_full(kind, key, kind_dir, written) from exc
            raise
        except Exception as exc:
            # Compilers report a full disk in their own words (ONNX Runtime: "Protobuf
            # serialization failed"); measured before the temp dir is removed, the free space
            # tells whether that is what happened.
            written = _tree_bytes(tmp)
            full = free_bytes(kind_dir) < _FULL_BELOW_BYTES
            shutil.rmtree(tmp, ignore_errors=True)
            if full and not isinstance(exc, CacheError):
                raise _disk_full(kind, key, kind_dir, written, exc) from exc
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _read(self, kind: str, key: str, built_here: bool) -> Entry | None:
        """The verified entry ``kind/key``; None if it has no manifest; :class:`UnverifiedEntry`
        if it fails verification."""
        path = self.entry_dir(kind, key)
        if not (path / MANIFEST).is_file():
            return None
        try:
            manifest = _manifest(path)
            problem, older = manifest_problem(manifest, kind, key)
            if problem is None:
                problem = verify_files(path, manifest.get("files"), full=self.verify_all)
            if problem is not None:
                raise UnverifiedEntry(path, problem, older)
        except UnverifiedEntry:
            if not path.exists():
                return None  # replaced while it was read: gone, as far as this reader knows
            raise
        return Entry(path=path, key=key, manifest=manifest, built_here=built_here)


def _manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON, not UTF-8
        raise UnverifiedEntry(path, f"it has an unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise UnverifiedEntry(path, f"its manifest is a JSON {type(manifest).__name__}, not an object")
    return manifest


def _discard(bad: UnverifiedEntry, aside: Path) -> None:
    """Move a bad entry out of readers' way (one rename), then delete it."""
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(bad.path, aside)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CacheError(f"{bad}; it cannot be removed ({exc.strerror}): delete it by hand") from exc
    shutil.rmtree(aside, ignore_errors=True)


def _write_json_durable(path: Path, data: Mapping[str, Any]) -> None:
    with path.open("w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` so a power loss after the rename cannot expose holes."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if dirpath != str(root):
            _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
