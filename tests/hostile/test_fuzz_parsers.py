"""Fuzzing the parsers of outside data (issue 25): any input gives a result or an error of the
suite's own family (:class:`~harness.errors.HarnessError`), never another exception; and a result
holds what the parser promises (labels in range, names that exist, figures that are finite...).

Parsers: label files (``read_labels``), both ImageNet layouts (real folders with
hypothesis-chosen names, non-UTF-8 bytes and symlink loops included, and label files), the
coverage recogniser (``coverage_of``, ``coverage``, ``label_file_is_canonical``,
``load_val_set``), the baseline CSV and ais_bench summaries (``parse_csv``,
``parse_ais_bench_summary``, ``read_measurements``), the registry loaders fed TOML documents
shaped like each file, and the naming rules of an ais_bench predictions folder
(``read_ais_bench_folder``, valid file contents: the value parsing is fuzzed elsewhere).

Bounded for CI: ~25 s on 2 cores. ``MZC_FUZZ_SCALE=20`` multiplies every budget for a deep run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from reliability.test_fuzz import check_usable, keys, load, toml_document, values
from test_coverage import wnid_labels

from harness.cache import canonical_json
from harness.clocks import CLOCKS
from harness.data import (
    DataError,
    coverage,
    coverage_of,
    dataset_cache_inputs,
    label_file_is_canonical,
    list_dataset,
    load_wnids,
    read_labels,
)
from harness.data.coverage import ValSet, canonical_sha256, load_val_set
from harness.data.labels import LINE_BREAKS, image_stem
from harness.data.prepared import _names_file_bytes, _read_names
from harness.errors import HarnessError, UsageError
from harness.judge.baselines import (
    COLUMNS,
    MAX_BATCH,
    OPTIONAL_COLUMNS,
    UNITS,
    BaselineError,
    _render,
    parse_ais_bench_summary,
    parse_csv,
    read_measurements,
)
from harness.judge.predictions import AisBenchOutput, read_ais_bench_folder
from harness.specs import SCENARIOS, PreprocessSpec, SpecError

SCALE = float(os.environ.get("MZC_FUZZ_SCALE", "1"))


def budget(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def outcome(call: Callable[[], Any]) -> Any:
    """The result of ``call``, or the suite's own error it raised; anything else propagates.
    ``--hypothesis-show-statistics`` shows how the examples ended (a result, or which error)."""
    try:
        result = call()
    except HarnessError as exc:
        gist = _GIST.sub("#", str(exc))[:60].encode("utf-8", "backslashreplace").decode()  # a path may not be UTF-8
        event(f"{type(exc).__name__}: {gist}")
        return exc
    event(f"result: {type(result).__name__}")
    return result


_GIST = re.compile(r"/tmp/\S*|\d+|'[^']*'")


def one_clean_line(text: str) -> None:
    """A message or record names things escaped: no raw line break, no lone surrogate."""
    assert not any(c in text for c in LINE_BREAKS), text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), text


WNIDS = load_wnids()
TINY = PreprocessSpec(resize=8, crop=8)
# Characters that have broken a parser somewhere: every line break, Unicode digits, separators,
# quotes, controls, a bidi override, and the characters of an ImageNet name.
TRICKY = (
    "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 \t\u3000._-0179\u0661\u0665\uff11\u00b2\u00e9\\'\",\x01\x7f\u202e\ufeff"
)


def mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], one_in: int = 6) -> st.SearchStrategy[Any]:
    """``valid`` but one draw in ``one_in`` from ``hostile``: enough valid input that the success
    paths (and their promises) are exercised, enough hostile input to try every refusal."""
    return st.integers(1, one_in).flatmap(lambda i: hostile if i == 1 else valid)


HOSTILE_LABELS = st.sampled_from(
    ["1_0", "\u0661\u0662", "\uff11", "-1", "1000", "+3", "007", "9" * 60, "", "x", "1.0", "0x1"]
)
LABEL_TEXT = mostly(st.integers(0, 999).map(str), HOSTILE_LABELS, 8)
SEPARATORS = [" ", "\t", "  ", "\u3000"]
SUFFIXES = [b".JPEG", b".jpg", b".png", b".PNG", b".jpeg", b"", b".txt"]
HOSTILE_STEMS = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.text(st.sampled_from(TRICKY + "abX"), min_size=1, max_size=8).map(str.encode),
)
STEM_BYTES = mostly(st.integers(1, 30).map(lambda i: f"ILSVRC2012_val_{i:08d}".encode()), HOSTILE_STEMS, 5)


def _file_name(raw: bytes) -> bool:
    return b"/" not in raw and b"\0" not in raw and raw not in (b".", b"..") and len(raw) <= 255


FILE_NAMES = st.builds(bytes.__add__, STEM_BYTES, mostly(st.just(b".JPEG"), st.sampled_from(SUFFIXES), 3)).filter(
    _file_name
)
SPECIALS = mostly(
    st.just(set()),
    st.sets(st.sampled_from(["loop", "dangling", "dir-named-like-an-image", "hidden", "not-an-image"]), max_size=2),
    4,
)


def make(folder: Path, name: bytes, content: bytes = b"") -> None:
    os.makedirs(os.fsencode(folder), exist_ok=True)
    with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
        fh.write(content)


def add_specials(folder: Path, specials: set[str]) -> None:
    raw = os.fsencode(folder)
    os.makedirs(raw, exist_ok=True)
    if "loop" in specials:
        os.symlink(b"loop.JPEG", os.path.join(raw, b"loop.JPEG"))
    if "dangling" in specials:
        os.symlink(b"/nonexistent/x.JPEG", os.path.join(raw, b"dangling.JPEG"))
    if "dir-named-like-an-image" in specials:
        os.makedirs(os.path.join(raw, b"dir.JPEG"), exist_ok=True)
    if "hidden" in specials:
        make(folder, b"._hidden.JPEG")
    if "not-an-image" in specials:
        make(folder, b"notes.txt", b"x")


def label_text(draw: Callable[..., Any], names: list[bytes], truth: dict[bytes, int] | None = None) -> bytes:
    """A label file for some of ``names`` (mostly their ``truth``, else labels from LABEL_TEXT),
    or any bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    lines = []
    for raw in names:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if draw(st.integers(0, 12)):
            label = LABEL_TEXT if truth is None else mostly(st.just(str(truth[raw])), LABEL_TEXT, 10)
            lines.append(name + draw(mostly(st.just(" "), st.sampled_from(SEPARATORS))) + draw(label))
    extra = draw(mostly(st.just([]), st.lists(FILE_NAMES, max_size=2), 4))
    lines += [f"{n.decode('utf-8', 'replace')} {draw(LABEL_TEXT)}" for n in extra]
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode("utf-8", "surrogatepass")


