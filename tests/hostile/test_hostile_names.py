"""Issue 25, names and text from data: a name read from a file (a results file merged from another
machine, a reference file, an ONNX graph, a test id) never makes a path outside its folder, never
breaks a results line, a table row or the terminal, and never crashes the report
(harness.safe_names: ``safe_component``, ``inside``, ``printable``).

Real runs where they are cheap (``python -m harness report`` and ``python -m harness reference``
in a subprocess on hand-written hostile files, the tree around them snapshotted before and after),
and Hypothesis properties of the two functions on any text, lone surrogates and control
characters included."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from suite_runner import ROOT

from harness.errors import HarnessError, UsageError
from harness.records.results import load_results
from harness.records.schema import record_from_json
from harness.report.build import terminal_table, write_report
from harness.report.render import Bullets, Heading, Image, Para, Table, render_html, render_markdown
from harness.safe_names import (
    EMPTY,
    HASH_DIGITS,
    MAX_COMPONENT,
    UnsafePath,
    child,
    inside,
    printable,
    printable_errors,
    safe_component,
)

pytest_plugins = ["pytester"]

UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"}
WINDOWS_RESERVED = set('<>:"/\\|?*')
TIME = "2026-11-30T12:00:00+0000"
BOUNDED = settings(max_examples=200, deadline=None)

# any text: every category, lone surrogates, controls and separators made frequent
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp"]),
                     st.sampled_from(list("./\\\0:%~ \n\u2028\u0085\x1b")))
ANY_TEXT = st.one_of(st.text(ANY_CHAR, max_size=300),
                     st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")))


def unsafe_chars(text: str, keep: str = "") -> list[str]:
    return [c for c in text if c not in keep and unicodedata.category(c) in UNSAFE_CATEGORIES]


# --------------------------------------------------------------------------------------------
# safe_component and printable, on any text


NORMAL_NAMES = ["efficientnet_lite0", "resnext50_32x4d", "test_accuracy[efficientnet_lite0-cpu-bs8]",
                "mobilenetv3_large_100.ra_in1k", "Ascend310P3", "a-b_c.d+e=f@g,h(i)"]


@pytest.mark.parametrize("name", NORMAL_NAMES)
def test_ordinary_names_are_kept_as_they_are(name: str) -> None:
    assert safe_component(name) == name
    assert printable(name) == name


@pytest.mark.parametrize(("name", "component"), [
    ("tv:resnet50.IMAGENET1K_V2", "tv%3Aresnet50.IMAGENET1K_V2"),
    ("timm:resnest50d.in1k@288", "timm%3Aresnest50d.in1k@288"),
    ("../../evil", "%2E.%2F..%2Fevil"),
    ("/abs/evil", "%2Fabs%2Fevil"),
    ("..", "%2E%2E"), (".", "%2E"), (".hidden", "%2Ehidden"), ("trailing.", "trailing%2E"), ("", EMPTY),
    ("new\nline", "new%0Aline"), ("sep\u2028x", "sep%E2%80%A8x"), ("esc\x1b[31m", "esc%1B[31m"),
    ("bad\udcffname", "bad%ED%B3%BFname"), ("nul\0byte", "nul%00byte"), ("a\\b", "a%5Cb"), ("50%", "50%25"),
    ("CON", "%43ON"), ("nul.png", "%6Eul.png"), ("COM1", "%43OM1"), ("console", "console"),
])
def test_hostile_names_become_one_escaped_component(name: str, component: str) -> None:
    assert safe_component(name) == component


def test_a_long_name_keeps_its_start_and_a_hash() -> None:
    long_a, long_b = "L" * 300, "L" * 299 + "M"
    a, b = safe_component(long_a), safe_component(long_b)
    assert a != b and len(a) <= MAX_COMPONENT and a.startswith("L" * 80)
    assert a.endswith("~" + hashlib.sha256(long_a.encode()).hexdigest()[:HASH_DIGITS])
    escaped = safe_component("\x1b" * 200)  # never cut inside a %XX escape
    assert escaped.split("~")[0].endswith("%1B") and len(escaped) <= MAX_COMPONENT


def _decoded(component: str) -> str | None:
    """The name a short-form component was made from (None for the long and empty forms)."""
    if component == EMPTY or "~" in component:
        return None
    return unquote_to_bytes(component).decode("utf-8", "surrogatepass")


@BOUNDED
@given(ANY_TEXT)
def test_safe_component_of_any_text_is_one_safe_component(text: str) -> None:
    out = safe_component(text)
    assert out and out not in (".", "..") and not out.startswith(".") and not out.endswith(".")
    assert out.isascii() and out.isprintable() and not WINDOWS_RESERVED & set(out) and "\0" not in out
    assert len(out) <= MAX_COMPONENT
    assert Path(out).name == out and len(Path(out).parts) == 1 and os.path.basename(out) == out
    assert out.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                                             *(f"LPT{i}" for i in range(10))}
    decoded = _decoded(out)
    assert decoded is None or decoded == text  # the short form is the name, escaped: one-to-one
    assert inside("/base", Path("/base") / out) == Path("/base") / out


@BOUNDED
@given(st.lists(ANY_TEXT, min_size=2, max_size=8, unique=True))
def test_different_names_never_share_a_component(names: list[str]) -> None:
    assert len({safe_component(n) for n in names}) == len(names)


@BOUNDED
@given(ANY_TEXT, st.sampled_from(["a:b", "a%3Ab", "x" * 200, ".", "..", "CON", ""]))
def test_a_name_and_a_lookalike_never_share_a_component(text: str, other: str) -> None:
    assume(text != other)
    assert safe_component(text) != safe_component(other)


@BOUNDED
@given(ANY_TEXT)
def test_printable_of_any_text_has_no_control_character(text: str) -> None:
    out = printable(text)
    assert not unsafe_chars(out) and "\n" not in out
    out.encode("utf-8")  # strict: no lone surrogate left
    assert printable(out) == out  # once is enough
    kept = printable(text, newlines=True)
    assert not unsafe_chars(kept, keep="\n") and kept.count("\n") == text.count("\n")


@BOUNDED
@given(st.text(st.characters(exclude_categories=["Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"])))
def test_printable_leaves_ordinary_text_alone(text: str) -> None:
    assert printable(text) == text


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b[2J", "\\x1b[2J"), ("\x1b]0;title\x07", "\\x1b]0;title\\x07"), ("a\nb", "a\\nb"), ("a\rb\tc", "a\\rb\\tc"),
    ("\u2028\u2029\x85", "\\u2028\\u2029\\x85"), ("bad\udcffname", "bad\\udcffname"),
    ("\u202eexe.txt", "\\u202eexe.txt"),
    ("C:\\Users\\me", "C:\\Users\\me"), ("模型 ünïcode", "模型 ünïcode"),
])
def test_printable_shows_what_it_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_inside_refuses_what_steps_out(tmp_path: Path) -> None:
    for bad in (tmp_path / ".." / "x", Path("/etc/passwd"), tmp_path, tmp_path / "a" / ".." / ".." / "b"):
        with pytest.raises(UnsafePath) as info:
            inside(tmp_path, bad)
        assert isinstance(info.value, HarnessError)
    assert inside(tmp_path, tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert child(tmp_path, "../../x", ".png") == tmp_path / "%2E.%2F..%2Fx.png"


def test_localize_dir_is_one_safe_folder_per_test(pytester: pytest.Pytester) -> None:
    from harness.pytest.plugin import localize_dir
    from harness.pytest.state import session_state

    config = pytester.parseconfigure()
    base = session_state(config).localize_dir
    assert localize_dir(config, "test_accuracy[efficientnet_lite0-cpu-bs8]") == \
        base / "test_accuracy-efficientnet_lite0-cpu-bs8"  # docs/localize.md's name
    assert localize_dir(config, "test_accuracy[tv:resnet50-cpu-bs8]") == base / "test_accuracy-tv%3Aresnet50-cpu-bs8"
    names = ["test_accuracy[../../../etc-cpu-bs8]", "test_accuracy[/tmp/x-cpu]", "test_a[a:b]", "test_a[a-b]",
             "test_a[a\nb]", "test_a[]", "test_a", "..", "", "../x[y]", "test_a[" + "x" * 400 + "]", "t" * 300 + "[x]"]
    dirs = [localize_dir(config, n) for n in names]
    assert all(d.parent == base and len(d.name) <= 80 + 1 + MAX_COMPONENT for d in dirs)
    assert len(set(dirs)) == len(names)


# --------------------------------------------------------------------------------------------
# The report of a hostile results file: python -m harness report, as the nightly merge runs it


HOSTILE = ["../../evil", "../../../../../../evil-up", "new\nline", "sep\u2028x", "nel\x85x", "esc\x1b[31mred",
           "title\x1b]0;pwned\x07", "bad\udcffname", "L" * 300, "pipe|cell\\|x", "<script>alert(1)</script>",
           "$\\frac{1}{0}$", "# heading", "..", "CON", "nul\0byte"]


def perf_record(model: str, ips: float = 100.0, chip: str = "cpu") -> dict[str, Any]:
    """A perf record as acceptance/test_perf.py writes it (tests/test_report.py's)."""
    return {"run_id": "r1", "test": f"acceptance/test_perf.py::test_throughput[{model}-{chip}]", "outcome": "passed",
            "phase": "call", "time": TIME, "host": "vm", "kind": "perf", "model": model, "chip": chip,
            "backend": "openvino", "precision": "fp32", "input_dtype": "float32", "source": "measured",
            "scenario": "single-stream", "images_per_s_bs1": ips, "scenario_bs1": "single-stream", "clock_bs1": "wall",
            "best_batch": 1, "best_images_per_s": ips, "best_images_per_s_per_card": ips, "unit": "per_chip",
            "clock": "wall", "devices_per_card": 1}


def localized_record(model: str, summary: Path | str, chip: str = "cpu") -> dict[str, Any]:
    """A failed accuracy record whose localisation names ``summary`` (its summary.json)."""
    return {"run_id": "r1", "test": f"acceptance/test_accuracy.py::test_accuracy[{model}-{chip}-bs8]",
            "outcome": "failed", "phase": "call", "time": TIME, "host": "vm", "kind": "accuracy", "model": model,
            "chip": chip, "backend": "onnxruntime", "precision": "fp32", "input_dtype": "float32", "batch_size": 8,
            "source": "measured", "top1": 10.0, "top5": 20.0, "verdict": "fail: paired_top1",
            "localization": "first divergent node: \x1b[2Jconv\n1 (Conv)", "first_divergent_node": "\x1b[2Jconv\n1",
            "localization_method": "expose", "localization_summary": str(summary),
            "localization_layers": str(Path(summary).parent / "layers.csv\x1b[0m")}


def run_record() -> dict[str, Any]:
    return {"kind": "run", "run_id": "r1", "started": TIME, "finished": TIME, "exit_status": 1, "args": ["\x1b[2J"],
            "chips": ["cpu"], "outcomes": {"passed": 1}, "environment": {"host": "vm\x1b]0;x\x07", "cpu": "c\u2028d"}}


def hostile_summary(path: Path) -> Path:
    """A summary.json from another machine: names with escape codes, pipes and newlines, malformed entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "first_divergent_node": "\x1b[2Jconv\n1", "first_divergent_index": 2, "thresholds": {"min_cosine": 0.99},
        "worst_nodes": [
            {"node": "\x1b[2Jconv\n1", "op_type": "Conv|x", "output": "o\u2028ut", "shape": [1, "2\x1b"],
             "cosine_similarity": 0.5, "max_abs_diff": "inf\x1b", "rmse": 10 ** 400, "over_threshold": True,
             "reasons": ["cosine\n< 0.99", 7]},
            "not a node", {"node": None, "shape": 5, "reasons": "no list"}],
        "cosine_by_depth": [[0, 1.0], [1, 0.999], [2, 0.5], ["x", 1], [10 ** 40, 0.1], "bad"],
    }))
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """The lines as the results writer writes them: json.dumps(record, default=str), ASCII (a lone
    surrogate as its \\udcXX escape)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((json.dumps(r, default=str) + "\n").encode() for r in records))
    return path


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def harness_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict: an unescaped surrogate would be an error
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", errors="strict", timeout=300, env=env)


