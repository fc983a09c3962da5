"""Registry validation: the shipped fixtures load, and every malformed entry is a clear SpecError."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.judge.gates import tolerance_for
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
from harness.specs.policy import AccuracyPolicy, AccuracyTolerance

SEED_MODELS = {"resnext50_32x4d", "resnext101_32x8d", "resnest50", "se_resnext50_32x4d", "ghostnet_100"}
SEEDS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"

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
    for name, enum in (
        ("resnext50_32x4d", tvm.ResNeXt50_32X4D_Weights),
        ("resnext101_32x8d", tvm.ResNeXt101_32X8D_Weights),
    ):
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
        ('resize = 256, crop = 224', 'resize = 256, crop = 224, mean = [0.5, 0.5]',
         "field 'mean': expected a list of 3"),
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
    path.write_text(
        '[chips.a]\nbackend = "onnxruntime"\naliases = ["x"]\n[chips.b]\nbackend = "onnxruntime"\naliases = ["X"]\n'
    )
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
    assert policy.accuracy.tolerance_points == 1.0
    text = (FIXTURES_DIR / "policy.toml").read_text()
    path = tmp_path / "policy.toml"
    path.write_text(text.replace("tolerance_points = 1.0", "tolerance_points = -1"))
    with pytest.raises(SpecError, match="tolerance_points"):
        load_policy(path)
    path.write_text(text + "\n[extra]\nx = 1\n")
    with pytest.raises(SpecError, match="unknown table"):
        load_policy(path)
    assert policy.perf.min_runs >= 1 and policy.perf.computed_rtol > 0
    path.write_text(text.replace("max_seconds = 30.0", "max_seconds = 0.5"))
    with pytest.raises(SpecError, match=r"\[perf\] field 'max_seconds': expected at least min_seconds "
                                         r"\(1.0\), found 0.5"):
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
    ("regression_top1_points = -0.1",
     r"\[history\] field 'regression_top1_points': expected a number in \[0.0, 100.0\], found -0.1"),
    ("regression_throughput_percent = 250",
     r"\[history\] field 'regression_throughput_percent': expected a number in \[0.0, 100.0\], found 250"),
    ('regression_top1_points = "half"', r"field 'regression_top1_points': expected a number"),
    ("regression_top1_points = true", r"field 'regression_top1_points': expected a number"),
    ("regression_top5_points = 1.0", r"\[history\] field 'regression_top5_points': expected one of the known fields "
                                     r"regression_top1_points, regression_throughput_percent, found an unknown field"),
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


# --------------------------------------------------------------------------------------------
# Issue 14: the accuracy tolerance as data (policy.toml [accuracy], per model in models.toml)


def _policy_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (FIXTURES_DIR / "policy.toml").read_text()
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, new))
    return path


def test_shipped_policy_has_the_absolute_one_point_rule_and_strict_inconclusive() -> None:
    policy = load_policy()
    assert policy.accuracy.tolerance == AccuracyTolerance(rule="absolute", points=1.0, fraction=0.99)
    assert (policy.accuracy.confidence, policy.accuracy.paired_method, policy.accuracy.inconclusive) == \
        (0.95, "tango", "fail")
    assert policy.accuracy.tolerance.points_for(75.0) == 1.0
    assert tolerance_for(policy) == policy.accuracy.tolerance


def test_policy_verdict_fields_default_when_absent(tmp_path: Path) -> None:
    text = (FIXTURES_DIR / "policy.toml").read_text()
    kept = [line for line in text.splitlines() if not line.startswith(
        ("tolerance_rule", "tolerance_fraction", "inconclusive", "confidence", "paired_method"))]
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(kept) + "\n")
    policy = load_policy(path)
    assert policy.accuracy.tolerance == AccuracyTolerance()
    assert policy.accuracy == AccuracyPolicy(tolerance_points=1.0, agreement_min_top1=99.0, batch_sizes=(8,))


def test_policy_relative_rule_is_a_fraction_of_the_reference(tmp_path: Path) -> None:
    path = _policy_with(tmp_path, 'tolerance_rule = "absolute"', 'tolerance_rule = "relative"')
    path.write_text(path.read_text().replace("tolerance_fraction = 0.99", "tolerance_fraction = 0.995"))
    tolerance = load_policy(path).accuracy.tolerance
    assert tolerance.rule == "relative" and tolerance.fraction == 0.995
    assert tolerance.points_for(80.0) == pytest.approx(0.4)
    assert tolerance.describe() == "relative rule: >= 99.5% of the reference"


def test_policy_inconclusive_may_be_allowed_and_the_method_chosen(tmp_path: Path) -> None:
    path = _policy_with(tmp_path, 'inconclusive = "fail"', 'inconclusive = "allow"')
    path.write_text(path.read_text().replace('paired_method = "tango"', 'paired_method = "newcombe"')
                    .replace("confidence = 0.95", "confidence = 0.99"))
    accuracy = load_policy(path).accuracy
    assert (accuracy.confidence, accuracy.paired_method, accuracy.inconclusive) == (0.99, "newcombe", "allow")


@pytest.mark.parametrize(("old", "new", "message"), [
    ('tolerance_rule = "absolute"', 'tolerance_rule = "percent"',
     r"field 'tolerance_rule': expected one of absolute, relative, found 'percent'"),
    ('tolerance_rule = "absolute"', "tolerance_rule = 1",
     r"field 'tolerance_rule': expected one of absolute, relative, found 1"),
    ("tolerance_fraction = 0.99", "tolerance_fraction = 0",
     r"field 'tolerance_fraction': expected a number in \(0.0, 1.0\], found 0"),
    ("tolerance_fraction = 0.99", "tolerance_fraction = 1.01",
     r"field 'tolerance_fraction': expected a number in \(0.0, 1.0\], found 1.01"),
    ("tolerance_fraction = 0.99", "tolerance_fraction = 99",
     r"field 'tolerance_fraction': expected a number in \(0.0, 1.0\], found 99"),
    ("tolerance_fraction = 0.99", 'tolerance_fraction = "99%"', r"field 'tolerance_fraction': expected a number"),
    ("tolerance_fraction = 0.99", "tolerance_fraction = true", r"field 'tolerance_fraction': expected a number"),
    ('inconclusive = "fail"', 'inconclusive = "pass"',
     r"field 'inconclusive': expected one of fail, allow, found 'pass'"),
    ('inconclusive = "fail"', "inconclusive = false", r"field 'inconclusive': expected one of fail, allow"),
    ("confidence = 0.95", "confidence = 95", r"field 'confidence': expected a number in \(0.5, 1.0\), found 95"),
    ("confidence = 0.95", "confidence = 1.0", r"field 'confidence': expected a number in \(0.5, 1.0\), found 1.0"),
    ("confidence = 0.95", "confidence = 0.5", r"field 'confidence': expected a number in \(0.5, 1.0\), found 0.5"),
    ("confidence = 0.95", "confidence = nan", r"field 'confidence': expected a number in \(0.5, 1.0\), found nan"),
    ('paired_method = "tango"', 'paired_method = "wald"',
     r"field 'paired_method': expected one of tango, newcombe, found 'wald'"),
    ("tolerance_points = 1.0", "tolerance_pts = 1.0",
     r"field 'tolerance_points': expected a number in \[0.0, 100.0\], found '<missing>'"),
    ('paired_method = "tango"', 'paired_method = "tango"\npaired_methods = "tango"',
     r"\[accuracy\] field 'paired_methods': expected one of the known fields"),
])
def test_policy_tolerance_and_verdict_fields_are_validated(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _policy_with(tmp_path, old, new)
    with pytest.raises(SpecError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value) and "[accuracy]" in str(info.value)


def test_model_tolerance_override_loads_and_wins_over_the_policy(tmp_path: Path) -> None:
    relative = load_models(write(tmp_path, GOOD + 'accuracy_tolerance = { rule = "relative", fraction = 0.99 }\n'))[
        "tiny"
    ]
    assert relative.accuracy_tolerance == AccuracyTolerance(rule="relative", fraction=0.99)
    absolute = load_models(write(tmp_path, GOOD + 'accuracy_tolerance = { rule = "absolute", points = 2 }\n'))["tiny"]
    assert absolute.accuracy_tolerance == AccuracyTolerance(rule="absolute", points=2.0)
    plain = load_models(write(tmp_path, GOOD))["tiny"]
    assert plain.accuracy_tolerance is None
    policy = load_policy()
    assert tolerance_for(policy, relative).points_for(70.0) == pytest.approx(0.7)
    assert tolerance_for(policy, absolute).points_for(70.0) == 2.0
    assert tolerance_for(policy, plain) == policy.accuracy.tolerance
    # the policy's points are [accuracy] tolerance_points, also in a Policy made by hand
    assert tolerance_for(dataclasses.replace(policy, accuracy=dataclasses.replace(policy.accuracy,
                                                                                  tolerance_points=0.5))).points == 0.5
    assert all(spec.accuracy_tolerance is None for spec in load_models().values())


@pytest.mark.parametrize(("table", "message"), [
    ('{ points = 2.0 }',
     r"\[models.tiny.accuracy_tolerance\] field 'rule': expected one of absolute, relative, found '<missing>'"),
    ('{ rule = "mlperf", fraction = 0.99 }', r"field 'rule': expected one of absolute, relative, found 'mlperf'"),
    ('{ rule = "relative" }', r"field 'fraction': expected a number in \(0.0, 1.0\], found '<missing>'"),
    ('{ rule = "absolute" }', r"field 'points': expected a number in \[0.0, 100.0\], found '<missing>'"),
    ('{ rule = "relative", fraction = 0.99, points = 1.0 }',
     r"field 'points': expected no 'points' with rule = 'relative'"),
    ('{ rule = "absolute", points = 1.0, fraction = 0.99 }',
     r"field 'fraction': expected no 'fraction' with rule = 'absolute'"),
    ('{ rule = "absolute", points = -1 }', r"field 'points': expected a number in \[0.0, 100.0\], found -1"),
    ('{ rule = "relative", fraction = 0 }', r"field 'fraction': expected a number in \(0.0, 1.0\], found 0"),
    ('{ rule = "absolute", points = 1.0, colour = "red" }', r"unknown field\(s\) 'colour'"),
    ("1.0", r"\[models.tiny\] field 'accuracy_tolerance': expected a table, found 1.0"),
])
def test_model_tolerance_override_is_validated(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, GOOD + f"accuracy_tolerance = {table}\n")
    with pytest.raises(SpecError, match=message) as info:
        load_models(path)
    assert str(path) in str(info.value)


def test_every_broken_model_and_chip_entry_is_reported_at_once(tmp_path: Path) -> None:
    models = write(tmp_path, GOOD + GOOD.replace("[models.tiny]", "[models.tiny2]").replace("crop = 224", "crop = 0")
                   + GOOD.replace("[models.tiny]", "[models.tiny3]").replace('seed = "none"', "seed = 3"))
    with pytest.raises(SpecError) as info:
        load_models(models)
    assert str(info.value).splitlines() == [
        f"{models}: 2 entries have problems:",
        "  [models.tiny2.preprocess] field 'crop': expected an integer in [1, 4096], found 0",
        "  [models.tiny3] field 'seed': expected a non-empty string, found 3"]
    assert [p.path for p in info.value.problems] == ["models.tiny2.preprocess.crop", "models.tiny3.seed"]
    chips = tmp_path / "chips.toml"
    chips.write_text('[chips.a]\nbackend = "onnxruntime"\ndevices_per_card = 0\n[chips.b]\nbackend = "x"\n'
                     '[chips.c]\nbackend = "onnxruntime"\ncolour = "red"\n')
    with pytest.raises(SpecError, match=r"2 entries have problems:\n  \[chips.a\] field 'devices_per_card'.*\n"
                                        r"  \[chips.c\]: unknown field\(s\) 'colour'"):
        load_chips(chips)


def test_every_problem_of_one_entry_is_reported_at_once(tmp_path: Path) -> None:
    """Three problems in three parts of one model entry (preprocess, a top-level field, an unknown
    field), and two in one chip: each is named, not only the first one read."""
    broken = GOOD.replace("crop = 224", "crop = 0").replace('seed = "none"', "seed = 3") + 'colour = "red"\n'
    with pytest.raises(SpecError) as info:
        load_models(write(tmp_path, broken))
    lines = str(info.value).splitlines()
    assert lines[0].endswith("[models.tiny]: 3 problems:"), lines
    assert any("[models.tiny.preprocess] field 'crop': expected an integer in [1, 4096], found 0" in x for x in lines)
    assert any("[models.tiny] field 'seed': expected a non-empty string, found 3" in x for x in lines)
    assert any("unknown field(s) 'colour'" in x for x in lines)
    chips = tmp_path / "chips.toml"
    chips.write_text('[chips.a]\nbackend = "onnxruntime"\ndevices_per_card = 0\nprecision = "fp8"\n')
    with pytest.raises(SpecError, match=r"\[chips.a\]: 2 problems:\n    .*'devices_per_card'.*\n    .*'precision'"):
        load_chips(chips)
