"""Content identity for the cache: keys from inputs, and an entry checked against its manifest.

:func:`content_key` is the SHA-256 of the canonical JSON of an entry's inputs (its directory's
name). The cache does not trust what is on disk once written: when it publishes an entry, the
manifest records the size and SHA-256 of every file in it, files in sub-directories included
(``"files": {"sub/name": {"sha256": ..., "size": ...}}``, paths relative to the entry,
``/``-separated), and its own checksum (``manifest_sha256``: the SHA-256 of its canonical JSON
without that field). On every read, :func:`manifest_problem` checks the manifest (format, kind
and key of its directory, inputs hashing to that key, its checksum) and :func:`verify_files`:

- every file's size, always: a truncated or extended file is caught on every read, for free;
- the SHA-256 of every file of at most :data:`FULL_HASH_BYTES`, always (reference logits, the
  ONNX files and compiled models of most models, a small dataset's pixels);
- the SHA-256 of the larger ones (a full dataset's pixel file: 150 KB per image, 7.5 GB for
  50,000) only when asked to (``full=True``: ``--verify-cache``).

A full hash is remembered per process by the file's path, device, inode, size, mtime and ctime
(:func:`sha256_memo`), so one session hashes one version of a file once, however many readers
ask. This module imports nothing from the harness: :mod:`harness.cache` uses it, not the reverse.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

# Files up to this size are hashed on every read (once per process, see sha256_memo); larger ones
# are checked by size, and hashed only with --verify-cache. 256 MiB puts every reference-logits
# file under it (50,000 images x 1000 classes x float32 = 200 MB, the largest a run makes) and
# most ONNX files and compiled models too (20-350 MB: files the run reads in full anyway), while
# the one file that grows with the dataset, a dataset entry's images.u8 (7.5 GB for 50,000
# images), is checked by size. Hashing costs ~0.6 ms per MB at 1.7 GB/s (SHA-NI; ~2 ms per MB
# without): for efficientnet_lite0 on 50,000 images ~240 MB, ~0.15 s of a ~5 minute warm run
# (benchmarks/bench_cache_verify.py measures it).
FULL_HASH_BYTES = 256 << 20
# 2: "files" maps each file to its sha256 and size, and "manifest_sha256" checks the manifest
# itself; 1 (no "manifest_format"): "files" was a list of names, nothing could be verified.
MANIFEST_FORMAT = 2
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")

# (path, device, inode, size, mtime_ns, ctime_ns) -> SHA-256 hex digest
_Stamp = tuple[str, int, int, int, int, int]
_MEMO: dict[_Stamp, str] = {}


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


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    return content_key({k: v for k, v in manifest.items() if k != "manifest_sha256"})


def sealed(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` as it will read back (extra fields through ``str`` where not JSON), with its checksum."""
    plain = json.loads(json.dumps(manifest, default=str))
    return {**plain, "manifest_sha256": _manifest_digest(plain)}


def manifest_problem(manifest: Mapping[str, Any], kind: str, key: str) -> tuple[str | None, bool]:
    """What is wrong with the manifest of the entry at ``kind/key`` and whether that is only its
    age (made by an older harness), or (None, False). The most specific finding first; the
    manifest's own checksum catches any other edit."""
    version = manifest.get("manifest_format")
    if version is None:
        return "it was made by an older harness (its manifest holds no file checksums)", True
    if version != MANIFEST_FORMAT:
        return (f"it was made by another version of the harness (manifest format {version!r}, this one reads "
                f"{MANIFEST_FORMAT})"), True
    if manifest.get("kind") != kind or manifest.get("key") != key:
        return (f"its manifest names entry {manifest.get('kind')!r}/{manifest.get('key')!r}, not the directory it "
                "is in (copied or renamed?)"), False
    inputs = manifest.get("inputs")
    if not isinstance(inputs, dict) or content_key(inputs) != key:
        return "the inputs in its manifest do not hash to its key (the manifest was edited)", False
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        return "its manifest was edited after it was written (its checksum does not match)", False
    return None, False