def assert_no_control_characters(text: str) -> None:
    bad = unsafe_chars(text, keep="\n")
    assert not bad, f"control characters printed: {bad[:10]}"


def markdown_tables_are_whole(markdown: str) -> None:
    """Every table row has as many cells as its header (a | or a newline from data splits none)."""
    width = None
    for line in markdown.split("\n"):
        if not line.startswith("|"):
            width = None
            continue
        assert line.endswith("|"), line
        cells = line.count(" | ") + 1
        width = cells if width is None else width
        assert cells == width or line.startswith("|---"), line


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """python -m harness report over a results file of hostile names, deep in a fresh folder."""
    base = tmp_path_factory.mktemp("hostile")
    deep = base / "a" / "b" / "c"
    absolute = base / "abs-evil"
    fifo_dir = base / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "summary.json")  # a results file naming a FIFO must not hang the report
    records = [perf_record(name) for name in [*HOSTILE, str(absolute), str(absolute) + "/x"]]
    records += [localized_record("../../loc-evil", hostile_summary(base / "loc" / "summary.json")),
                localized_record("fifo\x1b[5m", fifo_dir / "summary.json"),
                localized_record("device", "/dev/zero"),
                run_record()]
    results = write_jsonl(deep / "results.jsonl", records)
    before = snapshot(base.parent)
    proc = harness_cli("report", str(results), "--out", str(deep / "report"))
    return {"base": base, "deep": deep, "out": deep / "report", "absolute": absolute, "proc": proc,
            "new": snapshot(base.parent) - before, "results": results}


