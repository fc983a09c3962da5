"""Content-addressed artifact cache shared by sessions, xdist workers and separate processes.

An entry lives at ``<root>/<kind>/<key>/`` where ``key`` is the SHA-256 of a canonical JSON of
every input that decides the artifact. It is built in a temporary sibling directory and appears
with one atomic ``rename`` once complete, its ``manifest.json`` written last inside it, so no
reader ever sees a half-written entry; an interrupted build leaves only a ``.tmp-*`` directory
that the next build of that key removes. A ``FileLock`` per key makes concurrent builders wait
for the first one instead of building twice.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock

from harness.errors import HarnessError

MANIFEST = "manifest.json"
DEFAULT_CACHE_ENV = "MZC_CACHE_DIR"


# errno values that mean "no room": a full disk, or the user's quota on a shared one.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A build that fails while less than this is free most likely failed because the disk filled up.
_FULL_BELOW_BYTES = 1 << 20


class CacheError(HarnessError, RuntimeError):
    """The cache directory cannot be used (permissions, full disk, corrupt entry)."""


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


def default_cache_root() -> Path:
    """``$MZC_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelzoo-cert``, else ``~/.cache/modelzoo-cert``."""
    if os.environ.get(DEFAULT_CACHE_ENV):
        return Path(os.environ[DEFAULT_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelzoo-cert"


def _not_json(value: Any) -> Any:
    raise TypeError(
        f"cache inputs must be plain JSON (str, int, float, bool, None, lists, dicts); got "
        f"{type(value).__name__} {value!r}: convert it explicitly so the key is unambiguous"
    )


def canonical_json(inputs: Mapping[str, Any]) -> str:
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=_not_json)


def content_key(inputs: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``inputs`` (dict order does not matter)."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


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
    """Build-once, read-many storage keyed by the content of every input."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, inputs: Mapping[str, Any]) -> Entry | None:
        """The finished entry for ``inputs``, or None (never a partial one)."""
        key = content_key(inputs)
        return self._read(kind, key, built_here=False)

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
        the free space.
        """
        key = content_key(inputs)
        found = self._read(kind, key, built_here=False)
        if found is not None:
            return found
        kind_dir = self.root / kind
        try:
            kind_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create cache directory {kind_dir}: {exc.strerror}; "
                f"pass --cache-dir to a writable place or set ${DEFAULT_CACHE_ENV}"
            ) from exc
        try:
            with FileLock(str(kind_dir / f"{key}.lock"), timeout=lock_timeout):
                found = self._read(kind, key, built_here=False)
                if found is not None:
                    return found
                self._build(kind, key, inputs, build, kind_dir)
        except OSError as exc:
            # Creating the lock file or the temp dir can hit a full disk too, before any build.
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
        for stale in kind_dir.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        final = kind_dir / key
        if final.exists():
            # A directory without a manifest was never published by us (publishing renames a
            # complete directory): someone deleted the manifest. Rebuild it from scratch.
            shutil.rmtree(final)
        tmp = kind_dir / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        tmp.mkdir()
        try:
            extra = build(tmp) or {}
            manifest = {
                "kind": kind,
                "key": key,
                "inputs": json.loads(canonical_json(inputs)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": socket.gethostname(),
                "files": sorted(p.name for p in tmp.iterdir()),
                **extra,
            }
            _fsync_tree(tmp)
            _write_json_durable(tmp / MANIFEST, manifest)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(kind_dir)
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
        path = self.entry_dir(kind, key)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(
                f"cache entry {path} has an unreadable manifest ({exc}); delete that directory "
                "and rerun to rebuild it"
            ) from exc
        return Entry(path=path, key=key, manifest=manifest, built_here=built_here)


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