def check_listing(listing: Any, scratch: Path, expect_labels: dict[str, int] | None = None) -> None:
    """What a listing promises downstream: sorted unique names that exist, in-range labels, one
    stem each, no line break; a cache key, a names file that round-trips, a coverage."""
    names = listing.names
    assert list(names) == sorted(set(names)) and len(listing.labels) == len(names) > 0
    assert all(isinstance(lbl, int) and 0 <= lbl < 1000 for lbl in listing.labels)
    assert all(os.path.isfile(p) for p in listing.image_paths())
    assert not any(c in n for n in names for c in LINE_BREAKS)
    assert len({image_stem(n) for n in names}) == len(names)
    if expect_labels is not None:
        assert all(expect_labels[n] == lbl for n, lbl in zip(names, listing.labels, strict=True))
    canonical_json(dataset_cache_inputs(listing, TINY))
    (scratch / "names.txt").write_bytes(_names_file_bytes(names))
    assert _read_names(scratch / "names.txt") == names
    found = coverage(listing)
    assert found.kind in ("full", "subset", "other") and found.images == len(names)
    one_clean_line(found.describe())
    json.dumps(found.as_record())


def check_refusal(result: Any) -> None:
    if isinstance(result, HarnessError):
        assert isinstance(result, DataError), repr(result)
        one_clean_line(str(result))


