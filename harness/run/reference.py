"""The torch reference logits: computed once per (weights, images, normalization), cached, and
carried to another machine as a file (``python -m harness reference export|import``).

The cache entry (kind ``reference-logits``) is keyed by what decides the logits' values and
nothing machine-specific (docs/reference-logits.md): the architecture and class count, the
weights' value-deciding fields (checkpoint SHA-256, or seed and calibration; not the file's
path), the SHA-256 and shape of the preprocessed uint8 pixels (not the images' mtimes) and the
normalization. The torch version that computed them is recorded in the entry, not keyed: torch's
CPU kernels already differ between machines of one torch version, so keying it bought no bit
identity, only recomputation. An entry imported from a file says so in ``imported_from``.

The logits are computed on the fastest path of harness.model.fast_eval that matches the eager
module on a check batch (``[reference] fast_path``); the same key, since the path computes the
same logits within float rounding. The entry's ``reference_path`` says which path ran, torch's
threads and the check's figures (or why eager ran instead).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import socket
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import data as data_mod
from harness.backends.torch_ref import TorchSession, torch_version
from harness.cache import (
    MANIFEST,
    ArtifactCache,
    Entry,
    UnverifiedEntry,
    file_sha256,
)
from harness.errors import NotCertified, UsageError
from harness.judge.metrics import parity
from harness.model.fast_eval import reference_module
from harness.model.lazy import resolve
from harness.run.infer import run_all

# The file's reading side lives in reference_file (checked before anything is allocated);
# re-exported here, where the cache side and the export use them.
from harness.run.reference_file import (
    FILE_FORMAT,
    FILE_VERSION,
    INDEX,
    KEY_FORMAT,
    FileEntry,
    ReferenceFileError,
    read_reference_file,
)
from harness.specs import ModelSpec, ReferencePolicy, as_dict

REFERENCE_KIND = "reference-logits"
IMAGES_FILE = "images.u8"  # the dataset entry's pixels (harness.data.prepared)
# Where reference logits came from (a record's reference_origin): computed in this session, read
# from this cache (computed by an earlier run) or imported from a reference file.
COMPUTED_HERE, CACHED, IMPORTED = "computed here", "cached", "imported"
REFERENCE_BATCH = 32


def images_digest(prepared: data_mod.PreparedDataset) -> dict[str, Any]:
    """SHA-256, shape and dtype of ``prepared``'s uint8 pixels: their identity on any machine.

    The SHA-256 is the one the dataset entry's manifest records for ``images.u8`` (written when the
    entry was built, checked by the cache when it serves the entry): hashing 7.5 GB of pixels
    again per run would be the same work twice. An entry without that record is hashed here.
    """
    images = prepared.path / IMAGES_FILE
    try:
        record = json.loads((prepared.path / MANIFEST).read_text(encoding="utf-8")).get("files", {}).get(IMAGES_FILE)
    except (OSError, ValueError, AttributeError):
        record = None
    sha = record.get("sha256") if isinstance(record, dict) else None
    return {"sha256": sha if isinstance(sha, str) else file_sha256(images),
            "shape": [int(d) for d in prepared.images.shape], "dtype": str(prepared.images.dtype)}


def reference_inputs(cache: ArtifactCache, spec: ModelSpec, weights: Any,
                     prepared: data_mod.PreparedDataset) -> dict[str, Any]:
    """The key inputs of ``spec``'s reference logits with ``weights`` (a WeightsInfo) on ``prepared``."""
    return {
        "format": KEY_FORMAT,
        "arch": as_dict(spec.arch),
        "num_classes": spec.num_classes,
        "weights": weights.export_key_fields(),
        "images": images_digest(prepared),
        "normalize": {"mean": list(prepared.spec.mean), "std": list(prepared.spec.std)},
    }


