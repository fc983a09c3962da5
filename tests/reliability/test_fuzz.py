"""Fuzzing: whatever a label file or a registry file contains, the harness answers with a result
or with its own declared error (DataError, SpecError) naming the file, never with a traceback
from deep inside (KeyError, TypeError, UnicodeDecodeError, RecursionError, OverflowError...).

Registry inputs are the shipped fixtures/*.toml mutated at random depths (a field deleted, added,
or replaced by any TOML value: dates, NaN, huge integers, nested tables...) and written back as
TOML, so most examples get past the parser into validation. Successful loads must also be usable
downstream: every spec must serialize into a cache key.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cache import canonical_json
from harness.data import DataError, read_labels
from harness.data.labels import image_stem
from harness.specs import (
    FIXTURES_DIR,
    SpecError,
    as_dict,
    load_chips,
    load_models,
    load_policy,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

# Moderate by default so the suite stays fast; RELIABILITY_FUZZ_EXAMPLES=5000 for a deep run.
EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOADERS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "models": (load_models, "models.toml"),
    "chips": (load_chips, "chips.toml"),
    "policy": (load_policy, "policy.toml"),
}


# --------------------------------------------------------------------------------------------
# A small TOML writer (inline tables only: every document is valid TOML 1.0)


def toml_string(text: str) -> str:
    # JSON's escapes are TOML's; DEL is the one control character JSON leaves raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


# --------------------------------------------------------------------------------------------
# Strategies

FIELD_NAMES = sorted({
    "models", "chips", "accuracy", "conversion", "perf", "arch", "weights", "preprocess", "preprocess_variants",
    "published", "batch_sizes", "source", "name", "kwargs", "random_init_kwargs", "filename", "url", "md5",
    "sha256", "sha256_prefix", "package", "package_path", "key_mapping", "state_dict_key", "resize", "crop",
    "interpolation", "method", "mean", "std", "top1", "top5", "title", "seed", "input_name", "output_name",
    "num_classes", "fixed_input_size", "notes", "backend", "aliases", "devices_per_card", "precision",
    "description", "backend_options", "rules", "baseline", "min_ratio", "tolerance_points",
    "agreement_min_top1", "rtol", "min_cosine", "calibration_images", "warmup_runs", "min_runs",
    "min_seconds", "max_seconds", "ring_images", "computed_rtol", "modelzoo",
})
TEXT = st.characters(blacklist_categories=("Cs",))
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(TEXT, max_size=8))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 224, 256, 4097, 10**30, -(10**400), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(TEXT, max_size=12),
    st.sampled_from(["", " ", "timm", "torchvision", "bilinear", "resize_crop", "fp32", "onnxruntime", "abcdef12"]),
    st.dates(),
    st.times(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=8,
)


def shipped(name: str) -> dict[str, Any]:
    with (FIXTURES_DIR / name).open("rb") as fh:
        return tomllib.load(fh)


def fields_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every field and list item at every depth of ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out: list[tuple[Any, ...]] = []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(fields_of(child, (*prefix, key)))
    return out


def mutate(draw: Callable[..., Any], doc: dict[str, Any]) -> None:
    """Replace, delete or add one field anywhere in ``doc`` (in place), every field equally likely."""
    everywhere = fields_of(doc)
    if not everywhere:
        doc[draw(keys)] = draw(values)
        return
    path = draw(st.sampled_from(everywhere))
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if operation == "replace":
        parent[path[-1]] = draw(values)
    elif operation == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(keys)] = draw(values)
    else:
        parent.append(draw(values))


# --------------------------------------------------------------------------------------------
# Registry loaders


def load(kind: str, content: bytes) -> Any:
    """Write ``content`` as the registry file of ``kind`` and load it: a result or SpecError."""
    loader, filename = LOADERS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_bytes(content)
        try:
            return loader(path)
        except SpecError as exc:
            assert str(path) in str(exc), f"the error must name the file: {exc}"
            return exc


def check_usable(kind: str, result: Any) -> None:
    """A registry that loads must be usable: JSON-able for cache keys, finite numbers."""
    if isinstance(result, SpecError):
        return
    canonical_json({"spec": as_dict(result)})
    if kind == "models":
        for spec in result.values():
            for pre in (spec.preprocess, *spec.preprocess_variants.values()):
                assert all(math.isfinite(v) for v in (*pre.mean, *pre.std)) and min(pre.std) > 0
                assert 0 < pre.crop <= pre.resize
            assert spec.batch_sizes and all(isinstance(b, int) and b > 0 for b in spec.batch_sizes)
    elif kind == "policy":
        numbers = [v for v in as_dict(result).values() if isinstance(v, float)]
        numbers += [v for v in as_dict(result.perf).values() if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers)


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(content=st.one_of(st.binary(max_size=400),
                         st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(content=b"\xff\xfe[models.x]\n")
@example(content=b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n")
def test_registry_loaders_answer_any_bytes_with_a_result_or_a_spec_error(kind: str, content: bytes) -> None:
    """Arbitrary bytes, including invalid UTF-8 (used to raise UnicodeDecodeError) and
    5000-deep nested arrays (used to raise RecursionError)."""
    check_usable(kind, load(kind, content))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@settings(FUZZ, max_examples=EXAMPLES * 3)  # ~4 ms each: three times the default budget
@given(data=st.data())
def test_mutated_shipped_registries_load_or_fail_with_a_spec_error(kind: str, data: st.DataObject) -> None:
    """The shipped fixtures with one to three random mutations at any depth: a usable result or a
    SpecError naming the file (not a TypeError from a table that is a number, an OverflowError
    from a 400-digit accuracy, or a date that later breaks the cache key)."""
    doc = shipped(LOADERS[kind][1])
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data.draw, doc)
    check_usable(kind, load(kind, toml_document(doc).encode()))


def _shipped_with(filename: str, old: str, new: str) -> bytes:
    text = (FIXTURES_DIR / filename).read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


REGRESSIONS = {
    "policy-section-is-a-number": ("policy", b"accuracy = 5\n", "[accuracy]: expected a table, found 5"),
    "policy-section-is-a-list": (
        "policy",
        toml_document({**shipped("policy.toml"), "perf": [1, 2]}).encode(),
        "[perf]: expected a table, found [1, 2]",
    ),
    "variant-is-a-number": (
        "models",
        _shipped_with(
            "models.toml",
            "[models.resnext50_32x4d]",
            "[models.resnext50_32x4d]\npreprocess_variants = { modelzoo = 5 }",
        ),
        "[models.resnext50_32x4d.preprocess_variants.modelzoo]: expected a table, found 5",
    ),
    "400-digit-number": (
        "policy",
        _shipped_with("policy.toml", "tolerance_points = 1.0", "tolerance_points = 1" + "0" * 400),
        "field 'tolerance_points': expected a number in [0.0, 100.0]",
    ),
    "nan-mean": (
        "models",
        _shipped_with("models.toml", "mean = [0.5, 0.5, 0.5]", "mean = [nan, 0.5, 0.5]"),
        "field 'mean': expected a list of 3 finite numbers",
    ),
    "date-in-kwargs": (
        "models",
        _shipped_with("models.toml", "zero_init_last = false", "zero_init_last = 1979-05-27"),
        "field 'random_init_kwargs': expected a table of strings, numbers, booleans, lists and tables",
    ),
    "invalid-utf8": ("chips", b'[chips.cpu]\nbackend = "\xff"\n', "not valid TOML"),
    "deeply-nested": ("chips", b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_registry_defects_found_by_fuzzing_are_spec_errors(case: str) -> None:
    """Each defect a (deep) fuzzing run found, kept as a fixed example: before the fix these
    raised TypeError, OverflowError, UnicodeDecodeError or RecursionError, or (NaN mean, a date in
    kwargs) loaded and broke later, in normalization or in the cache key of the export."""
    kind, content, message = REGRESSIONS[case]
    result = load(kind, content)
    assert isinstance(result, SpecError) and message in str(result)


def test_registry_loaders_accept_a_str_path() -> None:
    """load_models("fixtures/models.toml") used to fail with AttributeError ('str' has no 'open')."""
    for loader, filename in LOADERS.values():
        assert loader(str(FIXTURES_DIR / filename))


def test_a_directory_given_as_a_registry_is_a_spec_error(tmp_path: Path) -> None:
    """A directory where the registry file should be used to raise IsADirectoryError."""
    for loader, _ in LOADERS.values():
        with pytest.raises(SpecError, match=f"cannot read registry file {re.escape(str(tmp_path))}: Is a directory"):
            loader(tmp_path)


def test_the_writer_round_trips_the_shipped_registries() -> None:
    """The fuzz documents are real TOML: the writer reproduces every shipped file's data."""
    for _, filename in LOADERS.values():
        doc = shipped(filename)
        assert tomllib.loads(toml_document(doc)) == doc


