"""The thresholds a tensor is judged by: ``Policy.localize``, the ``[localize]`` table of
``fixtures/policy.toml``, read and checked with the rest of the policy (:func:`harness.specs.load_policy`).

:class:`~harness.specs.policy.LocalizeThresholds` holds msit's ``debug compare`` defaults and
this suite's own fields (docs/localize.md); a malformed table is a :class:`~harness.specs.SpecError`
naming the file, the field, what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path

from harness.specs import load_policy
from harness.specs.policy import LocalizeThresholds

Thresholds = LocalizeThresholds


def load_thresholds(path: Path | None = None) -> Thresholds:
    """The ``[localize]`` thresholds of the policy file ``path`` (default: fixtures/policy.toml)."""
    return load_policy(path).localize
