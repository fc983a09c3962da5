"""Library models by name (issue 16): torchvision and timm classifiers as ModelSpecs.

Every expected figure is read from the libraries (the torchvision wheel's weights enums, timm's
pretrained_cfg) or from the results table with the csv module, never typed in here; the recipes
are checked pixel for pixel against torchvision's ``weights.transforms()`` and timm's
``resolve_data_config`` + ``create_transform`` on real JPEGs.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.__main__ import main as harness_main
from harness.data import normalize
from harness.data.transforms import preprocess_image
from harness.specs import (
    FIXTURES_DIR,
    ModelSpec,
    SpecError,
    catalogue,
    library_spec,
    load_models,
    resolve_models,
)
from harness.specs.library import TIMM_RESULTS

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
from PIL import Image  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402
from torchvision.models import get_model_weights, get_weight, list_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "datasets" / "imagenet-sample-1000" / "images"
TV_NAMES = ["tv:resnet50", "tv:resnext50_32x4d.IMAGENET1K_V1", "tv:efficientnet_b3.IMAGENET1K_V1",
            "tv:inception_v3.IMAGENET1K_V1", "tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1", "tv:mobilenet_v3_small"]
TIMM_NAMES = ["timm:resnest50d.in1k", "timm:convnext_large.fb_in22k_ft_in1k@288", "timm:tf_efficientnet_lite0.in1k",
              "timm:convnext_large.fb_in22k_ft_in1k_384", "timm:volo_d4_448.sail_in1k"]
# A curated figure quoted from the library itself must equal the twin's; one from upstream (ResNeSt's
# paper, Cadene's README, huawei-noah's README) was measured with the authors' own pipeline and
# agrees within this many points with timm's re-evaluation of the same weights.
SAME_AS_TOLERANCE_POINTS = 0.25


def _csv_rows() -> dict[tuple[str, int], dict[str, str]]:
    with TIMM_RESULTS.open(newline="") as fh:
        return {(r["model"], int(r["img_size"])): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def registry() -> dict[str, ModelSpec]:
    return load_models()


@pytest.fixture(scope="module")
def jpegs() -> list[Path]:
    found = sorted(IMAGES.glob("*.JPEG"))
    if not found:
        pytest.skip(f"real JPEGs not found at {IMAGES} (../shared/datasets absent)")
    return found[::250]


# --------------------------------------------------------------------------------------------
# Published figures, weights and recipes come from the libraries


def test_vendored_results_table_is_the_one_its_provenance_names() -> None:
    digest = hashlib.sha256(TIMM_RESULTS.read_bytes()).hexdigest()
    provenance = (FIXTURES_DIR / "timm-results-imagenet.README.md").read_text()
    assert digest in provenance, "fixtures/timm-results-imagenet.csv changed: update its README's sha256 and commit"
    reference = SHARED / "reference" / "timm-results-imagenet.csv"
    if reference.is_file():
        assert hashlib.sha256(reference.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("name", TV_NAMES)
def test_tv_entry_is_what_the_wheel_holds(name: str) -> None:
    spec = library_spec(name)
    builder, _, tag = name[len("tv:"):].partition(".")
    weights = get_weight(spec.library.weights) if spec.library else None
    assert weights is not None and weights in get_model_weights(builder)
    if not tag:  # the builder's default, recorded under its full name
        assert weights is get_model_weights(builder).DEFAULT and spec.name == f"{name}.{weights.name}"
    metrics = weights.meta["_metrics"]["ImageNet-1K"]
    assert (spec.published.top1, spec.published.top5) == (metrics["acc@1"], metrics["acc@5"])
    assert spec.library.num_params == weights.meta["num_params"]
    assert spec.weights.url == weights.url and spec.weights.filename == weights.url.rsplit("/", 1)[1]
    assert re.search(rf"-{spec.weights.sha256_prefix}\.", spec.weights.filename)  # torch.hub's HASH_REGEX
    t = weights.transforms()
    pre = spec.preprocess
    assert (pre.method, [pre.resize], [pre.crop], pre.interpolation) == (
        "resize_crop", list(t.resize_size), list(t.crop_size), t.interpolation.value)
    assert (list(pre.mean), list(pre.std)) == (list(t.mean), list(t.std))
    assert spec.arch.source == "torchvision" and spec.arch.name == builder


def test_tv_catalogue_covers_every_imagenet_classifier_weight() -> None:
    expected = {f"tv:{b}.{w.name}" for b in list_models(module=torchvision.models) for w in get_model_weights(b)
                if w.meta.get("categories") and len(w.meta["categories"]) == 1000
                and math.isfinite(w.meta["_metrics"]["ImageNet-1K"]["acc@1"])}
    assert set(catalogue("tv")) == expected


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_entry_is_its_results_row_with_that_rows_recipe(name: str) -> None:
    spec = library_spec(name)
    assert spec.library is not None
    tag = spec.library.weights
    row = _csv_rows()[(tag, spec.library.test_size)]
    cfg = get_pretrained_cfg(tag).to_dict()
    assert (spec.published.top1, spec.published.top5) == (float(row["top1"]), float(row["top5"]))
    pre = spec.preprocess
    assert pre.crop == int(row["img_size"]) and pre.interpolation == row["interpolation"]
    assert pre.resize == math.floor(int(row["img_size"]) / float(row["crop_pct"]))  # timm's scale_size
    assert pre.method == ("squash_crop" if cfg.get("crop_mode") == "squash" else "resize_crop")
    assert (pre.mean, pre.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert spec.arch.name == cfg["architecture"] and spec.weights.hub_id == cfg["hf_hub_id"]
    at_default = (int(row["img_size"]), row["interpolation"]) == (cfg["input_size"][-1], cfg["interpolation"]) and (
        abs(float(row["crop_pct"]) - cfg["crop_pct"]) < 5e-4)
    assert (spec.library.recipe_note == "") == at_default
    assert ("@" in name) == (int(row["img_size"]) != cfg["input_size"][-1])


def test_a_tag_at_two_test_sizes_gives_two_entries() -> None:
    rows = _csv_rows()
    sizes: dict[str, list[int]] = {}
    for tag, size in rows:
        sizes.setdefault(tag, []).append(size)
    twice = {tag: s for tag, s in sizes.items() if len(s) == 2}
    assert twice, "the results table lists some tags at two test sizes"
    specs = catalogue("timm")
    for tag, both in twice.items():
        default = get_pretrained_cfg(tag).to_dict()["input_size"][-1]
        other = next(s for s in both if s != default)
        plain, extra = specs[f"timm:{tag}"], specs[f"timm:{tag}@{other}"]
        assert (plain.library.test_size, extra.library.test_size) == (default, other)
        assert extra.library.recipe_note and plain.weights == extra.weights
    assert len(specs) == len(rows)


def test_timm_short_name_is_timms_default_tag() -> None:
    default_tag = get_pretrained_cfg("resnest50d").to_dict()["tag"]
    assert library_spec("timm:resnest50d").name == f"timm:resnest50d.{default_tag}"


# --------------------------------------------------------------------------------------------
# Resolution: curated names, library names, globs, unknown names


def test_curated_names_resolve_without_importing_a_library() -> None:
    code = ("import sys; from harness.specs import load_models, resolve_models; "
            "r = resolve_models(['resnext50_32x4d', 'res*'], load_models()); "
            "print(sorted(r), [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['resnest50', 'resnext101_32x8d', 'resnext50_32x4d'] []"


def test_globs_and_names_resolve_in_order_each_once(registry: dict[str, ModelSpec]) -> None:
    got = resolve_models(["tv:resnet50", "tv:resnet50.IMAGENET1K_V2", "tv:resnext*", "ghostnet_100"], registry)
    tv_resnext = sorted(n for n in catalogue("tv") if n.startswith("tv:resnext"))
    twins = {s.same_as: n for n, s in registry.items() if s.same_as}
    assert list(got) == ["tv:resnet50.IMAGENET1K_V2", *(twins.get(n, n) for n in tv_resnext), "ghostnet_100"]
    assert all(n.startswith("timm:resnext") for n in resolve_models(["timm:resnext*"], registry))
    assert resolve_models([], registry) == registry == resolve_models([" "], registry)


def test_a_curated_twin_keeps_precedence(registry: dict[str, ModelSpec]) -> None:
    for name, spec in registry.items():
        if spec.same_as:
            assert list(resolve_models([spec.same_as], registry)) == [name]


@pytest.mark.parametrize("asked, expected", [
    ("tv:resnet5O", "close matches: tv:resnet50"),
    ("resnext50", "close matches: resnest50, resnext50_32x4d"),
    ("timm:resnest50d.in1k@999", "no ImageNet-1k figure at that size"),
    ("tvx:resnet50", "unknown model library 'tvx:'"),
    ("tv:zzz*", "matches none of the"),
    ("zzz*", "matches none of fixtures/models.toml"),
])
def test_unknown_names_and_empty_globs_are_refused_with_close_matches(
        registry: dict[str, ModelSpec], asked: str, expected: str) -> None:
    with pytest.raises(SpecError, match=re.escape(expected)):
        resolve_models([asked], registry)


def test_same_as_names_a_twin_that_publishes_the_same_figures(registry: dict[str, ModelSpec]) -> None:
    checked = 0
    for name, spec in registry.items():
        if not spec.same_as:
            continue
        twin = library_spec(spec.same_as)
        assert (spec.arch.source, spec.arch.name) == (twin.arch.source, twin.arch.name), name
        quoted = spec.published.source.startswith(("torchvision", "timm results table"))
        tolerance = 5e-4 if quoted else SAME_AS_TOLERANCE_POINTS
        assert abs(spec.published.top1 - twin.published.top1) <= tolerance, (name, spec.published, twin.published)
        if spec.published.top5 is not None:
            assert abs(spec.published.top5 - twin.published.top5) <= tolerance, (name, spec.published, twin.published)
        checked += 1
    assert checked >= 5


def test_same_as_must_be_a_library_name(tmp_path: Path) -> None:
    text = (FIXTURES_DIR / "models.toml").read_text().replace(
        'same_as = "timm:resnest50d.in1k"', 'same_as = "resnest50d.in1k"')
    (tmp_path / "models.toml").write_text(text)
    with pytest.raises(SpecError, match="same_as"):
        load_models(tmp_path / "models.toml")


# --------------------------------------------------------------------------------------------
# python -m harness models


def test_models_command_prints_one_line_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert harness_main(["models", "--source", "tv", "resnet50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(n for n in catalogue("tv") if "resnet50" in n)
    for line in lines:
        spec = library_spec(line.split()[0])
        pre = spec.preprocess
        assert line.split()[1] == f"{spec.published.top1:.3f}/{spec.published.top5:.3f}"
        assert f"{pre.method} {pre.resize}/{pre.crop} {pre.interpolation} mean" in line
    assert "[= tv:resnet50, tv:resnet50.DEFAULT]" in lines[names.index("tv:resnet50.IMAGENET1K_V2")]
    assert harness_main(["models", "--source", "timm", "timm:convnext_large.fb_in22k_ft_in1k*"]) == 0
    out = capsys.readouterr().out
    assert "timm:convnext_large.fb_in22k_ft_in1k@288  " in out and "test_input_size" in out
    assert harness_main(["models", "--source", "curated", "no-such-model"]) == 2


# --------------------------------------------------------------------------------------------
# Recipes, pixel for pixel


def _ours(path: Path, spec: ModelSpec) -> np.ndarray:
    pre = spec.preprocess
    return normalize(preprocess_image(path, pre)[None], pre.mean, pre.std)[0]


@pytest.mark.parametrize("name", TV_NAMES[1:5])
def test_tv_recipe_is_weights_transforms_pixel_for_pixel(name: str, jpegs: list[Path]) -> None:
    spec = library_spec(name)
    transform = get_weight(spec.library.weights).transforms()
    for path in jpegs:
        with Image.open(path) as img:
            expected = transform(img.convert("RGB")).numpy()
        np.testing.assert_array_equal(_ours(path, spec), expected, err_msg=f"{name} {path.name}")


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_recipe_is_create_transform_pixel_for_pixel(name: str, jpegs: list[Path]) -> None:
    spec = library_spec(name)
    cfg = get_pretrained_cfg(spec.library.weights).to_dict()
    # The row at timm's test size is what resolve_data_config gives with use_test_size.
    config = resolve_data_config(pretrained_cfg=cfg, use_test_size="@" in name)
    transform = create_transform(**config)
    for path in jpegs:
        with Image.open(path) as img:
            expected = transform(img.convert("RGB")).numpy()
        np.testing.assert_array_equal(_ours(path, spec), expected, err_msg=f"{name} {path.name}")


# --------------------------------------------------------------------------------------------
# Weights: torchvision URLs as the curated entries; timm's hub weights only from --weights-dir


def _hub_cache(weights_dir: Path, hub_id: str, data: bytes, name: str = "model.safetensors") -> Path:
    """``data`` laid out as ``hf download hub_id --cache-dir weights_dir`` leaves a file."""
    repo = weights_dir / f"models--{hub_id.replace('/', '--')}"
    sha = hashlib.sha256(data).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / sha)
    return snapshot / name


def test_timm_weights_load_from_a_hub_cache_verified_against_its_blob_name(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save

    from harness.model.weights import (
        WeightsError,
        WeightsNotFound,
        load_pretrained,
        random_model,
    )

    spec = library_spec("timm:resnet18.a1_in1k")
    with pytest.raises(WeightsNotFound, match=re.escape(f"hf download {spec.weights.hub_id}")):
        load_pretrained(spec, tmp_path)
    module, _ = random_model(spec, seed=3, calibration=None)
    data = save({k: v.contiguous() for k, v in module.state_dict().items()})
    path = _hub_cache(tmp_path, spec.weights.hub_id or "", data)
    loaded, info = load_pretrained(spec, tmp_path)
    assert info.kind == "pretrained" and info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.source == str(path)
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # A flat file needs the hub's SHA-256 beside it; a wrong one is a checksum mismatch.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / spec.weights.filename).write_bytes(data)
    with pytest.raises(WeightsError, match="no checksum"):
        load_pretrained(spec, flat)
    (flat / f"{spec.weights.filename}.sha256").write_text("0" * 64 + f"  {spec.weights.filename}\n")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_pretrained(spec, flat)
    (flat / f"{spec.weights.filename}.sha256").write_text(hashlib.sha256(data).hexdigest())
    assert load_pretrained(spec, flat)[1].sha256 == hashlib.sha256(data).hexdigest()


def test_tv_weights_are_found_in_the_weights_dir_or_downloaded(tmp_path: Path) -> None:
    from harness.model.weights import WeightsNotFound, locate_weights

    spec = library_spec("tv:mobilenet_v3_small")
    with pytest.raises(WeightsNotFound, match=re.escape(spec.weights.url or "")):
        locate_weights(spec, tmp_path, allow_download=False)
    (tmp_path / spec.weights.filename).write_bytes(b"x")
    assert locate_weights(spec, tmp_path, allow_download=False) == tmp_path / spec.weights.filename


@pytest.mark.parametrize("name", ["tv:squeezenet1_0", "timm:legacy_seresnext50_32x4d.in1k",
                                  "timm:resnest14d.gluon_in1k"])
def test_random_weights_build_for_library_names(name: str) -> None:
    from harness.model.weights import random_model

    spec = library_spec(name)
    module, info = random_model(spec, seed=0, calibration=None)
    assert info.kind == "random"
    # zero_init_last=False where timm's constructor takes it, left out where it does not
    zero_scales = [k for k, v in module.state_dict().items() if k.endswith(".weight") and v.ndim == 1 and not v.any()]
    assert not zero_scales


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tv:googlenet", "tv:inception_v3", "tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1",
                                  "tv:maxvit_t"])
def test_tv_arch_keywords_build_the_module_the_builder_loads_its_weights_into(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's builder given these weights builds the same module as weights=None plus the
    entry's arch.kwargs: it accepts that module's state_dict strictly and computes the same."""
    import torch

    from harness.model.architectures import build_module

    spec = library_spec(name)
    weights = get_weight(spec.library.weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ours = build_module(spec)
    monkeypatch.setattr(type(weights), "get_state_dict", lambda self, *a, **k: ours.state_dict())
    theirs = torchvision.models.get_model(spec.arch.name, weights=weights).eval()
    x = torch.randn(2, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.slow
def test_a_small_tv_model_exports_at_opset_11_and_matches_torch(tmp_path: Path) -> None:
    import onnx

    from harness.backends.onnxruntime import OnnxRuntimeBackend
    from harness.backends.torch_ref import TorchSession
    from harness.judge.gates import conversion_gates, failures
    from harness.judge.metrics import parity
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import CompileTarget, load_policy

    spec = library_spec("tv:mobilenet_v3_small")
    policy = load_policy()
    bench = Workbench(RunConfig(cache_dir=tmp_path, weights="random", embedded_images=16), policy)
    loaded = bench.model(spec, weights="random", calibration_source="embedded")
    path = bench.onnx(loaded)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [11]
    assert [i.name for i in proto.graph.input] == [spec.input_name] == ["input"]
    prepared = bench.dataset(spec, "embedded")
    target = CompileTarget(chip="cpu", batch_size=8, input_shape=spec.input_shape, input_name=spec.input_name)
    with OnnxRuntimeBackend().open(path, target, num_classes=spec.num_classes) as session:
        onnx_logits = bench.infer_dataset(session, prepared, 8, "onnx")
    torch_logits = bench.infer_dataset(
        TorchSession(loaded.module, 8, spec.input_shape, spec.num_classes), prepared, 8, "torch"
    )
    assert not failures(conversion_gates(parity(torch_logits, onnx_logits), policy))
