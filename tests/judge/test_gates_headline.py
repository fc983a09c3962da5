"""The first line of every certification message (harness.judge.headline, harness.judge.gates.gate_headline):
at most 200 characters, the verdict word first, the deciding gate with its figures; for the whole class
of inputs (long model names and data paths, many failing gates, escape characters in names)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.coverage import Coverage
from harness.errors import NotCertified
from harness.judge.gates import (
    Gate,
    agreement_verdict_gate,
    certify,
    conversion_gates,
    gate_headline,
    paired_accuracy_gates,
    published_gate,
)
from harness.judge.headline import (
    JUNIT_TYPES,
    MAX_HEADLINE,
    WORDS,
    allowed_headline,
    clip,
    compose,
    error_headline,
    fix_of,
    skip_headline,
    verdict_word,
)
from harness.judge.metrics import Accuracy, Parity
from harness.safe_names import printable
from harness.specs import AccuracyRef, load_policy
from harness.specs.policy import AccuracyTolerance

POLICY = load_policy()  # absolute 1 point, 95%, Tango, inconclusive fails
LONG_PATH = "/data/" + "/".join(["imagenet-val-copy-with-a-long-name"] * 9)[:294]  # 300 characters
NASTY = "efficientnet\x1b[31m_lite0\u202e\n\tévaluation" + "x" * 150


def correctness(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) per-image correctness: a both right, b only the reference, c only the candidate."""
    ref = np.array([True] * a + [True] * b + [False] * c + [False] * d)
    got = np.array([True] * a + [False] * b + [True] * c + [False] * d)
    return ref, got


def test_a_paired_failure_reads_like_the_issue_asks() -> None:
    ref, got = correctness(900, 40, 4, 356)  # 1,300 images, drop 36 / 1300 = 2.77 points
    gates = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY)
    with pytest.raises(NotCertified) as raised:
        certify(gates, f"m on cpu bs8 (subset: 1,300 of 50,000 ILSVRC2012 val images under {LONG_PATH})",
                Coverage("subset", 1300, 50000, "--limit 1300", "labels checked").short())
    head, second, third = str(raised.value).split("\n")[:3]
    low, high = gates[0].values["paired_drop_top1_low95"], gates[0].values["paired_drop_top1_high95"]
    assert head == f"FAIL paired_top1: drop 2.77 [{low:.2f}, {high:.2f}] > 1.00 points, 1,300 images (subset)"
    assert second.startswith("m on cpu bs8 (subset") and LONG_PATH in second  # the coverage follows, whole
    assert third.startswith("FAIL paired_top1: top1 drop 2.769 points")


def test_an_inconclusive_agreement_names_the_images_that_would_decide() -> None:
    p = Parity(count=50, max_abs_diff=0.1, mean_abs_diff=0.01, min_cosine=0.99, top1_agreement=100.0)
    gate = agreement_verdict_gate(p, POLICY, "torch")
    assert gate.verdict == "inconclusive" and gate.images_needed is not None
    head = gate_headline([gate], "50 images (subset)")
    assert head == (f"INCONCLUSIVE top1_agreement: 100.00% [{gate.values['agreement_top1_low95']:.2f}, 100.00] vs 99%, "
                    f"50 images (subset); ~{gate.images_needed:,} images would decide")


def test_the_first_failed_gate_decides_before_an_inconclusive_one_and_the_others_are_counted() -> None:
    ref, got = correctness(900, 40, 4, 356)
    failed = paired_accuracy_gates({"top1": ref}, {"top1": got}, POLICY)[0]
    undecided = dataclasses.replace(failed, name="top1_agreement", verdict="inconclusive", images_needed=16289)
    head = gate_headline([undecided, failed])
    assert head.startswith("FAIL paired_top1: ") and head.endswith("; +1 more gate(s) not passed: top1_agreement")
    assert gate_headline([dataclasses.replace(failed, passed=True, verdict="pass")]) == ""


def test_a_full_val_published_failure_and_a_conversion_failure() -> None:
    full = Coverage("full", 50000, 50000, "all of them", "SHA-256 matches")
    measured = Accuracy(top1=73.0, top5=91.0, count=50000, correct1=36500, correct5=45500)
    gate = published_gate(measured, AccuracyRef(top1=74.846, top5=92.18, source="timm"), full, AccuracyTolerance())
    assert gate_headline([gate], full.short()) == (
        "FAIL published_top1: 73.000% < 73.846% (published 74.846%), 50,000 images (full)")
    p = Parity(count=16, max_abs_diff=0.5, mean_abs_diff=0.1, min_cosine=0.98, top1_agreement=93.75, max_rel_diff=0.05)
    head = gate_headline(conversion_gates(p, POLICY), "16 images")
    assert head == ("FAIL max_rel_diff: torch vs onnx 0.05 > 0.001, 16 images; "
                    "+2 more gate(s) not passed: min_cosine, top1_agreement")


