"""The first line of every certification message: the verdict word, the deciding gate, its figures.

CI dashboards (Jenkins, GitLab, GitHub Actions summaries) show a failure's JUnit ``message``
attribute, and pytest keeps at most 500 characters of it (docs/nightly.md, "What dashboards show").
So every certification failure and skip starts with one line of at most :data:`MAX_HEADLINE`
characters that begins with its verdict word (:data:`WORDS`) and, for a verdict, names the gate
that decided it with its figures; the coverage, every gate's detail and the rest follow on later
lines. The gates' own headline is :func:`harness.judge.gates.gate_headline`; this module holds what
every message shares: the words, their JUnit ``type``, the clipping and the composition.

Text from data (model names, paths, labels) goes through :func:`harness.safe_names.printable`, so
an escape sequence never reaches a terminal or a dashboard as a control character.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from harness.safe_names import printable

MAX_HEADLINE = 200
FAIL, INCONCLUSIVE, NOT_CERTIFIED, ERROR = "FAIL", "INCONCLUSIVE", "NOT CERTIFIED", "ERROR"
WORDS = (NOT_CERTIFIED, INCONCLUSIVE, FAIL, ERROR)
# The JUnit <failure>/<skipped> ``type`` of each word (harness.pytest.junit sets it).
JUNIT_TYPES = {FAIL: "certification failure", INCONCLUSIVE: "inconclusive", NOT_CERTIFIED: "not certified",
               ERROR: "error"}
ALLOWED = "inconclusive (allowed)"  # a passed test whose verdict is inconclusive: never "certified"
_ELLIPSIS = "..."
_FIX = re.compile(r"(?:\b(?:pass|with|use|set)\s+|\()(--[a-z][a-z0-9-]*(?:[ =](?!--)[^\s;,()]+)?)")


def clip(text: object, limit: int = MAX_HEADLINE) -> str:
    """``text`` as one printable line (whitespace runs, line breaks included, become one space) of at
    most ``limit`` characters, ending in ``...`` when it was cut."""
    line = printable(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def compose(headline: str, *details: str) -> str:
    """A message: the clipped headline, then the non-empty ``details`` on their own lines. A headline
    that had to be cut is repeated whole as the first detail: clipping never loses a word."""
    head = clip(headline)
    rest = [d for d in details if d and d.strip()]
    if head != printable(" ".join(headline.split())):
        rest.insert(0, headline)
    return "\n".join([head, *(printable(d, newlines=True) for d in rest)])


def verdict_word(message: str) -> str | None:
    """The verdict word ``message`` starts with (:data:`WORDS`), or None."""
    for word in WORDS:
        if message.startswith(word) and message[len(word):len(word) + 1] in (" ", ":", "(", ""):
            return word
    return None


def first_line(message: str) -> str:
    return message.split("\n", 1)[0]


def skip_headline(kind: str, reason: str) -> str:
    """A certification that did not run: ``NOT CERTIFIED accuracy: no ImageNet given; pass --imagenet DIR``
    (the whole reason follows when the line had to be cut). A reason that already starts with a
    verdict word is kept as it is."""
    if verdict_word(reason) is not None:
        return reason
    return compose(f"{NOT_CERTIFIED} {kind}: {reason}")


def error_headline(kind: str, message: str) -> str:
    """A certification test that broke (an exception that is no verdict): ``ERROR perf: <its first line>``,
    then the rest of ``message``."""
    if verdict_word(message) is not None:
        return message
    head, _, rest = message.partition("\n")
    return compose(f"{ERROR} {kind}: {head}", rest)


def fix_of(reason: str) -> str:
    """The option a not-run reason tells the user to pass (``--imagenet DIR``), or ""."""
    found = _FIX.search(reason)
    return found.group(1) if found else ""


def allowed_headline(props: Mapping[str, object]) -> str:
    """The line that says a passed test's verdict was inconclusive and only allowed (from its recorded
    properties: ``gate_<name>``, ``images``, ``dataset_coverage``, ``images_needed``)."""
    gates = [k.removeprefix("gate_") for k, v in props.items() if k.startswith("gate_") and v == "inconclusive"]
    images = props.get("images")
    scope = f"{images} images ({props.get('dataset_coverage') or 'coverage unknown'}), " if images else ""
    needed = str(props.get("images_needed") or "")
    parts = [f"{INCONCLUSIVE} (allowed) {', '.join(gates) or 'verdict'}: "
             f"{scope}{needed_text(int(needed) if needed.isdigit() else None)}",
             "a pass only by --inconclusive allow (or fixtures/policy.toml): not certified"]
    return clip("; ".join(parts))


def needed_text(needed: int | None) -> str:
    """The end of an inconclusive headline: how many images would decide."""
    return "no feasible number of images would decide" if needed is None else f"~{needed:,} images would decide"
