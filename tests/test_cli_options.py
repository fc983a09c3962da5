"""Options are declared once (harness/options.py) for pytest and ``python -m harness``; each value is
checked as the command line is parsed, a bad one a usage error saying what was expected. Backend,
precision and input-dtype choices flow from the command line into what runs and into the records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from suite_runner import ROOT, run_suite

from harness import options
from harness.specs import load_policy
from tests.conftest import REAL_SUBSET, VAL1300

pytest_plugins = ["pytester"]


def test_unknown_backend_is_a_usage_error_listing_the_known_ones(tmp_path: Path) -> None:
    proc, _ = run_suite(tmp_path, "acceptance", "--backend", "tensorflow", "--collect-only")
    assert proc.returncode == 4
    assert "unknown --backend 'tensorflow'; known backends:" in proc.stderr
    assert "onnxruntime" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "0"], "argument --limit: expected a positive number of images (like 1000), got '0'"),
    (["--limit", "ten"], "argument --limit: expected a positive number of images (like 1000), got 'ten'"),
    (["--limit", "1_000"], "argument --limit: expected a positive number of images (like 1000), got '1_000'"),
    (["--limit", "\u0663"], "argument --limit: expected a positive number of images (like 1000), got '\u0663'"),
    (["--device-ids", "0,\uff11"], "argument --device-ids: expected device numbers like 0,1,2,3"),
    (["--workers", "0"], "argument --workers: expected a positive number of processes"),
    (["--threads", "-2"], "argument --threads: expected a positive number of threads"),
    (["--batch-sizes", "1,x"], "argument --batch-sizes: expected positive batch sizes like 1,16, got '1,x'"),
    (["--batch-sizes", "0"], "argument --batch-sizes: expected positive batch sizes like 1,16, got '0'"),
    (["--device-ids", "0,a"], "argument --device-ids: expected device numbers like 0,1,2,3"),
    (["--device-ids", "1,1"], "argument --device-ids: expected each device once, got '1,1'"),
    (["--opset", "6"], "argument --opset: opset 6 is too old: expected 7 or newer (ATC supports 11)"),
    (["--precision", "int3"], "argument --precision: invalid choice: 'int3'"),
    (["--measurements", "no-such-file.csv"], "argument --measurements: expected a baseline-format CSV or a folder "
                                             "of ais_bench *_summary.json files; 'no-such-file.csv': no such file"),
    (["--predictions", "README.md"], "argument --predictions: expected a folder of predictions (ais_bench output "
                                     "or a ModelZoo result.json); 'README.md': a file, not a directory"),
])
def test_a_bad_value_stops_the_parse_with_what_was_expected(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                          args: list[str], message: str) -> None:
    monkeypatch.chdir(ROOT)  # README.md, relative paths as a user types them
    with pytest.raises(pytest.UsageError) as info:
        pytester.parseconfig(*args)
    assert message in str(info.value) and len(str(info.value).split("error: ")[1].splitlines()[0]) < 200


def test_values_parse_to_their_types(pytester: pytest.Pytester, tmp_path: Path) -> None:
    config = pytester.parseconfig("--limit", "12", "--batch-sizes", "1, 16", "--device-ids", "2,0", "--chip",
                                  "cpu,310P3", "--models", "a,,b", "--measurements", str(tmp_path), "--results", "~/r")
    opt = config.getoption
    assert (opt("--limit"), opt("--batch-sizes"), opt("--device-ids")) == (12, (1, 16), (2, 0))
    assert (opt("--chip"), opt("--models"), opt("--measurements")) == (("cpu", "310P3"), ("a", "b"), tmp_path)
    assert opt("--results") == Path.home() / "r"
    defaults = pytester.parseconfig().getoption
    assert (defaults("--chip"), defaults("--device-ids"), defaults("--opset")) == (("cpu",), (0,), 11)
    assert defaults("--limit") is None
    assert defaults("--results") == Path("reports/results.jsonl") and defaults("localize") is True


def test_a_shared_option_is_the_same_in_pytest_and_in_the_commands(pytester: pytest.Pytester) -> None:
    """--imagenet, --limit, --backend... come from one declaration: the same parser, metavar and choices in
    ``pytest --help`` and in ``python -m harness localize|report|reference``."""
    from harness.__main__ import parser as _parser

    def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
        found = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
        for sub in parser._actions:
            if isinstance(sub, argparse._SubParsersAction):
                for child in sub.choices.values():
                    found.update({k: v for k, v in actions(child).items() if k not in found})
        return found

    in_pytest = actions(pytester.parseconfig()._parser.optparser)
    in_cli = actions(_parser())
    shared = [o for o in (options.IMAGENET, options.IMAGENET_LABELS, options.LIMIT, options.CACHE_DIR, options.BACKEND,
                          options.PRECISION, options.BASELINES_DIR)]
    for option in shared:
        for where in (in_pytest, in_cli):
            action = where[option.flag]
            assert action.type is option.type and action.metavar == option.metavar, option.flag
            assert (tuple(action.choices) if action.choices else None) == option.choices, option.flag
    assert {o.flag for o in options.PYTEST_OPTIONS} <= set(in_pytest)


def test_defaults_are_typed_so_help_still_configures(pytester: pytest.Pytester) -> None:
    """argparse converts a string default only at the end of a parse, which ``--help`` interrupts; pytest
    then configures the plugin with the raw default (``--chip "cpu"`` read as the chips c, p, u)."""
    assert [o.flag for o in options.PYTEST_OPTIONS if o.type is not None and isinstance(o.default, str)] == []
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--limit*N *a deterministic subset*", "*--chip*CHIP*", "*--strict-certification*"])


@pytest.mark.parametrize(("args", "message"), [
    (["localize", "--reference", "r.onnx", "--candidate", "c.onnx", "--model", "m", "--embedded", "--out", "x",
      "--limit", "0"], "error: argument --limit: expected a positive number of images (like 1000), got '0'"),
    (["localize", "--reference", "r.onnx", "--backend", "tensorflow", "--model", "m", "--embedded", "--out", "x"],
     "error: unknown --backend 'tensorflow'; known backends: ascend, onnxruntime, openvino"),
    (["localize", "--reference", "r.onnx", "--backend", "openvino", "--model", "m", "--embedded", "--out", "x",
      "--batch", "0"], "error: argument --batch: expected a positive number of images per run (like 8), got '0'"),
])
def test_the_commands_check_the_same_values(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.__main__ import main

    try:
        code = main(args)  # checks that need the registry: after parsing, one error: line, exit 2
    except SystemExit as exc:  # the parser's own checks
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_openvino_bf16_certifies_real_images_and_records_what_ran(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")
    from harness.backends.openvino import OpenVinoBackend

    capabilities = OpenVinoBackend().capabilities()
    if "BF16" not in capabilities:
        # The run would skip (the backend refuses bf16); test_cpu_features.py checks that it does.
        pytest.skip(f"this CPU has no native bf16: OpenVINO CPU OPTIMIZATION_CAPABILITIES are "
                    f"{', '.join(capabilities)}, no BF16 (x86 needs AVX512_BF16 or AMX)")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300}")
    proc, cases = run_suite(tmp_path, "acceptance", "-m", "accuracy", "--backend", "openvino", "--precision", "bf16",
                            "--models", "efficientnet_lite0", "--imagenet", str(VAL1300), "--limit", str(REAL_SUBSET),
                            "--inconclusive", "allow")
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = cases["test_accuracy[efficientnet_lite0-cpu-bs8]"]
    assert (case["backend"], case["precision"], case["env_backend"]) == ("openvino", "bf16", "openvino")
    assert int(case["images"]) == REAL_SUBSET
    delta = float(case["delta_top1_vs_reference"])
    assert delta == pytest.approx(float(case["top1"]) - float(case["reference_top1"]), abs=1e-3)
    # bf16 moves logits; its agreement is judged from its interval like any other precision's
    # (on a few hundred images a 99% minimum can be inconclusive: allowed here, recorded as such).
    low, high, need = (
        float(case["agreement_top1_low95"]),
        float(case["agreement_top1_high95"]),
        load_policy().accuracy.agreement_min_top1,
    )
    expected = "pass" if low >= need else "fail" if high < need else "inconclusive"
    assert case["gate_top1_agreement"] == expected, (low, high, case["gate_top1_agreement"])


@pytest.mark.slow
def test_uint8_input_agrees_with_torch_on_project_images(tmp_path: Path) -> None:
    proc, cases = run_suite(
        tmp_path, "acceptance", "-m", "agreement", "--input", "uint8", "--models", "efficientnet_lite0"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = cases["test_agreement[efficientnet_lite0-cpu-bs8]"]
    assert case["input_dtype"] == "uint8" and float(case["top1_agreement"]) == 100.0
    assert float(case["max_abs_diff"]) < 1e-3
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert any(r.get("input_dtype") == "uint8" for r in records)