def cached_reference(cache: ArtifactCache, spec: ModelSpec, module: Any, weights: Any,
                     prepared: data_mod.PreparedDataset,
                     policy: ReferencePolicy | None = None) -> tuple[np.ndarray, Entry]:
    """The torch reference's logits on ``prepared`` and their cache entry, computed if absent, on
    ``policy``'s fast path where it matches eager (None: the declared defaults of [reference]);
    ``module``: the torch module, or the function building it, called only then."""
    inputs = reference_inputs(cache, spec, weights, prepared)
    policy = policy or ReferencePolicy()

    def build(tmp: Path) -> Mapping[str, Any]:
        checked = check_batch(prepared, policy.fast_check_images)
        fast, path = reference_module(resolve(module), policy.fast_path, checked, REFERENCE_BATCH, policy.fast_rtol)
        session = TorchSession(fast, REFERENCE_BATCH, spec.input_shape, spec.num_classes)
        logits = run_all(session, prepared, REFERENCE_BATCH, f"{spec.name} torch reference ({path.ran})")
        np.save(tmp / "logits.npy", logits)
        return {"model": spec.name, "count": int(logits.shape[0]), "torch": torch_version(),
                "computed_host": socket.gethostname(), "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "reference_path": path.as_dict()}

    entry = cache.get_or_build(REFERENCE_KIND, inputs, build)
    return np.load(entry.path / "logits.npy"), entry


def check_batch(prepared: data_mod.PreparedDataset, count: int) -> np.ndarray:
    """The first ``count`` images of ``prepared``, normalized: where a fast path meets eager."""
    pre = prepared.spec
    return data_mod.normalize(np.asarray(prepared.images[:min(count, len(prepared))]), pre.mean, pre.std)


def reference_without_weights(cache: ArtifactCache, spec: ModelSpec,
                              prepared: data_mod.PreparedDataset) -> tuple[np.ndarray, Entry] | None:
    """A reference of ``spec``'s published weights on ``prepared`` found in the cache (imported,
    or computed by an earlier run) where the weights themselves are absent: matched by the
    registry's checksum of the weights (``sha256``, or the ``sha256_prefix`` of a file name). Such
    logits cannot be checked against torch here; None when there is none."""
    want = spec.weights.sha256 or spec.weights.sha256_prefix
    if not want:
        return None
    digest = images_digest(prepared)
    normalize = {"mean": list(prepared.spec.mean), "std": list(prepared.spec.std)}
    for entry in cached_entries(cache)[0]:
        inputs = entry.manifest["inputs"]
        weights = inputs.get("weights") if isinstance(inputs.get("weights"), Mapping) else {}
        if (weights.get("kind") == "pretrained" and str(weights.get("sha256") or "").startswith(want)
                and inputs.get("arch") == as_dict(spec.arch) and inputs.get("num_classes") == spec.num_classes
                and inputs.get("images") == digest and inputs.get("normalize") == normalize):
            return np.load(entry.path / "logits.npy", allow_pickle=False), entry
    return None


def reference_origin(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Who computed an entry's logits, with which torch and on which path (harness.model.fast_eval's
    ``reference_path``; None: before it was recorded, eager), and the file it was imported from (or None)."""
    return {"torch": manifest.get("torch"), "computed_host": manifest.get("computed_host", manifest.get("host")),
            "computed_at": manifest.get("computed_at", manifest.get("created")),
            "reference_path": manifest.get("reference_path"), "imported_from": manifest.get("imported_from")}


# -- checking a reference not computed in this session ---------------------------------------


class ReferenceMismatch(NotCertified):
    """Reference logits that torch, run here on a sample of their images, does not reproduce."""


@dataclass(frozen=True)
class ReferenceCheck:
    """Stored reference logits against torch recomputed here on a random sample of their images."""

    images: int  # how many were recomputed
    seed: int  # the sample's seed, drawn afresh for every check
    max_rel_diff: float  # largest |stored - recomputed| relative to the image's largest |logit|
    top1_agreement: float  # percent of the sample whose top-1 class is the same
    rtol: float

    @property
    def passed(self) -> bool:
        return self.max_rel_diff <= self.rtol and self.top1_agreement >= 100.0

    def describe(self) -> str:
        return (f"{self.images} images recomputed with torch (seed {self.seed}): max relative difference "
                f"{self.max_rel_diff:.3g} (allowed {self.rtol:g}), top-1 equal on {self.top1_agreement:.1f}%")


def check_reference(spec: ModelSpec, module: Any, prepared: data_mod.PreparedDataset, logits: np.ndarray,
                    policy: ReferencePolicy, seed: int | None = None) -> ReferenceCheck:
    """Recompute ``policy.check_images`` images of ``prepared``, chosen at random (``seed``: drawn
    from the OS unless given), with the torch ``module`` and compare with the stored ``logits``."""
    seed = secrets.randbits(32) if seed is None else seed
    count = min(policy.check_images, len(prepared))
    chosen = np.sort(np.random.default_rng(seed).choice(len(prepared), count, replace=False))
    session = TorchSession(module, REFERENCE_BATCH, spec.input_shape, spec.num_classes)
    pre = prepared.spec
    fresh = np.concatenate([
        session.infer(data_mod.normalize(np.asarray(prepared.images[chosen[i:i + REFERENCE_BATCH]]), pre.mean, pre.std))
        for i in range(0, count, REFERENCE_BATCH)])
    agreement = parity(fresh, np.asarray(logits)[chosen])
    return ReferenceCheck(images=count, seed=seed, max_rel_diff=agreement.max_rel_diff,
                          top1_agreement=agreement.top1_agreement, rtol=policy.check_rtol)


def refuse(entry: Entry, check: ReferenceCheck) -> ReferenceMismatch:
    """The error for an entry whose logits torch does not reproduce, naming the file they came from."""
    imported = entry.manifest.get("imported_from")
    if isinstance(imported, Mapping):
        source = (f"the reference file {imported.get('file')} (sha256 {imported.get('file_sha256')}), imported into "
                  f"{entry.path}")
        fix = "it was altered or made from other weights or images; export it again where it was computed"
    else:
        source = f"the cached reference {entry.path}"
        fix = "it was altered after it was computed; delete that directory to recompute it"
    return ReferenceMismatch(f"reference refused: {source} does not match torch run here: {check.describe()}; {fix}")


# -- the file -------------------------------------------------------------------------------


def cached_entries(cache: ArtifactCache) -> tuple[list[Entry], list[Path]]:
    """Every finished reference entry of the current key format, each verified by the cache, and
    the paths of older ones (key format 1, or made before the cache recorded checksums: rebuilt
    once by the next run, never exported). An entry that fails verification is a CacheError
    naming its directory."""
    refused: list[UnverifiedEntry] = []
    entries = cache.entries(REFERENCE_KIND, refused=refused)
    broken = [r for r in refused if not r.older]
    if broken:
        raise broken[0]
    current = [e for e in entries if e.manifest["inputs"].get("format") == KEY_FORMAT]
    old = [e.path for e in entries if e not in current] + [r.path for r in refused if r.older]
    return current, old


def export_references(cache: ArtifactCache, out: Path, models: Sequence[str] | None) -> list[Entry]:
    """Write the cached reference entries of ``models`` (None: all) to the file ``out``
    atomically; returns the entries written."""
    entries, _old = cached_entries(cache)
    chosen = [e for e in entries if models is None or e.manifest.get("model") in models]
    if not chosen:
        have = sorted({str(e.manifest.get("model")) for e in entries})
        asked = ", ".join(models) if models else "any model"
        raise UsageError(
            f"no torch reference logits of {asked} in {cache.root / REFERENCE_KIND} "
            f"(cached: {', '.join(have) or 'none'}); run the accuracy test once to compute them, or pass --cache-dir")
    index: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for entry in chosen:
                blob = (entry.path / "logits.npy").read_bytes()
                logits = np.load(io.BytesIO(blob), allow_pickle=False)
                member = f"{entry.key}.npy"
                zf.writestr(member, blob)
                index.append(
                    {
                        "key": entry.key,
                        "inputs": entry.manifest["inputs"],
                        "model": entry.manifest.get("model"),
                        "shape": list(logits.shape),
                        "dtype": str(logits.dtype),
                        "member": member,
                        "sha256": hashlib.sha256(blob).hexdigest(),
                        **reference_origin(entry.manifest),
                    }
                )
            zf.writestr(INDEX, json.dumps({
                "format": FILE_FORMAT, "version": FILE_VERSION, "exported_host": socket.gethostname(),
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": index}, indent=2, sort_keys=True))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return chosen


def import_references(cache: ArtifactCache, path: Path) -> list[tuple[FileEntry, bool]]:
    """Verify every entry of ``path``, then write each into ``cache`` under the key it names;
    returns (entry, written) pairs, ``written`` False where the cache already held that key."""
    index, entries = read_reference_file(path)  # all verified before anything is written
    imported_from = {"file": str(Path(path).resolve()), "file_sha256": file_sha256(Path(path)),
                     "exported_host": index.get("exported_host"), "exported_at": index.get("exported_at")}
    results = []
    for item in entries:
        def build(tmp: Path, item: FileEntry = item) -> Mapping[str, Any]:
            np.save(tmp / "logits.npy", item.logits)
            return {
                "model": item.model,
                "count": int(item.logits.shape[0]),
                **item.origin,
                "imported_from": imported_from,
            }

        entry = cache.get_or_build(REFERENCE_KIND, item.inputs, build)
        if entry.key != item.key:  # content_key(inputs) was checked against the key: cannot differ
            raise ReferenceFileError(f"{path}: entry {item.key} landed under {entry.key}")
        results.append((item, entry.built_here))
    return results