# --------------------------------------------------------------------------------------------
# Label files


@budget(150)
@given(lines=st.lists(st.tuples(mostly(st.integers(0, 99).map(lambda i: f"img{i}.JPEG"),
                                        st.text(st.sampled_from(TRICKY + "aX/"), max_size=6), 4),
                                 mostly(st.just(" "), st.sampled_from(["\t", "\x0b", "\u3000", "\u2028", "\x85"]), 4),
                                 LABEL_TEXT), max_size=8),
       newline=st.sampled_from(["\n", "\r\n", "\r", "\x85"]), num_classes=st.sampled_from([10, 1000]))
@example(lines=[("a.JPEG", " ", "1_0")], newline="\n", num_classes=1000)
@example(lines=[("a.JPEG", " ", "\u0661\u0662")], newline="\n", num_classes=1000)
@example(lines=[("X.JPEG", " ", "1"), ("X.png", " ", "2")], newline="\n", num_classes=1000)
def test_read_labels_takes_only_ascii_digits_in_range_one_per_stem(
    lines: list[tuple[str, str, str]], newline: str, num_classes: int
) -> None:
    """Labels built from the characters that broke int(): a result only when every line of two
    fields has an ASCII-digit label in range, a file name (no /) of a stem seen once."""
    text = newline.join(f"{n}{sep}{lbl}" for n, sep, lbl in lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_label.txt"
        path.write_bytes(text.encode("utf-8"))
        result = outcome(lambda: read_labels(path, num_classes))
    if isinstance(result, HarnessError):
        assert isinstance(result, DataError) and str(path) in str(result)
        one_clean_line(str(result))
        return
    # The oracle: lines end at \n, \r\n or \r only; fields are what str.split() gives.
    bare = text.removeprefix("\ufeff")  # a UTF-8 byte order mark starts no name
    written = [line.split() for line in bare.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    written = [fields for fields in written if fields]
    assert len(result) == len(written) and len({image_stem(n) for n in result}) == len(result)
    for name, raw in written:
        assert re.fullmatch("[0-9]+", raw) and "/" not in name
        assert result[name] == int(raw) < num_classes


# --------------------------------------------------------------------------------------------
# The two ImageNet layouts


@budget(100)
@given(data=st.data())
def test_a_flat_folder_of_any_names_lists_or_is_refused(data: st.DataObject) -> None:
    """ModelZoo layout: DIR/val/*.JPEG (or DIR/*.JPEG) and DIR/val_label.txt, with any names
    (bytes that are not UTF-8, line breaks, one stem twice), symlink loops, any label file."""
    names = data.draw(st.lists(FILE_NAMES, min_size=1, max_size=8, unique=True))
    specials = data.draw(SPECIALS)
    nested = data.draw(st.booleans())
    policy = data.draw(st.sampled_from(["error", "intersect"]))
    limit = data.draw(st.one_of(st.none(), st.integers(1, 4)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        images = root / "val" if nested else root
        for name in names:
            make(images, name)
        add_specials(images, specials)
        (root / "val_label.txt").write_bytes(label_text(data.draw, names))
        result = outcome(lambda: list_dataset(root, limit=limit, on_mismatch=policy))
        check_refusal(result)
        if not isinstance(result, HarnessError):
            check_listing(result, Path(tmp), read_labels(root / "val_label.txt"))
            assert os.fsencode(result.image_dir) == os.fsencode(images)


FOLDERS = mostly(
    st.sampled_from([WNIDS[0], WNIDS[1], WNIDS[999]]).map(str.encode),
    st.one_of(st.sampled_from([b"n0144076", b"n01440764x", b"N01440764", b"\xffn01440764"]), HOSTILE_STEMS),
    8,
)


@budget(100)
@given(data=st.data())
def test_an_imagefolder_tree_of_any_names_lists_or_is_refused(data: st.DataObject) -> None:
    """ImageFolder layout: DIR/val/<wnid>/<name> with any folder and file names, nested folders,
    symlink loops, and sometimes an explicit label file that must agree."""
    tree = data.draw(
        st.dictionaries(
            FOLDERS.filter(_file_name),
            st.lists(FILE_NAMES, min_size=data.draw(mostly(st.just(1), st.just(0))), max_size=4, unique=True),
            min_size=1,
            max_size=3,
        )
    )
    specials = data.draw(SPECIALS)
    with_labels = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        for folder, names in tree.items():
            for name in names:
                make(root / "val" / os.fsdecode(folder), name)
            os.makedirs(os.path.join(os.fsencode(root / "val"), folder), exist_ok=True)
        where = data.draw(st.sampled_from(sorted(tree)))
        add_specials(root / "val" / os.fsdecode(where), specials)
        label_file = None
        if with_labels:
            label_file = Path(tmp) / "labels.txt"
            truth = {
                n: WNIDS.index(f.decode()) if f.decode("utf-8", "replace") in WNIDS else 0
                for f, names in tree.items()
                for n in names
            }
            label_file.write_bytes(label_text(data.draw, list(truth), truth))
        result = outcome(
            lambda: list_dataset(
                root, label_file=label_file, on_mismatch=data.draw(st.sampled_from(["error", "intersect"]))
            )
        )
        check_refusal(result)
        if not isinstance(result, HarnessError):
            check_listing(result, Path(tmp), read_labels(label_file) if label_file else None)
            assert all(WNIDS[lbl] == f for lbl, f in zip(result.labels, result.folders, strict=True))


# --------------------------------------------------------------------------------------------
# The coverage recogniser

SURROGATE = st.sampled_from([chr(c) for c in range(0xDC80, 0xDD00)])
ODD_NAMES = st.text(st.one_of(st.characters(), SURROGATE, st.sampled_from(TRICKY)), max_size=24)


@budget(200)
@given(data=st.data())
def test_coverage_of_any_names_and_labels_is_a_coverage_or_a_data_error(data: st.DataObject) -> None:
    """A small validation set (its digests computed here): the full set in any order and
    extension is ``full``; anything else is ``subset`` or ``other``, never a traceback."""
    n = data.draw(st.integers(1, 10))
    val_names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, n + 1)]
    val_labels = data.draw(st.lists(st.integers(0, 999), min_size=n, max_size=n))
    val = ValSet(images=n, classes=1000, labels_sha256=canonical_sha256(val_names, val_labels),
                 wnids_sha256=canonical_sha256(val_names, wnid_labels(val_labels)), source="fuzz")
    full = data.draw(st.booleans())
    if full:
        order = data.draw(st.permutations(range(n)))
        ext = data.draw(st.sampled_from(["", ".JPEG", ".png"]))
        names = [image_stem(val_names[i]) + ext for i in order]
        labels = [val_labels[i] for i in order]
    else:
        names = data.draw(
            st.lists(
                mostly(
                    st.sampled_from(val_names),
                    st.one_of(ODD_NAMES, st.integers(0, 10**9).map(lambda i: f"ILSVRC2012_val_{i:08d}")),
                    3,
                ),
                min_size=data.draw(st.sampled_from([0, 1, 1, 1])),
                max_size=n + 2,
            )
        )
        labels = data.draw(
            st.lists(st.integers(-3, 1003), min_size=len(names), max_size=len(names) + data.draw(st.integers(0, 1)))
        )
    folders = wnid_labels(labels) if full and data.draw(st.booleans()) else ()
    limit = data.draw(st.one_of(st.none(), st.just(len(names)), st.integers(1, 12)))
    result = outcome(lambda: coverage_of(names, labels, folders=folders, limit=limit, val=val, label_source="fuzz"))
    check_refusal(result)
    if isinstance(result, HarnessError):
        return
    assert result.kind in ("full", "subset", "other") and result.images == len(names)
    # Drawn as "not full", it may still be the whole set with the canonical labels.
    same = sorted((image_stem(nm), lbl) for nm, lbl in zip(names, labels, strict=False)) == sorted(
        (image_stem(nm), lbl) for nm, lbl in zip(val_names, val_labels, strict=True)) and len(labels) == len(names)
    assert result.full == (full or same)
    one_clean_line(result.describe())
    json.dumps(result.as_record())
    assert isinstance(result.not_applicable, str)


@budget(100)
@given(content=st.one_of(st.binary(max_size=200), st.lists(st.tuples(ODD_NAMES, LABEL_TEXT), max_size=6).map(
    lambda pairs: "".join(f"{n} {lbl}\n" for n, lbl in pairs).encode("utf-8", "surrogatepass"))))
def test_label_file_recognition_answers_any_file_with_a_boolean(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_label.txt"
        path.write_bytes(content)
        assert outcome(lambda: label_file_is_canonical(path)) is False


VAL_FIELDS = ["images", "classes", "labels_sha256", "wnids_sha256", "source", "images_per_class", "source_file_sha256"]


@budget(100)
@given(doc=st.one_of(
    st.fixed_dictionaries({"val": st.dictionaries(st.one_of(st.sampled_from(VAL_FIELDS), keys), values, max_size=8)}),
    st.dictionaries(keys, values, max_size=3)))
@example(doc={"val": {"images": 50000, "classes": 1000, "labels_sha256": "a" * 64, "wnids_sha256": "b" * 64,
                      "source": "x"}})
def test_the_val_set_fixture_loader_answers_any_toml_with_a_val_set_or_a_spec_error(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imagenet_val.toml"
        path.write_text(toml_document(doc), encoding="utf-8")
        result = outcome(lambda: load_val_set.__wrapped__(path))  # not memoized: a new file each time
    if isinstance(result, HarnessError):
        assert isinstance(result, SpecError) and str(path) in str(result)
    else:
        assert isinstance(result, ValSet) and result.images >= 1 and len(result.labels_sha256) == 64


# --------------------------------------------------------------------------------------------
# Baseline CSV files and ais_bench summaries

MODELS = ("resnet50", "resnest50")
NUMBERS = ["1", "16", "4096", "1000000", "1000001", "0", "-3", "1_0", "\u0661\u0666", "nan", "inf", "-inf", "1e999",
           "1e-999", "1.5", ".5", "5.", "1e3", "+5", " 5", "9" * 5000, "0x10", "1,5", "\uff11", "1e+2", "123.456e-2"]
CELLS = st.one_of(st.sampled_from([*NUMBERS, *MODELS, *UNITS, *CLOCKS, *SCENARIOS, "", " ", "resnet9", '"', "\n"]),
                  st.text(st.sampled_from(TRICKY + "ab,\"\0"), max_size=6))


VALID_CELLS = {
    "model": st.sampled_from(MODELS), "batch_size": st.integers(1, 4096).map(str),
    "images_per_s": st.floats(1e-3, 1e7).map(repr), "unit": st.sampled_from(UNITS), "clock": st.sampled_from(CLOCKS),
    "source": st.text(max_size=5), "note": st.text(max_size=5), "scenario": st.sampled_from(SCENARIOS),
}


@st.composite
def csv_texts(draw: Callable[..., Any]) -> str:
    header = list(draw(mostly(st.just(COLUMNS + OPTIONAL_COLUMNS), st.permutations(COLUMNS + OPTIONAL_COLUMNS), 3)))
    if draw(mostly(st.just(False), st.just(True), 4)):
        header = header[: draw(st.integers(0, len(header)))]
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(mostly(VALID_CELLS.get(column, CELLS), CELLS, 12)) for column in header]
        rows.append(draw(mostly(st.just(row), st.just(row[:-1] + draw(st.lists(CELLS, max_size=2))), 10)))
    out = io.StringIO()
    if draw(st.booleans()):
        csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))).writerows([header, *rows])
    else:
        out.write("\n".join(",".join(row) for row in [header, *rows]))
    return ("\ufeff" if draw(st.booleans()) else "") + out.getvalue()


