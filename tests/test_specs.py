"""Registry validation: the shipped fixtures load, and every malformed entry is a clear SpecError."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.specs import (
    FIXTURES_DIR,
    HistoryPolicy,
    SpecError,
    as_dict,
    load_chips,
    load_models,
    load_policy,
    resolve_chip,
)

SEED_MODELS = {"resnext50_32x4d", "resnext101_32x8d", "resnest50", "se_resnext50_32x4d", "ghostnet_100"}
SEEDS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"

GOOD = """
[models.tiny]
title = "Tiny"
seed = "none"
input_name = "x"
batch_sizes = [1, 8]
arch = { source = "timm", name = "resnet18" }
weights = { filename = "tiny.pth", sha256_prefix = "abcdef12" }
preprocess = { resize = 256, crop = 224 }
published = { top1 = 70.0, top5 = 89.0, source = "somewhere" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_shipped_registry_has_the_five_seed_models_and_the_real_one() -> None:
    models = load_models()
    assert SEED_MODELS | {"efficientnet_lite0"} <= set(models)
    for spec in models.values():
        assert dataclasses.is_dataclass(spec) and spec.weights.has_checksum
        assert spec.published.source
        assert spec.input_shape == (3, spec.preprocess.crop, spec.preprocess.crop)
    with pytest.raises(dataclasses.FrozenInstanceError):
        models["resnest50"].name = "x"  # type: ignore[misc]


def test_torchvision_models_pin_the_v1_weights_and_their_published_accuracy() -> None:
    """DESIGN: pin IMAGENET1K_V1 (DEFAULT is V2 with other numbers); the registry must agree."""
    tvm = pytest.importorskip("torchvision.models")
    models = load_models()
    for name, enum in (("resnext50_32x4d", tvm.ResNeXt50_32X4D_Weights), ("resnext101_32x8d", tvm.ResNeXt101_32X8D_Weights)):
        v1 = enum.IMAGENET1K_V1
        spec = models[name]
        assert spec.weights.url == v1.url
        assert spec.published.top1 == v1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert spec.published.top5 == v1.meta["_metrics"]["ImageNet-1K"]["acc@5"]


def test_registry_matches_the_seed_guides() -> None:
    """Weights URLs, md5s and ONNX input names come from the seeds; check them against the text."""
    if not SEEDS_DIR.is_dir():
        pytest.skip(f"seed guides not found at {SEEDS_DIR}")
    models = load_models()
    for spec in models.values():
        if spec.name not in SEED_MODELS:
            continue
        text = (SEEDS_DIR / spec.seed).read_text()
        if spec.weights.md5:
            assert spec.weights.md5 in text.lower(), f"{spec.name}: md5 not in {spec.seed}"
        if spec.name != "se_resnext50_32x4d":  # seed 003 gives no URL, only the file name
            assert spec.weights.url and spec.weights.url.split("/")[-1] in text
        assert spec.weights.filename in text
        assert re.search(rf'{re.escape(spec.input_name)}:\$?\{{?\w*\}}?\d*,3,224,224', text), spec.name


def test_preprocess_variants_inherit_the_default() -> None:
    ghost = load_models()["ghostnet_100"]
    zoo = ghost.preprocess_for("modelzoo")
    assert zoo.method == "squash_crop" and zoo.resize == ghost.preprocess.resize
    assert ghost.preprocess_for(None) is ghost.preprocess
    with pytest.raises(SpecError, match="available: default, modelzoo"):
        ghost.preprocess_for("nope")


def test_good_entry_loads(tmp_path: Path) -> None:
    spec = load_models(write(tmp_path, GOOD))["tiny"]
    assert spec.batch_sizes == (1, 8)
    assert spec.preprocess.mean == (0.485, 0.456, 0.406)
    assert as_dict(spec)["weights"]["sha256_prefix"] == "abcdef12"


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('resize = 256, crop = 224', 'resize = 200, crop = 224', "crop 224 is larger than resize 200"),
        ('resize = 256, crop = 224', 'resize = 256, crop = 224, method = "warp"', "field 'method': expected one of"),
        ('resize = 256, crop = 224', 'resize = "256", crop = 224', "field 'resize': expected an integer"),
        ('resize = 256, crop = 224', 'resize = 256, crop = 224, std = [0.2, 0.0, 0.2]', "std must be positive"),
        ('resize = 256, crop = 224', 'resize = 256, crop = 224, mean = [0.5, 0.5]', "field 'mean': expected a list of 3"),
        ('sha256_prefix = "abcdef12"', 'sha256_prefix = "xyz"', "field 'sha256_prefix': expected a hex string"),
        ('sha256_prefix = "abcdef12"', 'url = "http://x/y.pth"', "at least one checksum"),
        ('filename = "tiny.pth"', 'filename = "../tiny.pth"', "a plain file name"),
        ('top1 = 70.0, top5 = 89.0', 'top1 = 170.0, top5 = 89.0', "field 'top1': expected a number in [0.0, 100.0]"),
        ('top1 = 70.0, top5 = 89.0', 'top1 = 70.0, top5 = 60.0', "top5 >= top1"),
        ('batch_sizes = [1, 8]', 'batch_sizes = [1, 1]', "field 'batch_sizes'"),
        ('batch_sizes = [1, 8]', 'batch_sizes = []', "field 'batch_sizes'"),
        ('batch_sizes = [1, 8]', 'batch_sizes = [true]', "field 'batch_sizes'"),
        ('source = "timm"', 'source = "keras"', "field 'source': expected one of torchvision, timm"),
        ('input_name = "x"', 'input_nam = "x"', "field 'input_name': expected a non-empty string, found '<missing>'"),
        ('title = "Tiny"', 'title = "Tiny"\ncolour = "red"', "unknown field(s) 'colour'"),
        ('[models.tiny]', '[models."tiny model"]', "must be letters, digits"),
    ],
)
def test_malformed_entries_name_file_entry_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_models(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_not_toml_and_missing_file_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        load_models(write(tmp_path, "[models.x\n"))
    with pytest.raises(SpecError, match="registry file not found"):
        load_models(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match="one or more"):
        load_models(write(tmp_path, "title = 1\n"))


def test_chips_resolve_by_alias_case_insensitively() -> None:
    chips = load_chips()
    assert resolve_chip(chips, "CPU").name == "cpu"
    # `npu-smi info` prints 310P3; old guides say Ascend710 / 710.
    for alias in ("310P3", "ascend710", "710", "Ascend310P3"):
        assert resolve_chip(chips, alias).name == "Ascend310P3"
    assert resolve_chip(chips, "310").name == "Ascend310" and chips["Ascend310"].devices_per_card == 4
    with pytest.raises(SpecError, match="unknown chip 'Ascend999'; known chips: cpu"):
        resolve_chip(chips, "Ascend999")


def test_chip_alias_clash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chips.toml"
    path.write_text('[chips.a]\nbackend = "onnxruntime"\naliases = ["x"]\n[chips.b]\nbackend = "onnxruntime"\naliases = ["X"]\n')
    with pytest.raises(SpecError, match="used by both a and b"):
        load_chips(path)


def test_seed_rules_are_data() -> None:
    rules = {(r.baseline, r.min_ratio) for r in load_chips()["Ascend310P3"].rules}
    assert rules == {("Ascend310", 1.2), ("T4", 1.6)}


@pytest.mark.parametrize(("rules", "message"), [
    ('rules = [{ baseline = "nowhere", min_ratio = 1.2 }]', "rule against 'nowhere': no such chip"),
    ('rules = [{ baseline = "a", min_ratio = "fast" }]', "min_ratio"),
    ('rules = [{ baseline = "a" }]', "min_ratio"),
    ('rules = ["a"]', "rules\\[0\\]"),
    ('backend_options = { threads = 4 }', "backend_options"),
])
def test_bad_rules_and_options_are_refused(tmp_path: Path, rules: str, message: str) -> None:
    path = tmp_path / "chips.toml"
    path.write_text(f'[chips.a]\nbackend = "onnxruntime"\n[chips.b]\nbackend = "onnxruntime"\n{rules}\n')
    with pytest.raises(SpecError, match=message):
        load_chips(path)


def test_policy_loads_and_rejects_bad_values(tmp_path: Path) -> None:
    policy = load_policy()
    assert policy.accuracy_tolerance_points == 1.0
    text = (FIXTURES_DIR / "policy.toml").read_text()
    path = tmp_path / "policy.toml"
    path.write_text(text.replace("tolerance_points = 1.0", "tolerance_points = -1"))
    with pytest.raises(SpecError, match="tolerance_points"):
        load_policy(path)
    path.write_text(text + "\n[extra]\nx = 1\n")
    with pytest.raises(SpecError, match="unknown table"):
        load_policy(path)
    assert policy.timing.min_runs >= 1 and policy.timing.computed_rtol > 0
    path.write_text(text.replace("max_seconds = 30.0", "max_seconds = 0.5"))
    with pytest.raises(SpecError, match="max_seconds 0.5 is below min_seconds"):
        load_policy(path)


def test_history_policy_loads_from_the_shipped_policy() -> None:
    history = load_policy().history
    assert history == HistoryPolicy(regression_top1_points=0.5, regression_throughput_percent=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        history.regression_top1_points = 1.0  # type: ignore[misc]


def _without_history(text: str) -> str:
    return text.split("[history]")[0]


def test_history_policy_defaults_when_the_section_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(_without_history((FIXTURES_DIR / "policy.toml").read_text()))
    assert load_policy(path).history == HistoryPolicy()
    path.write_text(path.read_text() + "\n[history]\nregression_throughput_percent = 10\n")
    assert load_policy(path).history == HistoryPolicy(regression_top1_points=0.5, regression_throughput_percent=10.0)


@pytest.mark.parametrize(("body", "message"), [
    ("regression_top1_points = -0.1", r"\[history\] field 'regression_top1_points': expected a number in \[0.0, 100.0\], found -0.1"),
    ("regression_throughput_percent = 250", r"\[history\] field 'regression_throughput_percent': expected a number in \[0.0, 100.0\], found 250"),
    ('regression_top1_points = "half"', r"field 'regression_top1_points': expected a number"),
    ("regression_top1_points = true", r"field 'regression_top1_points': expected a number"),
    ("regression_top5_points = 1.0", r"\[history\]: unknown field\(s\) 'regression_top5_points'"),
])
def test_history_policy_rejects_bad_values(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(_without_history((FIXTURES_DIR / "policy.toml").read_text()) + f"\n[history]\n{body}\n")
    with pytest.raises(SpecError, match=message):
        load_policy(path)


def test_history_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("history = 5\n" + _without_history((FIXTURES_DIR / "policy.toml").read_text()))
    with pytest.raises(SpecError, match=r"\[history\]: expected a table, found 5"):
        load_policy(path)
