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

MANIFEST = "manifest.json"
DEFAULT_CACHE_ENV = "MZC_CACHE_DIR"


class CacheError(RuntimeError):
    """The cache directory cannot be used (permissions, full disk, corrupt entry)."""


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

        ``build`` writes its files into ``tmp_dir`` and may return extra manifest fields. If it
        raises, nothing is published and the exception propagates.
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
        with FileLock(str(kind_dir / f"{key}.lock"), timeout=lock_timeout):
            found = self._read(kind, key, built_here=False)
            if found is not None:
                return found
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
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno == errno.ENOSPC:
                    raise CacheError(
                        f"disk full while writing cache entry {kind}/{key} under {kind_dir}; "
                        f"free space there or pass --cache-dir to a larger disk"
                    ) from exc
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        entry = self._read(kind, key, built_here=True)
        assert entry is not None
        return entry

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
