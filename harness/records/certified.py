"""Whether a model is certified: the one rule the run's last line and the report's matrix share.

A model is *certified* when every certification record of it (:data:`CERTIFYING_KINDS`) passed on a
verdict that is not inconclusive; *inconclusive (allowed)* when they all passed but some only
because ``--inconclusive allow`` let an inconclusive verdict through; otherwise *not certified*
(something failed, was skipped or erred). Conversion parity is checked but does not certify a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from harness.judge.headline import ALLOWED

CERTIFYING_KINDS = ("accuracy", "agreement", "perf", "perf_ratio")
CERTIFIED, NOT_CERTIFIED = "certified", "not certified"
MODEL_STATUSES = (CERTIFIED, ALLOWED, NOT_CERTIFIED)


def record_status(record: Any) -> str:
    """One record's part: certified, inconclusive (allowed) or not certified."""
    if record.outcome != "passed":
        return NOT_CERTIFIED
    return ALLOWED if record.verdict == "inconclusive" else CERTIFIED


def certifications(records: Iterable[Any]) -> dict[str, list[Any]]:
    """The certification records of each model, in the order the records name the models."""
    models: dict[str, list[Any]] = {}
    for r in records:
        if r.kind in CERTIFYING_KINDS and r.model is not None:
            models.setdefault(r.model, []).append(r)
    return models


def model_status(records: Sequence[Any]) -> str:
    """A model's status from its certification records (:func:`certifications`)."""
    statuses = {record_status(r) for r in records}
    if NOT_CERTIFIED in statuses:
        return NOT_CERTIFIED
    return ALLOWED if ALLOWED in statuses else CERTIFIED
