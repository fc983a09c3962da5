"""The JUnit file as CI dashboards read it: each failure's ``type``, verdict-first messages, allowed inconclusive.

pytest's junitxml writes ``<failure message="...">`` without a ``type`` and ``<skipped
type="pytest.skip">``; dashboards (docs/nightly.md, "What dashboards show of the JUnit") show the
``message`` and the ``type``. After pytest has written the file (:func:`finish`, called by
harness.pytest.certification at the end of the session), :func:`retype` rewrites it in place:

- every ``failure``, ``error`` and ``skipped`` whose message starts with a verdict word
  (harness.judge.headline) gets that word's ``type``: ``certification failure``, ``inconclusive``,
  ``not certified`` or ``error``; a skip's text starts with its message too (GitLab shows the
  elements' text only; a failure's text already starts with it);
- a certification test (it recorded a ``kind``) that failed with anything else (a crash, an
  assertion) reads ``ERROR <kind>: <first line>``, type ``error``;
- a certification test that passed on an ``inconclusive`` verdict (``--inconclusive allow``) gets the
  property ``certification = inconclusive (allowed)`` and a ``<system-out>`` line saying so: a
  dashboard that shows it green still shows why it is not certified.

Everything else is left as pytest wrote it; the file stays valid against the Jenkins xunit
plugin's JUnit schema (tests/data/junit-10.xsd) apart from testcase ``<properties>``, which pytest
writes and no JUnit schema allows (docs/nightly.md).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cache import atomic_write_bytes
from harness.judge.headline import ALLOWED, ERROR, JUNIT_TYPES, allowed_headline, error_headline, verdict_word

PROPERTY = "certification"  # the property a passed, allowed-inconclusive test case carries
_OUTCOMES = ("failure", "error", "skipped")


def _properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def _retype_case(case: ET.Element) -> bool:
    """Rewrite one ``<testcase>``; True when anything changed."""
    props = _properties(case)
    kind = props.get("kind", "").replace("_", " ")
    changed = False
    outcomes = [e for e in case if e.tag in _OUTCOMES]
    for element in outcomes:
        message = element.get("message", "")
        word = verdict_word(message)
        if word is None and kind and element.tag != "skipped":
            message = error_headline(kind, message)
            element.set("message", message)
            word = ERROR
        if word is not None:
            element.set("type", JUNIT_TYPES[word])
            if element.tag == "skipped" and not (element.text or "").startswith(message):
                element.text = f"{message}\n{element.text or ''}"  # GitLab shows the text, not the message
            changed = True
    if not outcomes and props.get("verdict") == "inconclusive":
        properties = case.find("properties")
        if properties is not None and props.get(PROPERTY) != ALLOWED:
            ET.SubElement(properties, "property", name=PROPERTY, value=ALLOWED)
        out = ET.SubElement(case, "system-out")
        out.text = allowed_headline(props) + "\n"
        changed = True
    return changed


def retype(path: Path) -> bool:
    """Rewrite the JUnit file at ``path`` as the module docstring says (atomically: a reader sees the
    old file or the new one). False, leaving it untouched, when nothing needed changing."""
    tree = ET.parse(path)
    changed = [_retype_case(case) for case in tree.getroot().iter("testcase")]
    if not any(changed):
        return False
    atomic_write_bytes(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
    return True


def finish(config: pytest.Config) -> None:
    """:func:`retype` the run's ``--junitxml`` file, on the process that wrote it (not an xdist worker)."""
    xmlpath = getattr(config.option, "xmlpath", None)
    if not xmlpath or hasattr(config, "workerinput"):
        return
    path = Path(os.path.abspath(os.path.expanduser(os.path.expandvars(xmlpath))))
    if path.is_file():
        retype(path)
