"""Each policy field declared once (harness/specs/policy.py): the loader's checks, docs/policy.md's
table and the help texts come from the declarations; every problem of policy.toml at once."""

from __future__ import annotations

import math
import sys
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import pytest

from harness.specs import FIXTURES_DIR, SpecError, as_dict, load_policy
from harness.specs.policy import Policy
from harness.specs.policy_doc import DOC, describe, main, policy_table, render
from harness.specs.settings import Declared, declared, read_tables, tables

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

# fixtures/policy.toml as loaded before the declarations (issue 28): the same values after.
SHIPPED: dict[str, Any] = {
    "accuracy": {"tolerance_rule": "absolute", "tolerance_points": 1.0, "tolerance_fraction": 0.99,
                 "inconclusive": "fail", "confidence": 0.95, "paired_method": "tango", "agreement_min_top1": 99.0,
                 "batch_sizes": [8]},
    "conversion": {"rtol": 0.001, "min_cosine": 0.99999, "calibration_images": 16, "seed": 0},
    "perf": {"warmup_runs": 3, "min_runs": 10, "min_seconds": 1.0, "max_seconds": 30.0, "ring_images": 128,
             "computed_rtol": 0.0001, "card_min_overlap": 0.5},
    "history": {"regression_top1_points": 0.5, "regression_throughput_percent": 5.0},
    "localize": {"min_cosine": 0.99, "max_rmse": 1.0, "max_mean_relative_error": 1.0, "max_abs_diff": math.inf,
                 "max_relative_diff": math.inf, "images": 16, "exposure_tolerance": 0.2, "growth_factor": 2.0},
    "reference": {"subset_margin_points": 20.0, "check_images": 32, "check_rtol": 0.001,
                  "fast_path": "traced-channels-last", "fast_check_images": 40, "fast_rtol": 0.0001},
    "data": {"decode_memory_mb": 512},
    "int8": {"calibration_images": 300, "scheme": "qdq-per-channel", "activation_type": "uint8", "weight_type": "int8",
             "logits": "float", "nncf_preset": "performance", "agreement_min_top1": 96.0, "keep_float_max": 32,
             "tensorrt_calibration": "percentile", "keep_float_images": 200, "amct_fake_quant_min_top1": 90.0},
}


def shipped_data() -> dict[str, Any]:
    with (FIXTURES_DIR / "policy.toml").open("rb") as fh:
        return tomllib.load(fh)


def read(data: dict[str, Any]) -> Policy:
    return read_tables(Policy, "policy.toml", data)


def test_the_shipped_policy_loads_with_todays_values() -> None:
    policy = load_policy()
    assert as_dict(policy) == SHIPPED
    assert isinstance(policy.accuracy.batch_sizes, tuple) and isinstance(policy.perf.min_seconds, float)


def test_three_different_errors_are_reported_at_once(tmp_path: Path) -> None:
    text = (FIXTURES_DIR / "policy.toml").read_text()
    text = (text.replace("tolerance_points = 1.0", "tolerance_pts = 1.0")  # unknown, and so a required one missing
            .replace("min_runs = 10", 'min_runs = "ten"')  # wrong type
            .replace("decode_memory_mb = 512", "decode_memory_mb = 8"))  # out of range
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_policy(path)
    error = info.value
    assert [(p.path, p.expected, p.found) for p in error.problems] == [
        ("accuracy.tolerance_pts", "one of the known fields tolerance_rule, tolerance_points, tolerance_fraction, "
         "inconclusive, confidence, paired_method, agreement_min_top1, batch_sizes", "an unknown field"),
        ("accuracy.tolerance_points", "a number in [0.0, 100.0]", "<missing>"),
        ("perf.min_runs", "an integer in [1, 1000000]", "ten"),
        ("data.decode_memory_mb", "an integer in [64, 65536]", 8),
    ]
    lines = str(error).splitlines()
    assert lines[0] == f"{path}: 4 problems:"
    assert lines[3:] == ["  [perf] field 'min_runs': expected an integer in [1, 1000000], found 'ten'",
                         "  [data] field 'decode_memory_mb': expected an integer in [64, 65536], found 8"]


def test_tables_of_the_wrong_kind_and_unknown_tables_are_reported_together() -> None:
    data = {**shipped_data(), "perf": [1, 2], "extra": {"x": 1}}
    with pytest.raises(SpecError) as info:
        read(data)
    assert [p.path for p in info.value.problems] == ["extra", "perf"]
    assert "[perf]: expected a table, found [1, 2]" in str(info.value)
    assert "[extra]: expected one of the known tables accuracy, conversion, perf, history, localize, reference, " \
           "data, int8, found an unknown table" in str(info.value)


