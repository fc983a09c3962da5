"""Disk: a full cache disk fails cleanly, with the path, the room needed and the room free, and
leaves nothing half-written; a dataset that cannot fit is refused before any image is decoded;
finished entries stay usable on a full disk.

The real tests mount a small tmpfs (root with CAP_SYS_ADMIN, as on the CI machines) and fill it
for real; the simulated ones raise ENOSPC/EDQUOT where the OS would, and run everywhere.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cache import ArtifactCache, CacheError
from harness.data import list_dataset, prepare_dataset
from harness.data import prepared as prepared_mod
from harness.specs import CompileTarget, PreprocessSpec

from ._support import copy_real_images, leftovers, published

SPEC = PreprocessSpec(resize=256, crop=224)
MB = 1e6


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of the given KiB under tmp_path; unmounted after the test."""
    mounts: list[Path] = []

    def mount(kib: int) -> Path:
        target = tmp_path / f"disk{len(mounts)}"
        target.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip(
                "filling a real disk needs root to mount a small tmpfs; the simulated-ENOSPC tests cover the code"
            )
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): needs CAP_SYS_ADMIN; "
                        "the simulated-ENOSPC tests cover the code")
        mounts.append(target)
        return target

    yield mount
    gc.collect()  # memory maps of entries on the tmpfs would keep it busy
    for target in reversed(mounts):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(disk: Path) -> None:
    """Write a filler file until the disk refuses another byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free == 0


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every image the in-process preprocessing decodes."""
    decoded: list[Path] = []
    original = prepared_mod.preprocess_image

    def counting(path: Path, spec: PreprocessSpec, *args: Any, **kwargs: Any) -> np.ndarray:
        decoded.append(path)
        return original(path, spec, *args, **kwargs)

    monkeypatch.setattr(prepared_mod, "preprocess_image", counting)
    return decoded


# --------------------------------------------------------------------------------------------
# prepare_dataset: the free-space precheck