def test_a_gate_without_a_summary_shows_its_figure_interval_and_threshold() -> None:
    gate = Gate("reference_top1", 70.1234, 74.846, False, "long detail", verdict="fail",
                values={"reference_top1_low95": 67.5, "reference_top1_high95": 72.61})
    assert gate_headline([gate]) == "FAIL reference_top1: 70.12 [67.5, 72.61] vs 74.85"


def test_skips_errors_and_allowed_inconclusive_lines() -> None:
    assert skip_headline("accuracy", "no ImageNet given; pass --imagenet DIR (DIR/val/*.JPEG)") == (
        "NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR (DIR/val/*.JPEG)")
    assert skip_headline("perf", "FAIL already a verdict") == "FAIL already a verdict"
    assert error_headline("perf", "RuntimeError: boom\nline 2") == "ERROR perf: RuntimeError: boom\nline 2"
    assert fix_of("no ImageNet given; pass --imagenet DIR (x)") == "--imagenet DIR"
    assert fix_of("weights not available (pass --weights-dir DIR)") == "--weights-dir DIR"
    assert fix_of("no rules here") == ""
    line = allowed_headline({"gate_paired_top1": "inconclusive", "gate_published_top1": "not applicable: subset",
                             "images": "50", "dataset_coverage": "subset", "images_needed": "16289"})
    assert line == ("INCONCLUSIVE (allowed) paired_top1: 50 images (subset), ~16,289 images would decide; a pass only "
                    "by --inconclusive allow (or fixtures/policy.toml): not certified")
    assert verdict_word(line) == "INCONCLUSIVE"
    assert set(JUNIT_TYPES) == set(WORDS)
    assert [verdict_word(w) for w in ("FAILED x", "ERRORS", "NOT CERTIFIEDx", "")] == [None] * 4


def test_a_headline_cut_at_200_characters_is_repeated_whole_below() -> None:
    text = compose(f"NOT CERTIFIED perf: no figures in --measurements {LONG_PATH}", "second")
    head, whole, second = text.split("\n")
    assert len(head) == MAX_HEADLINE and head.endswith("...") and LONG_PATH in whole and second == "second"


# --------------------------------------------------------------------------------------------
# The whole class of inputs


names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=320) | st.sampled_from([LONG_PATH, NASTY])


def assert_headline(message: str, words: tuple[str, ...]) -> None:
    head = message.split("\n", 1)[0]
    assert len(head) <= MAX_HEADLINE, (len(head), head)
    assert verdict_word(head) in words, head
    assert printable(head) == head, head  # no escape sequence, line break or bidi control reaches a dashboard


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["accuracy", "agreement", "conversion", "perf", "perf ratio", "predictions"]),
       reason=names, path=names)
def test_every_skip_and_error_headline_fits_whatever_the_names(kind: str, reason: str, path: str) -> None:
    message = f"no figures for {reason} in --measurements {path}; pass --measurements FILE"
    assert_headline(skip_headline(kind, message), ("NOT CERTIFIED", "FAIL", "INCONCLUSIVE", "ERROR"))
    assert_headline(error_headline(kind, message), ("ERROR", "NOT CERTIFIED", "FAIL", "INCONCLUSIVE"))
    assert clip(message, 40) == clip(message, 40)[:40]


@settings(max_examples=150, deadline=None)
@given(drops=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=25),
       scope=names, allow=st.booleans())
def test_every_gate_headline_fits_with_many_gates_and_any_scope(drops: list[tuple[int, int]], scope: str,
                                                                 allow: bool) -> None:
    policy = dataclasses.replace(POLICY, accuracy=dataclasses.replace(
        POLICY.accuracy, inconclusive="allow" if allow else "fail"))
    gates = []
    for i, (b, c) in enumerate(drops):
        ref, got = correctness(500, b, c, 100)
        gates += [dataclasses.replace(g, name=f"{g.name}_{i}")
                  for g in paired_accuracy_gates({"top1": ref}, {"top1": got}, policy)]
    if all(g.passed for g in gates):
        assert gate_headline(gates, scope) == ""
        return
    with pytest.raises(NotCertified) as raised:
        certify(gates, f"{NASTY} on cpu ({LONG_PATH})", scope)
    assert_headline(str(raised.value), ("FAIL", "INCONCLUSIVE"))