# --------------------------------------------------------------------------------------------
# Label files


@FUZZ
@given(content=st.binary(max_size=600), num_classes=st.integers(1, 2000))
@example(content="\ufeffa.JPEG 0\r\nb.JPEG \u0665\n".encode(), num_classes=10)
@example(content=b"a.JPEG " + b"9" * 5000 + b"\n", num_classes=1000)
def test_read_labels_answers_any_bytes_with_labels_or_a_data_error(content: bytes, num_classes: int) -> None:
    """Any bytes: a mapping whose names have no whitespace and whose labels are in range, or a
    DataError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_label.txt"
        path.write_bytes(content)
        try:
            labels = read_labels(path, num_classes)
        except DataError as exc:
            assert str(path) in str(exc)
            return
    assert labels
    for name, label in labels.items():
        assert name and name.split() == [name]
        assert isinstance(label, int) and 0 <= label < num_classes


LINE_SPACE = st.sampled_from([" ", "\t", "  ", " \t ", "\x0b", "\x0c", "\u3000"])
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)
DEFECTS = ("extra-field", "missing-label", "not-an-integer", "out-of-range", "negative", "duplicate")


@FUZZ
@given(
    pairs=st.dictionaries(NAMES, st.integers(0, 999), min_size=1, max_size=12),
    spaces=st.lists(LINE_SPACE, min_size=1, max_size=4),
    blanks=st.lists(st.integers(0, 20), max_size=5),
    defect=st.one_of(st.none(), st.tuples(st.sampled_from(DEFECTS), st.integers(0, 100))),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_read_labels_reads_valid_files_exactly_and_names_the_first_bad_line(
    pairs: dict[str, int], spaces: list[str], blanks: list[int], defect: tuple[str, int] | None, newline: str
) -> None:
    """Files built line by line with random separators and blank lines: without a defect the
    result is exactly the written mapping; with one defect the DataError names its line number."""
    # Valid names: one field, no BOM, a file name (no "/" or NUL), one name per stem.
    names, stems = [], set()
    for n in pairs:
        if n.split() == [n] and n[0] != "\ufeff" and "/" not in n and "\0" not in n and image_stem(n) not in stems:
            names.append(n)
            stems.add(image_stem(n))
    if not names:
        return
    lines = [f"{n}{spaces[i % len(spaces)]}{pairs[n]}" for i, n in enumerate(names)]
    bad_index = None
    if defect is not None:
        kind, where = defect
        bad_index = where % len(lines)
        name = names[bad_index]
        lines[bad_index] = {
            "extra-field": f"{name} {pairs[name]} extra",
            "missing-label": name,
            "not-an-integer": f"{name} n01440764",
            "out-of-range": f"{name} 1000",
            "negative": f"{name} -1",
            "duplicate": f"{names[bad_index - 1]} 3" if bad_index > 0 else f"{name} {pairs[name]}",
        }[kind]
        if kind == "duplicate" and bad_index == 0:
            bad_index = None  # a line 0 "duplicate" is just the original line
    for position in sorted(blanks, reverse=True):
        lines.insert(min(position, len(lines)), spaces[0] if position % 2 else "")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_label.txt"
        path.write_text(newline.join(lines) + newline, encoding="utf-8")
        if bad_index is None:
            assert read_labels(path) == {n: pairs[n] for n in names}
            return
        with pytest.raises(DataError, match=re.escape(f"{path}:{_line_of(lines, bad_index)}:")):
            read_labels(path)


def _line_of(lines: list[str], index: int) -> int:
    """1-based line number of the ``index``-th non-blank line, as an editor or grep -n counts."""
    seen = -1
    for lineno, line in enumerate(lines, start=1):
        if line.split():
            seen += 1
            if seen == index:
                return lineno
    raise AssertionError(f"no non-blank line {index}")