def test_a_dataset_that_cannot_fit_is_refused_before_any_image_is_decoded(
    real_images: Path, small_disk: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 images at 224x224 need 3.7 MB; on a 1 MiB disk prepare_dataset says so, with the path
    and the free space, before decoding a single image, and leaves nothing behind."""
    root = small_disk(1024) / "cache"
    decoded = count_decodes(monkeypatch)
    with pytest.raises(CacheError) as err:
        prepare_dataset(list_dataset(real_images), SPEC, ArtifactCache(root), workers=1)
    message = str(err.value)
    assert f"preprocessing 24 images to 224x224 needs 3.7 MB at {root}, 1.0 MB free" in message
    assert "free space there or pass --cache-dir" in message
    assert decoded == []
    assert published(root, "dataset") == [] and leftovers(root) == []


def test_the_precheck_without_a_real_small_disk(
    real_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same refusal where no tmpfs can be mounted: the file system reports 2 MB free."""
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=2_000_000))
    decoded = count_decodes(monkeypatch)
    with pytest.raises(CacheError, match=r"needs 3\.7 MB at .*, 2\.0 MB free; free space there or pass --cache-dir"):
        prepare_dataset(list_dataset(real_images), SPEC, ArtifactCache(tmp_path / "cache"), workers=1)
    assert decoded == [] and leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_disk_that_fills_up_mid_preprocessing_is_a_clean_cache_error(
    workers: int, real_images: Path, small_disk: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes the room after the precheck (simulated by skipping it): the write
    that hits ENOSPC, in-process or in a pool worker, becomes the cache's disk-full error with the
    directory, the size the entry needs and the free space; the partial entry is removed (the
    space comes back) and a dataset that fits builds fine on the same disk afterwards."""
    disk = small_disk(1024)
    root = disk / "cache"
    monkeypatch.setattr(prepared_mod, "_check_free_space", lambda *args: None)
    with pytest.raises(CacheError) as err:
        prepare_dataset(list_dataset(real_images), SPEC, ArtifactCache(root), workers=workers)
    message = str(err.value)
    assert "disk full while writing cache entry dataset/" in message and f"under {root / 'dataset'}" in message
    assert "it needs at least 3.6 MB" in message and "MB free there" in message and "--cache-dir" in message
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert published(root, "dataset") == [] and leftovers(root) == []
    assert shutil.disk_usage(disk).used < 0.1 * MB

    small = copy_real_images(disk.parent / "four", 4)
    prepared = prepare_dataset(list_dataset(small), SPEC, ArtifactCache(root), workers=workers)
    assert prepared.images.shape == (4, 3, 224, 224)


def test_a_finished_dataset_is_still_served_from_a_full_disk(
    val_1300: Path, small_disk: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm rerun needs no room: with the disk full, the finished entry is reused without the
    precheck getting in the way, while a new entry is refused with 0.0 MB free."""
    disk = small_disk(2048)
    images = copy_real_images(disk.parent / "four", 4)
    cache = ArtifactCache(disk / "cache")
    first = prepare_dataset(list_dataset(images), SPEC, cache, workers=1)
    fill(disk)
    decoded = count_decodes(monkeypatch)
    again = prepare_dataset(list_dataset(images), SPEC, cache, workers=1)
    assert decoded == [] and again.key == first.key
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    with pytest.raises(CacheError, match=r"needs 0\.4 MB at .*, 0\.0 MB free"):
        prepare_dataset(list_dataset(images), PreprocessSpec(resize=200, crop=160), cache, workers=1)


# --------------------------------------------------------------------------------------------
# Export and compile on a full disk


def wide_module() -> Any:
    """A tiny classifier whose 260 kB of weights cannot fit on a 64 KiB disk."""
    import torch
    from torch import nn

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 64, 3)
            self.fc = nn.Linear(64, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return Wide().eval()


def _tiny_spec() -> Any:
    from harness.specs import load_models

    return dataclasses.replace(load_models()["efficientnet_lite0"], name="wide", preprocess=PreprocessSpec(16, 16),
                               preprocess_variants={})


def test_a_full_disk_during_export_is_the_cache_disk_error_not_an_exporter_failure(
    small_disk: Callable[[int], Path],
) -> None:
    """torch.onnx.export hitting ENOSPC used to surface as 'torch.onnx.export of X failed:
    OSError ...', blaming the exporter; it is now the cache's disk-full error with the fix, and
    the half-written file is gone."""
    from harness.model.export import ExportError, cached_onnx
    from harness.model.weights import WeightsInfo

    root = small_disk(64) / "cache"
    weights = WeightsInfo(kind="random", source="reliability tests", sha256=None, seed=0)
    with pytest.raises(CacheError) as err:
        cached_onnx(ArtifactCache(root), _tiny_spec(), wide_module(), weights, simplify=False)
    assert not isinstance(err.value, ExportError)
    assert "disk full while writing cache entry onnx/" in str(err.value) and "--cache-dir" in str(err.value)
    assert published(root, "onnx") == [] and leftovers(root) == []


def test_a_full_disk_during_onnxruntime_compile_is_reported_as_a_full_disk(
    small_disk: Callable[[int], Path], tmp_path: Path
) -> None:
    """ONNX Runtime reports a full disk as 'INVALID_PROTOBUF: Protobuf serialization failed',
    which points at the model; the cache sees the disk is full when the build fails and says so,
    keeping ONNX Runtime's own words."""
    from harness.backends.base import get_backend
    from harness.model.export import export_onnx

    spec = _tiny_spec()
    onnx_path = tmp_path / "wide.onnx"
    export_onnx(wide_module(), spec, onnx_path, simplify=False)
    backend = get_backend("onnxruntime", threads=1)
    target = CompileTarget(chip="cpu", batch_size=1, input_shape=spec.input_shape, input_name=spec.input_name)
    root = small_disk(64) / "cache"

    def compile_into(tmp: Path) -> dict[str, str]:
        return {"artifact": backend.compile(onnx_path, target, tmp).name}

    with pytest.raises(CacheError) as err:
        ArtifactCache(root).get_or_build("compiled-onnxruntime", {"onnx": "wide"}, compile_into)
    message = str(err.value)
    assert "disk full while writing cache entry compiled-onnxruntime/" in message and "--cache-dir" in message
    assert "the build's own error:" in message
    assert published(root, "compiled-onnxruntime") == [] and leftovers(root) == []


# --------------------------------------------------------------------------------------------
# The cache on simulated full disks (no mount needed)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_enospc_or_quota_inside_a_build_names_the_path_the_size_and_the_free_space(code: int, tmp_path: Path) -> None:
    """A build that wrote 1.5 MB and then got ENOSPC (or EDQUOT on a shared disk with quotas)."""
    def build(tmp: Path) -> None:
        (tmp / "part.bin").write_bytes(b"x" * 1_500_000)
        raise OSError(code, os.strerror(code))

    root = tmp_path / "cache"
    with pytest.raises(CacheError) as err:
        ArtifactCache(root).get_or_build("thing", {"v": 1}, build)
    message = str(err.value)
    assert f"under {root / 'thing'}: it needs at least 1.5 MB, " in message and "MB free there" in message
    assert "pass --cache-dir (or set $MZC_CACHE_DIR) to a disk with room" in message
    assert leftovers(root) == []


def test_a_full_disk_when_creating_the_lock_file_is_a_cache_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any build, even the lock file or the temp dir may not fit: still the disk error."""
    class FullDiskLock:
        def __init__(self, path: str, timeout: float) -> None:
            self.path = path

        def __enter__(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("harness.cache.FileLock", FullDiskLock)
    with pytest.raises(CacheError, match=r"disk full while writing cache entry thing/[0-9a-f]{64} under .*--cache-dir"):
        ArtifactCache(tmp_path / "cache").get_or_build("thing", {"v": 1}, lambda tmp: None)


def test_a_compiler_error_is_reported_as_a_full_disk_only_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk-full diagnosis of a foreign error (ATC, ONNX Runtime) depends on the free space
    at failure: with room left the compiler's own exception propagates untouched."""
    class CompilerFailed(RuntimeError):
        pass

    def build(tmp: Path) -> None:
        raise CompilerFailed("serialization failed")

    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(CompilerFailed):
        cache.get_or_build("compiled-x", {"v": 1}, build)
    monkeypatch.setattr("harness.cache.free_bytes", lambda path: 4096)
    with pytest.raises(
        CacheError, match=r"0\.0 MB free there \(the build's own error: CompilerFailed: serialization failed\)"
    ):
        cache.get_or_build("compiled-x", {"v": 1}, build)
    assert leftovers(tmp_path / "cache") == []