def check_figures(figures: Any) -> None:
    for f in figures:
        assert isinstance(f.batch_size, int) and 1 <= f.batch_size <= MAX_BATCH
        assert math.isfinite(f.images_per_s) and f.images_per_s > 0
        assert f.unit in UNITS and f.clock in CLOCKS and f.scenario in SCENARIOS


@budget(200)
@given(text=st.one_of(csv_texts(), st.text(max_size=200)))
@example(text="model,batch_size,images_per_s,unit,clock,source,note\nresnet50,1_6,1_000,per_chip,wall,x,\n")
@example(text="model,batch_size,images_per_s,unit,clock,source,note\n"
              "resnet50,1,\"" + "9" * 200000 + "\",per_chip,wall,x,\n")
def test_parse_csv_answers_any_text_with_figures_or_a_baseline_error(text: str) -> None:
    """Any CSV text: valid figures (ASCII-decimal batch and rate, finite, known names) that
    survive a save and a reload, or a BaselineError naming the file."""
    result = outcome(lambda: parse_csv(text, "T4", "lab.csv", MODELS))
    if isinstance(result, HarnessError):
        assert isinstance(result, BaselineError) and "lab.csv" in str(result)
        return
    check_figures(result)
    again = parse_csv(_render(result).decode(), "T4", "lab.csv", MODELS)
    assert [(f.model, f.batch_size, f.unit, f.clock, f.scenario, f.note) for f in again] == \
           [(f.model, f.batch_size, f.unit, f.clock, f.scenario, f.note) for f in result]
    assert all(math.isclose(a.images_per_s, b.images_per_s, rel_tol=1e-9) for a, b in zip(again, result, strict=True))