def sha256_file(path: Path) -> str:
    """SHA-256 of ``path``'s bytes (read in 1 MiB blocks into one reused buffer)."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _stamp(path: Path, st: os.stat_result) -> _Stamp:
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_memo(path: Path, st: os.stat_result | None = None) -> str:
    """SHA-256 of ``path``, hashed at most once per process per version of the file.

    A version is the file's path, device, inode, size, mtime and ctime: writing to the file
    changes its mtime and ctime (ctime cannot be set back by hand), replacing it changes its
    inode. The digest is remembered only if the file did not change while it was hashed.
    """
    before = _stamp(path, os.stat(path) if st is None else st)
    known = _MEMO.get(before)
    if known is not None:
        return known
    digest = sha256_file(path)
    if _stamp(path, os.stat(path)) == before:
        _MEMO[before] = digest
    return digest


def forget_hashes() -> None:
    """Forget every remembered hash: the next read hashes again, as a new process would."""
    _MEMO.clear()


def describe_files(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, _Stamp]]:
    """Size and SHA-256 of every file under ``root`` (the manifest's ``files``), and each file's
    stamp when it was hashed (for :func:`remember`)."""
    files: dict[str, dict[str, Any]] = {}
    stamps: dict[str, _Stamp] = {}
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            before = os.stat(path)
            digest = sha256_file(path)
            if _stamp(path, os.stat(path)) != _stamp(path, before):
                raise OSError(f"{path} changed while the cache was hashing it; is the build still writing to it?")
            files[rel] = {"sha256": digest, "size": before.st_size}
            stamps[rel] = _stamp(path, before)
    return files, stamps


def remember(root: Path, files: Mapping[str, Mapping[str, Any]], stamps: Mapping[str, _Stamp]) -> None:
    """After ``describe_files(tmp)`` and the rename of ``tmp`` to ``root``: remember the digests of
    the files that are unchanged since (a rename of their directory keeps a file's stamp), so the
    first read of a new entry hashes nothing again."""
    for rel, (_old_path, *identity) in stamps.items():
        path = root / rel
        try:
            now = _stamp(path, os.stat(path))
        except OSError:
            continue
        if list(now[1:]) == identity:
            _MEMO[now] = str(files[rel]["sha256"])


def _problem_with_listing(files: Any) -> str | None:
    """What is malformed in a manifest's ``files`` (untrusted), or None."""
    if not isinstance(files, dict):
        return f"its manifest's 'files' is a {type(files).__name__}, expected a table of name -> sha256 and size"
    for rel, meta in files.items():
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
            return f"its manifest lists a file outside the entry: {rel!r}"
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("sha256"), str)
            or not _HEX64.fullmatch(meta["sha256"])
            or type(meta.get("size")) is not int
            or meta["size"] < 0
        ):
            return f"its manifest's record of {rel} is malformed ({meta!r}), expected sha256 and size"
    return None


def verify_files(entry: Path, files: Any, full: bool = False, threshold: int | None = None) -> str | None:
    """The first way ``entry``'s files differ from ``files`` (its manifest's record), or None.

    Sizes always; SHA-256 of files up to ``threshold`` bytes (default :data:`FULL_HASH_BYTES`),
    and of every file when ``full``. Files in the entry that the manifest does not list are not
    looked at (nothing reads them).
    """
    threshold = FULL_HASH_BYTES if threshold is None else threshold
    malformed = _problem_with_listing(files)
    if malformed:
        return malformed
    for rel, meta in sorted(files.items()):
        path = entry / rel
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as exc:
            return f"{rel} cannot be read ({exc.strerror})"
        if not stat.S_ISREG(st.st_mode):
            return f"{rel} is not a regular file"
        if st.st_size != meta["size"]:
            return f"{rel} is {st.st_size} bytes, its manifest says {meta['size']} (truncated or changed)"
        if full or st.st_size <= threshold:
            try:
                digest = sha256_memo(path, st)
            except OSError as exc:
                return f"{rel} cannot be read ({exc.strerror or exc})"
            if digest != meta["sha256"]:
                return (f"{rel}'s content changed since it was written (sha256 {digest[:16]}…, its manifest says "
                        f"{meta['sha256'][:16]}…)")
    return None