def test_missing_tables_and_fields_take_their_declared_defaults() -> None:
    data = {"accuracy": {"tolerance_points": 2, "agreement_min_top1": 98, "batch_sizes": [1, 4]},
            "conversion": {"rtol": 0.01, "min_cosine": 0.9, "calibration_images": 0, "seed": 3}}
    policy = read(data)
    assert policy.accuracy.tolerance_points == 2.0 and policy.accuracy.batch_sizes == (1, 4)
    for name, cls in tables(Policy).items():
        for d in declared(cls):
            if not d.required and d.name not in data.get(name, {}):
                assert getattr(getattr(policy, name), d.name) == d.default, (name, d.name)
    with pytest.raises(SpecError) as info:
        read({})
    assert [p.path for p in info.value.problems] == [
        "accuracy.tolerance_points", "accuracy.agreement_min_top1", "accuracy.batch_sizes",
        "conversion.rtol", "conversion.min_cosine", "conversion.calibration_images", "conversion.seed"]


def _numeric() -> list[tuple[str, Declared]]:
    return [(name, d) for name, cls in tables(Policy).items() for d in declared(cls) if d.kind in ("number", "integer")]


def _limits() -> list[tuple[str, str, float, bool, int]]:
    """(table, field, bound, inclusive, direction): direction -1 for the lower bound, +1 for the upper."""
    out = []
    for name, d in _numeric():
        s = d.setting
        for bound, inclusive, direction in ((s.ge, True, -1), (s.gt, False, -1), (s.le, True, 1), (s.lt, False, 1)):
            if bound is not None and math.isfinite(bound):
                out.append((name, d.name, float(bound), inclusive, direction))
    return out


def _step(d: Declared, bound: float) -> float:
    return 1.0 if d.kind == "integer" else max(abs(bound), 1.0) * 1e-3


@pytest.mark.parametrize(("table", "key", "bound", "inclusive", "direction"), _limits(),
                         ids=[f"{t}.{k}-{'low' if s < 0 else 'high'}" for t, k, _, _, s in _limits()])
def test_every_range_limit_at_above_and_below(table: str, key: str, bound: float, inclusive: bool,
                                              direction: int) -> None:
    (d,) = [d for name, d in _numeric() if name == table and d.name == key]
    step = _step(d, bound)
    kind: type = int if d.kind == "integer" else float

    def load(value: float) -> Policy | SpecError:
        data = shipped_data()
        data.setdefault(table, {})[key] = kind(value)
        if table == "perf" and key in ("min_seconds", "max_seconds"):  # keep max_seconds >= min_seconds
            data["perf"]["min_seconds" if key == "max_seconds" else "max_seconds"] = 0.0 if key == "max_seconds" \
                else 86400.0
        try:
            return read(data)
        except SpecError as error:
            return error

    at, beyond, inside = load(bound), load(bound + direction * step), load(bound - direction * step)
    assert isinstance(beyond, SpecError) and [p.path for p in beyond.problems] == [f"{table}.{key}"]
    assert isinstance(inside, Policy)
    if inclusive:
        assert isinstance(at, Policy) and getattr(getattr(at, table), key) == bound
    else:
        assert isinstance(at, SpecError) and f"field '{key}': expected {d.expected()}" in str(at)


@pytest.mark.parametrize("value", [True, "1", float("nan"), [1], 10**400])
def test_a_number_of_the_wrong_kind_is_refused(value: object) -> None:
    data = shipped_data()
    data["history"]["regression_top1_points"] = value
    with pytest.raises(SpecError, match=r"\[history\] field 'regression_top1_points': expected a number in "
                                        r"\[0.0, 100.0\], found "):
        read(data)


def test_an_integer_field_refuses_a_float_and_batch_sizes_must_be_distinct() -> None:
    data = shipped_data()
    data["localize"]["images"] = 16.0
    data["accuracy"]["batch_sizes"] = [8, 8]
    with pytest.raises(SpecError) as info:
        read(data)
    assert [(p.path, p.found) for p in info.value.problems] == [("accuracy.batch_sizes", [8, 8]),
                                                               ("localize.images", 16.0)]
    assert "expected a non-empty list of distinct integers in [1, 4096]" in str(info.value)


def test_every_policy_field_is_declared_with_a_meaning() -> None:
    for cls in tables(Policy).values():
        names = [d.name for d in declared(cls)]
        assert names == [f for f in cls.__dataclass_fields__], cls
        for d in declared(cls):
            assert d.setting.doc, (cls.__name__, d.name)
            assert d.kind == "text" or d.setting.ge is not None or d.setting.gt is not None, d.name
            assert d.default is MISSING or d.check(d.default)[0], (d.name, d.default)


def test_the_doc_table_is_what_the_declarations_generate() -> None:
    """docs/policy.md's table; regenerate it with python -m harness.specs.policy_doc."""
    text = DOC.read_text()
    assert render(text) == text, "docs/policy.md is stale: run python -m harness.specs.policy_doc"
    assert policy_table() in text
    assert main(["--check"]) == 0
    for name, cls in tables(Policy).items():
        for d in declared(cls):
            assert f"| `[{name}] {d.name}` |" in text


def test_describe_gives_a_help_text_the_shipped_value() -> None:
    assert describe("localize.images") == "fixtures/policy.toml [localize] images = 16 (images)"
    assert describe("accuracy.inconclusive") == "fixtures/policy.toml [accuracy] inconclusive = fail"
    assert describe("accuracy.batch_sizes") == "fixtures/policy.toml [accuracy] batch_sizes = 8"
    with pytest.raises(KeyError):
        describe("accuracy.tolerance")
