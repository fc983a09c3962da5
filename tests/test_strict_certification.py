"""--strict-certification (harness/pytest/certification.py): a skipped certification the run asked
for fails with its reason; a case with nothing to certify, and any other test, keeps its skip. An
asked certification's skip reads NOT CERTIFIED first; the run's last line (tally) counts certified,
inconclusive (allowed) and not certified models with one grouped reason per kind, in 200 characters."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.judge.headline import MAX_HEADLINE
from harness.pytest.certification import NEXT_COMMAND, per_model, tally
from harness.records.parts import Configuration, Judgement, PytestFacts
from harness.records.schema import AccuracyRecord, AgreementRecord, ConversionRecord, PerfRatioRecord, PerfRecord

GENERATED = '''
import pytest

@pytest.mark.accuracy
def test_accuracy_without_data():
    pytest.skip("no ImageNet given; pass --imagenet DIR")

@pytest.mark.perf
@pytest.mark.skip(reason="cpu has no throughput rules in fixtures/chips.toml (nothing to compare with)")
def test_ratio_without_rules():
    pass

@pytest.mark.accuracy
@pytest.mark.requires_option("--predictions")
def test_predictions_not_given():
    pytest.skip("no --predictions DIR given")

def test_not_a_certification():
    pytest.skip("no GPU here")
'''


def _outcomes(tmp_path: Path, *extra: str) -> tuple[dict[str, tuple[str, str]], str]:
    (tmp_path / "test_generated.py").write_text(GENERATED)
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--no-report",
            f"--results={tmp_path / 'r.jsonl'}",
            f"--junitxml={junit}",
            "test_generated.py",
            *extra,
        ],
        cwd=tmp_path,
        env={**os.environ, "MZC_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure, skipped = case.find("failure"), case.find("skipped")
        found[case.get("name", "")] = (
            ("failed", failure.get("message", "") + "|" + failure.get("type", "") + "|" + (failure.text or ""))
            if failure is not None
            else ("skipped", skipped.get("message", "") + "|" + skipped.get("type", ""))
            if skipped is not None
            else ("passed", "")
        )
    return found, proc.stdout


def test_without_the_option_every_skip_stays_a_skip(tmp_path: Path) -> None:
    found, _ = _outcomes(tmp_path)
    assert {name: outcome for name, (outcome, _) in found.items()} == dict.fromkeys(found, "skipped")
    assert len(found) == 4
    # an asked certification's skip is a verdict a dashboard reads; the others keep pytest's plain skip
    assert found["test_accuracy_without_data"][1] == (
        "NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR|not certified")
    assert found["test_not_a_certification"][1] == "no GPU here|pytest.skip"
    assert found["test_predictions_not_given"][1] == "no --predictions DIR given|pytest.skip"


def test_with_it_only_an_asked_certification_fails_with_its_reason(tmp_path: Path) -> None:
    found, out = _outcomes(tmp_path, "--strict-certification")
    outcome, text = found["test_accuracy_without_data"]
    assert outcome == "failed" and "--strict-certification" in text and "no ImageNet given" in text, out[-2000:]
    first, second = "NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR", "--strict-certification: not"
    assert text.startswith(f"{first}\n{second} certified, the test could not run: no ImageNet given; pass --imagenet "
                           "DIR|not certified|")
    for name in ("test_ratio_without_rules", "test_predictions_not_given", "test_not_a_certification"):
        assert found[name][0] == "skipped", (name, found[name])


# --------------------------------------------------------------------------------------------
# The run's last line


def rec(kind: type, model: str, outcome: str, reason: str | None = None, verdict: str | None = None) -> object:
    return kind(meta=PytestFacts(outcome=outcome, reason=reason), config=Configuration(model=model, chip="cpu"),
                judgement=Judgement(verdict=verdict))


NO_IMAGENET = "NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR (DIR/val/*.JPEG with DIR/val_label.txt)"
MODELS = ["efficientnet_lite0", "resnext50_32x4d", "resnest50", "ghostnet_100", "se_resnext50_32x4d", "small"]


def embedded_run() -> list[object]:
    """The embedded default's shape: accuracy skipped without ImageNet, agreement and perf passed."""
    return [r for m in MODELS for r in (rec(AccuracyRecord, m, "skipped", NO_IMAGENET),
                                        rec(AgreementRecord, m, "passed", verdict="pass"),
                                        rec(PerfRecord, m, "passed", verdict="pass"))]


