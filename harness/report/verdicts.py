"""A record's status (the colour of every cell that shows it) and its verdict's words, from what it recorded.

One function colours the whole report: :func:`status_of` (a record) and :func:`outcome_status`
(one recorded gate outcome). A status is one of :data:`STATUSES`: pass, fail, inconclusive (the
policy failed the test on it), inconclusive allowed (``--inconclusive allow``: the test passed, the
verdict stayed inconclusive; never shown as a pass), skip (not run, or not applicable) and error
(the test failed before a verdict, or with one that does not fail it), and neutral (a passed test
with nothing of its own to decide: figures read from elsewhere). Nothing here decides a
verdict: the records carry harness.judge's.
"""

from __future__ import annotations

import hashlib

from harness.judge.gates import NOT_APPLICABLE
from harness.records.parts import FAIL, PASS
from harness.records.schema import AccuracyRecord, ResultRecord
from harness.report.render import ALLOWED, BAD, ERROR, INCONCLUSIVE, NEUTRAL, OK, SKIP, Cell

STATUSES = (OK, BAD, INCONCLUSIVE, ALLOWED, SKIP, ERROR, NEUTRAL)
STATUS_WORDS = {OK: "pass", BAD: "fail", INCONCLUSIVE: "inconclusive", ALLOWED: "inconclusive (allowed)",
                SKIP: "skipped", ERROR: "error", NEUTRAL: "recorded (no gate)"}
ALLOWED_WORDS = STATUS_WORDS[ALLOWED]


def outcome_status(outcome: str | None) -> str:
    """The status of one recorded verdict or gate outcome: pass, fail, inconclusive, or one that
    decides nothing (``not applicable: ...``, ``not checked: ...``)."""
    if outcome is None:
        return ""
    return {PASS: OK, FAIL: BAD, INCONCLUSIVE: INCONCLUSIVE}.get(outcome, SKIP)


def status_of(record: ResultRecord) -> str:
    """The colour of a record's cells, everywhere in the report: its recorded verdict and pytest's outcome.

    skipped: skip; verdict inconclusive: inconclusive when the test failed on it, inconclusive
    allowed when it passed (``--inconclusive allow``); verdict fail: fail; a failed test without a
    failing verdict (it stopped before its gates, or after them on an error): error; a passed test
    whose verdict is ``not applicable`` (figures measured elsewhere: no gate of its own, its ratio
    gates decide): neutral, neither a pass nor the grey of a skip; otherwise the recorded verdict's
    (a passed test without a verdict, schema 0: pass)."""
    if record.outcome == "skipped":
        return SKIP
    if record.verdict == INCONCLUSIVE:
        return ALLOWED if record.outcome == "passed" else INCONCLUSIVE
    if record.verdict == FAIL:
        return BAD
    if record.outcome == "failed":
        return ERROR
    if record.verdict is None:
        return OK if record.outcome == "passed" else ""
    if record.verdict.startswith(NOT_APPLICABLE):
        return NEUTRAL if record.outcome == "passed" else SKIP
    return outcome_status(record.verdict)


def outcome_text(record: ResultRecord) -> str:
    """pytest's outcome as the summary shows it, except that a passed test whose verdict is
    inconclusive says ``inconclusive (allowed)``, and a failed one ``failed (inconclusive)``."""
    if record.verdict == INCONCLUSIVE and record.outcome in ("passed", "failed"):
        return ALLOWED_WORDS if record.outcome == "passed" else "failed (inconclusive)"
    return str(record.outcome or "?")


def images_needed(record: ResultRecord) -> int | None:
    return record.verdicts.images_needed if isinstance(record, AccuracyRecord) else None


def verdict_cell(record: ResultRecord) -> Cell:
    """``pass``, ``fail: paired_top1`` (the gates recorded as failed), ``inconclusive: ~381 images
    needed`` (the images that would decide), ``inconclusive (allowed): ~381 images needed``, ``not
    applicable`` (no gate could decide), or pytest's outcome. One line: the reasons are under the table."""
    verdict, status = record.verdict or "", status_of(record)
    if record.outcome == "skipped":
        return Cell(NOT_APPLICABLE if verdict.startswith(NOT_APPLICABLE) else "skipped", status)
    if verdict == FAIL:
        failed = [name for name, outcome in record.judgement.gates.items() if outcome == FAIL]
        return Cell("fail" + (f": {', '.join(failed)}" if failed else ""), status)
    if verdict == INCONCLUSIVE:
        needed = images_needed(record)
        words = ALLOWED_WORDS if status == ALLOWED else INCONCLUSIVE
        return Cell(words + (f": ~{needed:,} images needed" if needed else ""), status)
    if record.outcome == "failed":
        return Cell("error" if status == ERROR else "failed", status)
    return Cell(verdict.split(":")[0] or str(record.outcome or "\u2014"), status)


def anchor(prefix: str, *parts: object) -> str:
    """An id of this report for a row or a section (``acc-1f2e3d4c5b``): the parts hashed, so a
    name from a results file never needs escaping in an id or a link."""
    return f"{prefix}-{hashlib.sha256(repr(parts).encode('utf-8', 'backslashreplace')).hexdigest()[:10]}"


def record_anchor(prefix: str, record: ResultRecord) -> str:
    """The id of ``record``'s row in the table of ``prefix`` (``acc``: accuracy, ``test``: every test)."""
    return anchor(prefix, record.kind, record.meta.test, record.config)