def test_the_report_of_hostile_names_is_written_and_only_inside_its_folder(hostile_report: dict[str, Any]) -> None:
    proc, out = hostile_report["proc"], hostile_report["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    outside = [p for p in hostile_report["new"] if p != out and out not in p.parents]
    assert not outside, f"written outside the report folder: {outside}"
    assert not any(Path(str(hostile_report["absolute"]) + s).exists() for s in ("", ".png", "/x.png"))
    plots = sorted((out / "plots").iterdir())
    # one throughput plot per model, and the localisation plot of ../../loc-evil; all in plots/
    assert len([p for p in plots if "localization" not in p.name]) == len(HOSTILE) + 2
    assert [p.name for p in plots if "localization" in p.name] == ["%2E.%2F..%2Floc-evil-localization-1.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)


def test_the_hostile_names_are_shown_escaped_in_markdown_and_html(hostile_report: dict[str, Any]) -> None:
    out = hostile_report["out"]
    md, page = (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")
    assert_no_control_characters(md)
    assert_no_control_characters(page)
    for shown in ["new\\nline", "sep\\u2028x", "nel\\x85x", "esc\\x1b[31mred", "title\\x1b]0;pwned\\x07",
                  "bad\\udcffname", "nul\\x00byte", "L" * 300, str(hostile_report["absolute"]), "../../evil"]:
        assert shown in md and html.escape(shown) in page, shown
    assert "pipe&#124;cell\\&#124;x" in md and "pipe|cell\\|x" in page
    assert "<script>" not in md and "<script>" not in page and "&lt;script&gt;" in page
    assert "## # heading" in md  # a heading's text, not a second heading
    markdown_tables_are_whole(md)
    assert "](plots/%252E.%252F..%252Fevil.png)" in md  # the image path as a URL: the file's own name
    # the localisation: node names from summary.json escaped, a malformed entry skipped, nothing raised
    assert "\\x1b[2Jconv\\n1" in md and "Conv&#124;x" in md and "o\\u2028ut" in md and "1x2\\x1b" in md
    assert "cosine\\n&lt; 0.99, 7" in md
    assert "fifo/summary.json cannot be read (ValueError: not a regular file)" in md
    assert "/dev/zero is not a localisation summary.json" in md


def test_the_terminal_output_of_the_report_is_escaped(hostile_report: dict[str, Any]) -> None:
    stdout = hostile_report["proc"].stdout
    assert_no_control_characters(stdout)
    assert "esc\\x1b[31mred" in stdout and "new\\nline" in stdout and "bad\\udcffname" in stdout
    table = stdout.split("\n\n", 1)[0].splitlines()
    assert len(table) == 2 + len(HOSTILE) + 2 + 3  # header, rule, one line per test: no name breaks a line
    assert max(len(line) for line in table) < 200  # a 300-character name is cut on the terminal


def test_a_plots_symlink_planted_in_a_results_folder_is_refused_not_followed(tmp_path: Path) -> None:
    """A results folder from elsewhere is the report's folder by default; a ``plots`` symlink in it
    leading out is refused with one error line, and nothing is written where it leads."""
    pytest.importorskip("matplotlib")
    outside, artifacts = tmp_path / "outside", tmp_path / "artifacts"
    outside.mkdir()
    write_jsonl(artifacts / "results.jsonl", [perf_record("m"), run_record()])
    (artifacts / "plots").symlink_to(outside)
    proc = harness_cli("report", str(artifacts))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "refusing to write" in proc.stderr
    assert list(outside.iterdir()) == []
    with pytest.raises(UnsafePath):
        inside(artifacts, artifacts / "plots" / "m.png")


def test_non_utf8_names_round_trip_through_the_results_file(tmp_path: Path) -> None:
    """A record holding a surrogate-escaped file name (os.fsdecode of a non-UTF-8 path) is written
    as the results writer writes it, read back equal, and reported without a crash."""
    name = os.fsdecode(b"model-\xff\xfe")
    dataset = os.fsdecode(b"/data/imag\xe9net/val")
    record = record_from_json({**perf_record(name), "schema_version": 1, "extra_field": dataset})
    path = write_jsonl(tmp_path / "results.jsonl", [record.to_json(), run_record()])
    assert path.read_bytes().isascii()  # the lone surrogates are \udcXX escapes
    results = load_results(path)
    assert not results.warnings and results.models() == [name]
    [[back]] = [run.records for run in results.runs]
    assert back == record and back.extra["extra_field"] == dataset
    paths = write_report(results, tmp_path / "report")
    assert "model-\\udcff\\udcfe" in paths.markdown.read_text(encoding="utf-8")
    assert "model-\\udcff\\udcfe" in terminal_table(results)
    [plot] = paths.plots.values()
    assert plot.parent == tmp_path / "report" / "plots"
    # a line of raw non-UTF-8 bytes is a warning on that line, never a crash
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(json.dumps(perf_record("ok")).encode() + b"\n" + b'{"kind": "perf", "model": "\xff"}\n')
    assert harness_cli("report", str(raw), "--out", str(tmp_path / "raw-report")).returncode == 0


def test_markdown_cells_and_blocks_cannot_be_broken_by_their_text() -> None:
    md = render_markdown([
        Heading(2, "a\nb"), Para("# not a heading\n- nor a list"), Para("1. nor a numbered one"),
        Bullets(("- dash", "> quote")),
        Table(("x", "y"), (("a|b\\|c", "two\nlines"), ("\x1b[31m", "<img src=x onerror=alert(1)>"))),
        Image("plots/a b[1](x).png", "alt ] [x](y) \x1b", b""),
    ])
    assert "## a<br>b" in md and "\\# not a heading<br>- nor a list" in md and "1\\. nor a numbered one" in md
    assert "- \\- dash" in md and "- \\> quote" in md
    assert "| a&#124;b\\&#124;c | two<br>lines |" in md and "| \\x1b[31m | &lt;img src=x onerror=alert(1)> |" in md
    assert "![alt \\] \\[x\\](y) \\\\x1b](plots/a%20b%5B1%5D%28x%29.png)" in md
    page = render_html([Table(("x",), (("a\x1b\nb\u2028",),)), Para("<b>\udcff")], "t\x07")
    assert "<td>a\\x1b<br>b\\u2028</td>" in page and "&lt;b&gt;\\udcff" in page and "<title>t\\x07</title>" in page
    page.encode("utf-8")


def test_printable_errors_escape_a_quoted_name() -> None:
    with pytest.raises(UsageError) as info, printable_errors():
        raise UsageError("no reference of \x1b[2Jmodel\nsecond line")
    assert str(info.value) == "no reference of \\x1b[2Jmodel\\nsecond line"
    with pytest.raises(UsageError, match=r"^/x/\\udcff: No such file"), printable_errors():
        raise FileNotFoundError(2, "No such file or directory", "/x/\udcff")
    with pytest.raises(FileNotFoundError), printable_errors():  # a clean message passes as it is
        raise FileNotFoundError(2, "No such file or directory", "/x/y")


# --------------------------------------------------------------------------------------------
# python -m harness reference: a reference file whose model and origin hold escape codes


def reference_file(path: Path, model: str, host: str, corrupt: bool = False) -> Path:
    """A reference file as 'reference export' writes it (two images, three classes)."""
    from harness.cache import content_key
    from harness.run.reference import FILE_FORMAT, FILE_VERSION, INDEX, KEY_FORMAT

    inputs = {"format": KEY_FORMAT, "arch": {"source": "timm", "name": "x"}, "num_classes": 3,
              "weights": {"kind": "random", "seed": 0}, "images": {"shape": [2, 3, 4, 4], "sha256": "0" * 64},
              "normalize": {"mean": [0.5], "std": [0.5]}}
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    blob = buf.getvalue()
    key = content_key(inputs)
    item = {"key": key, "inputs": inputs, "model": model, "shape": [2, 3], "dtype": "float32", "member": f"{key}.npy",
            "sha256": ("f" * 64) if corrupt else hashlib.sha256(blob).hexdigest(), "torch": "2.0\x1b[2J",
            "computed_host": host, "computed_at": TIME}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(item["member"], blob)
        zf.writestr(INDEX, json.dumps({"format": FILE_FORMAT, "version": FILE_VERSION, "exported_host": host,
                                       "entries": [item]}))
    return path


def test_the_reference_command_prints_a_files_names_escaped(tmp_path: Path) -> None:
    model, host = "evil\x1b[2J\x1b]0;title\x07\nmodel\udcff", "host\u2028\x85"
    ref = reference_file(tmp_path / "ref.zip", model, host)
    cache = tmp_path / "cache"
    imported = harness_cli("reference", "import", str(ref), "--cache-dir", str(cache))
    assert imported.returncode == 0, imported.stderr
    assert_no_control_characters(imported.stdout)
    assert "imported: evil\\x1b[2J\\x1b]0;title\\x07\\nmodel\\udcff (2 images" in imported.stdout
    assert "torch 2.0\\x1b[2J on host\\u2028\\x85" in imported.stdout
    exported = harness_cli(
        "reference", "export", "--all", "--out", str(tmp_path / "out.zip"), "--cache-dir", str(cache)
    )
    assert exported.returncode == 0, exported.stderr
    assert_no_control_characters(exported.stdout)
    assert "exported evil\\x1b[2J\\x1b]0;title\\x07\\nmodel\\udcff (2 images" in exported.stdout
    bad = harness_cli("reference", "import", str(reference_file(tmp_path / "bad.zip", model, host, corrupt=True)),
                      "--cache-dir", str(tmp_path / "fresh"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "checksum mismatch" in bad.stderr
    assert_no_control_characters(bad.stderr)
    assert "evil\\x1b[2J\\x1b]0;title\\x07\\nmodel\\udcff" in bad.stderr  # escaped (by repr or printable)


# --------------------------------------------------------------------------------------------
# the localisation's own files: node names from an ONNX graph


def test_localisation_files_hold_hostile_node_names(tmp_path: Path) -> None:
    from harness.localize.compare import Metrics
    from harness.localize.summary import LayerRow, LocalizationSummary
    from harness.localize.write import write

    node = "conv\n1,\"x\"\x1b[2J\udcff\u2028"
    metrics = Metrics(
        cosine=0.5, max_abs_diff=1.0, max_relative_diff=2.0, rmse=0.1, mean_relative_error=0.2, elements=4
    )
    rows = (
        LayerRow(0, node, "Conv", "out|1", (1, 2), metrics, ("cosine",)),
        LayerRow(1, "ok", "Relu", "o", None, None),
    )
    summary = LocalizationSummary(
        reference="r", candidate="c", method="expose", method_reason="", first_divergent_node=node,
        first_divergent_op="Conv", first_divergent_output="out|1", first_divergent_index=0, first_divergent_cosine=0.5,
        first_divergent_reasons=("cosine",), input_cosine=1.0, classification="local", thresholds={"min_cosine": 0.99},
        images=("i\udcff.JPEG",), images_considered=1, top1_disagreements=1, final_cosine=0.5, nodes=2,
        tensors_compared=1, worst_nodes=rows[:1], cosine_by_depth=((0, 0.5),), rows=rows)
    out = tmp_path / "localize" / "test_accuracy[m-cpu-bs8]"
    final = write(summary, out)
    assert sorted(p.name for p in out.iterdir()) == ["layers.csv", "summary.json"]
    assert final.summary_json == str(out / "summary.json")
    data = (out / "summary.json").read_bytes()
    assert data.isascii() and json.loads(data)["first_divergent_node"] == node  # the surrogate round-trips
    with open(out / "layers.csv", encoding="utf-8", newline="") as fh:  # strict UTF-8
        table = list(csv.reader(fh))
    assert len(table) == 3 and table[1][0] == node.replace("\udcff", "\\udcff") and table[2][0] == "ok"