def test_the_embedded_default_says_it_is_expected_and_what_to_run_next() -> None:
    line = tally(embedded_run(), embedded=True)
    weights = "NOT CERTIFIED agreement: pretrained weights not available (--weights-dir DIR); pass --weights random"
    with_weights_missing = [*embedded_run(), rec(AgreementRecord, "small", "skipped", weights)]
    assert tally(with_weights_missing, embedded=True) == (
        "certification: 0 of 6 model(s) certified, 0 inconclusive (allowed), 6 not certified: "
        f"6 accuracy without data (expected; next: {NEXT_COMMAND}); +1 more above")
    assert line == ("certification: 0 of 6 model(s) certified, 0 inconclusive (allowed), 6 not certified: "
                    f"6 accuracy without data (expected; next: {NEXT_COMMAND})")
    assert line is not None and len(line) <= MAX_HEADLINE
    broken = [*embedded_run(), rec(ConversionRecord, "small", "failed", "FAIL max_rel_diff: torch vs onnx 0.4 > 0.001")]
    assert "expected" not in str(tally(broken, embedded=True))  # a failed conversion is no expected outcome
    assert tally(embedded_run()) == ("certification: 0 of 6 model(s) certified, 0 inconclusive (allowed), "
                                     "6 not certified: 6 accuracy need --imagenet DIR")
    assert per_model(embedded_run())[0] == "efficientnet_lite0: not certified (accuracy need --imagenet DIR)"


def test_allowed_inconclusive_is_counted_as_such_never_as_certified() -> None:
    records = [rec(AccuracyRecord, "a", "passed", verdict="inconclusive"), rec(AccuracyRecord, "b", "passed",
                                                                                 verdict="pass")]
    assert tally(records) == "certification: 1 of 2 model(s) certified, 1 inconclusive (allowed), 0 not certified"
    assert per_model(records) == ["a: inconclusive (allowed) (accuracy inconclusive (allowed))", "b: certified"]


def test_failures_and_errors_group_by_kind_and_are_never_called_expected() -> None:
    records = [rec(AccuracyRecord, "a", "failed", "FAIL paired_top1: drop 2.77 [2.01, 3.81] > 1.00 points",
                   verdict="fail"),
               rec(AccuracyRecord, "b", "failed", "INCONCLUSIVE top1_agreement: ...", verdict="inconclusive"),
               rec(AccuracyRecord, "c", "failed", "FAIL paired_top1: drop 3.1", verdict="fail"),
               rec(PerfRatioRecord, "a", "failed", "RuntimeError: the device vanished"),
               rec(PerfRecord, "d", "skipped", "NOT CERTIFIED perf: no 310P3 figures for d in --measurements x.csv")]
    line = tally(records, embedded=True)
    assert line == ("certification: 0 of 4 model(s) certified, 0 inconclusive (allowed), 4 not certified: "
                    "2 accuracy fail (paired_top1) (+1 other); 1 perf ratio error; +1 more above")
    # no "expected": something ran and failed; the kind that did not fit is counted, and listed above
    assert len(line) <= MAX_HEADLINE
    assert per_model(records)[:2] == ["a: not certified (accuracy fail (paired_top1); perf ratio error)",
                                      "b: not certified (accuracy inconclusive: need more images (--imagenet with "
                                      "the full val set))"]


@pytest.mark.parametrize("name", ["m" * 300, "\x1b[2J" + "é" * 150])
@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(st.sampled_from([AccuracyRecord, AgreementRecord, PerfRecord, PerfRatioRecord]), min_size=1,
                      max_size=30),
       reason=st.text(max_size=400), outcome=st.sampled_from(["skipped", "failed", "passed"]))
def test_the_last_line_fits_whatever_the_models_and_reasons(name: str, kinds: list[type], reason: str,
                                                            outcome: str) -> None:
    records = [rec(k, f"{name}{i}", outcome, f"NOT CERTIFIED x: {reason} pass --{reason[:300]} X")
               for i, k in enumerate(kinds)]
    for embedded in (False, True):
        line = tally(records, embedded)
        assert line is not None and len(line) <= MAX_HEADLINE and line.startswith("certification: ")