NUMBER_LIKE = mostly(
    st.floats(1e-3, 1e6),
    st.one_of(st.floats(), st.integers(), st.sampled_from([10**400, True, None, [1], {"a": 1}, *NUMBERS])),
    3,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
CONSISTENT = st.tuples(st.floats(1e-2, 1e3), st.sampled_from([1, 2, 8, 16])).map(
    lambda mb: {"throughput": 1000.0 * mb[1] / mb[0], "NPU_compute_time": {"mean": mb[0]}})
SUMMARIES = mostly(
    st.one_of(
        CONSISTENT,
        st.fixed_dictionaries(
            {"throughput": NUMBER_LIKE},
            optional={"NPU_compute_time": mostly(st.fixed_dictionaries({}, optional={"mean": NUMBER_LIKE}), JSON)},
        ),
    ),
    JSON,
    5,
).map(lambda d: json.dumps(d).encode())
SUMMARY_BYTES = mostly(
    SUMMARIES,
    st.sampled_from([b"", b"\xff{", b"[" * 100000 + b"]" * 100000, b'{"throughput": ' + b"9" * 5000 + b"}"]),
    8,
)
BS_DIRS = [
    "bs16",
    "bs_8",
    "bs0",
    "BS4",
    "bs\u0661\u0666",
    "bs" + "9" * 30,
    "x",
    "bs4-run",
    "resnet50_bs2",
    "bs\uff11",
    "bs1",
    "bs2",
    "bs8",
]


@budget(150)
@given(content=SUMMARY_BYTES, folder=st.sampled_from(BS_DIRS), batch_size=st.one_of(st.none(), st.integers(1, 64)))
@example(content=b'{"throughput": 100.0, "NPU_compute_time": {"mean": 1e308}}', folder="x", batch_size=None)
@example(content=b'{"throughput": 1e308, "NPU_compute_time": {"mean": 1e308}}', folder="x", batch_size=None)
@example(content=b'{"throughput": 3.4124806396335596e+16, "NPU_compute_time": {"mean": 42.0}}', folder="x",
         batch_size=None)
def test_parse_ais_bench_summary_answers_any_file_with_a_figure_or_a_baseline_error(
    content: bytes, folder: str, batch_size: int | None
) -> None:
    """Any bytes or JSON: huge or NaN numbers, booleans, a 5000-digit integer (int() refuses
    it with a ValueError), 100000-deep nesting (RecursionError), Unicode digits in bs<N>."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / folder / "r_summary.json"
        path.parent.mkdir()
        path.write_bytes(content)
        result = outcome(lambda: parse_ais_bench_summary(path, "T4", "resnet50", batch_size))
    if isinstance(result, HarnessError):
        assert isinstance(result, BaselineError) and str(path) in str(result)
    else:
        check_figures([result])


MEASUREMENT_NAMES = st.one_of(
    st.sampled_from([b"a_summary.json", b"b_summary.json", b"sumary.json", b"x.csv", b"c.json"]),
    FILE_NAMES.map(lambda n: n + b"_summary.json").filter(_file_name),
)


@budget(80)
@given(files=st.lists(st.tuples(mostly(st.sampled_from([b"resnet50", b"resnest50"]),
                                       st.sampled_from([b"resnet9", b"resnet50_x", b"\xff"]), 4),
                                st.sampled_from([d.encode() for d in BS_DIRS]), MEASUREMENT_NAMES, SUMMARY_BYTES),
                      min_size=1, max_size=4),
       csv_file=mostly(st.none(), csv_texts(), 4))
def test_read_measurements_answers_any_folder_with_figures_or_a_usage_error(
    files: list[tuple[bytes, bytes, bytes, bytes]], csv_file: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "m"
        root.mkdir()
        for model, bs, name, content in files:
            make(Path(os.fsdecode(os.path.join(os.fsencode(root), model, bs))), name, content)
        target = root
        if csv_file is not None:
            target = root / "lab.csv"
            target.write_text(csv_file, encoding="utf-8")
        result = outcome(lambda: read_measurements(target, "T4", MODELS))
    if isinstance(result, HarnessError):
        assert isinstance(result, UsageError), repr(result)
    else:
        check_figures(result)
        assert all(f.model in MODELS for f in result)


# --------------------------------------------------------------------------------------------
# The registry loaders, fed TOML documents shaped like each file

MODEL_FIELDS = ["arch", "weights", "preprocess", "preprocess_variants", "accuracy", "published", "batch_sizes",
                "source", "name", "kwargs", "num_classes", "same_as", "resize", "crop", "mean", "std", "top1", "top5"]
CHIP_FIELDS = ["backend", "aliases", "devices_per_card", "precision", "description", "backend_options", "rules"]
POLICY_SECTIONS = ["accuracy", "conversion", "perf", "history", "localize", "reference"]
NAMES = st.one_of(
    st.sampled_from(["resnet50", "cpu", "a.b", "x_1"]), st.text(st.sampled_from(TRICKY + "az"), max_size=6)
)


def table(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(fields), keys), values, max_size=6)


SHAPED = {
    "models": st.fixed_dictionaries({"models": st.dictionaries(NAMES, table(MODEL_FIELDS), max_size=2)}),
    "chips": st.fixed_dictionaries({"chips": st.dictionaries(NAMES, table(CHIP_FIELDS), max_size=2)}),
    "policy": st.dictionaries(
        st.one_of(st.sampled_from(POLICY_SECTIONS), keys),
        st.one_of(
            table(
                [
                    "tolerance_points",
                    "min_ratio",
                    "rtol",
                    "warmup_runs",
                    "min_seconds",
                    "max_seconds",
                    "agreement_min_top1",
                    "min_cosine",
                ]
            ),
            values,
        ),
        max_size=4,
    ),
}


@pytest.mark.parametrize("kind", sorted(SHAPED))
@budget(100)
@given(data=st.data())
def test_registry_loaders_answer_shaped_toml_with_a_result_or_a_spec_error(kind: str, data: st.DataObject) -> None:
    """Valid TOML shaped like the file (its tables, its field names, any values) or any text:
    a usable registry, or a SpecError naming the file."""
    if data.draw(st.integers(0, 4)):
        text = toml_document(data.draw(SHAPED[kind]))
    else:
        text = data.draw(st.text(max_size=200))
    result = load(kind, text.encode("utf-8"))
    assert not isinstance(result, HarnessError) or isinstance(result, SpecError)
    check_usable(kind, result)


# --------------------------------------------------------------------------------------------
# The naming rules of an ais_bench predictions folder

CLASSES = 3
PRED_STEMS = mostly(st.integers(1, 30).map(lambda i: f"ILSVRC2012_val_{i:08d}".encode()),
                    st.one_of(st.sampled_from([b"a", b"a_0", b"x_y", b".hidden"]), HOSTILE_STEMS), 4)
PRED_K = mostly(
    st.sampled_from([b"_0", b"_1"]), st.sampled_from([b"_00", "_\u0660".encode(), b"_12", b"", b"_-1", b"_0x"]), 5
)
PRED_EXT = mostly(
    st.sampled_from([b".txt", b".npy", b".bin"]), st.sampled_from([b".TXT", b".json", b".log", b"", b".npz"]), 5
)
PRED_FILES = mostly(
    st.builds(lambda s, k, e: s + k + e, PRED_STEMS, PRED_K, PRED_EXT),
    st.sampled_from([b"x_summary.json", b"sumary.json", b"result.json", b"run.log"]), 6,
).filter(_file_name)
SUBFOLDERS = mostly(st.sampled_from([b"device0", b"device1", b"device0_0", b"device1_1", b"2024_01_01-00_00_00"]),
                    st.sampled_from(["device\u0661".encode(), b"devicex", b"\xffdir", b"device0\n"]), 4)
LOGITS = np.arange(CLASSES, dtype=np.float32)


def prediction_bytes(name: bytes) -> bytes:
    """Valid contents for the suffix (the value parsing is not what this fuzzes)."""
    if name.endswith(b".txt"):
        return " ".join(str(v) for v in LOGITS).encode()
    if name.endswith(b".npy"):
        buf = io.BytesIO()
        np.save(buf, LOGITS, allow_pickle=False)
        return buf.getvalue()
    if name.endswith(b".bin"):
        return LOGITS.astype("<f4").tobytes()
    return b"{}"


@budget(120)
@given(layout=st.lists(st.tuples(mostly(st.just([]), st.lists(SUBFOLDERS, max_size=2), 3),
                                 st.lists(PRED_FILES, max_size=4, unique=True)),
                       min_size=1, max_size=3),
       loop=mostly(st.just(False), st.just(True), 8))
def test_an_ais_bench_folder_of_any_file_names_reads_or_is_refused(
    layout: list[tuple[list[bytes], list[bytes]]], loop: bool
) -> None:
    """Any file names (not UTF-8, Unicode digits as the output index, wrong suffixes, device
    and timestamp folders at any depth, a symlink loop): the stems' logits or a usage error."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.fsencode(tmp), b"out")
        os.makedirs(root)
        for folders, names in layout:
            where = os.path.join(root, *folders)
            os.makedirs(where, exist_ok=True)
            for name in names:
                if not os.path.isdir(os.path.join(where, name)):
                    with open(os.path.join(where, name), "wb") as fh:
                        fh.write(prediction_bytes(name))
        if loop:
            os.symlink(b"loop_0.txt", os.path.join(root, b"loop_0.txt"))
        result = outcome(lambda: read_ais_bench_folder(Path(os.fsdecode(root)), CLASSES))
    if isinstance(result, HarnessError):
        assert isinstance(result, UsageError), repr(result)
        return
    assert isinstance(result, AisBenchOutput) and result.logits
    assert sum(result.formats.values()) == len(result.logits)
    assert all(isinstance(s, str) and v.shape == (CLASSES,) for s, v in result.logits.items())
