"""The data package's error, and how its messages show a few of many names.

:class:`DataError` is what every module of :mod:`harness.data` raises for input it refuses (a
label file, a dataset layout, an image, an argument): a :class:`~harness.errors.UsageError`, so
a run reports the message (what was expected, what was found, how to fix it) without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.errors import UsageError


class DataError(UsageError, ValueError):
    """Bad input data: the message says what was expected, what was found and how to fix it."""


def examples(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names`` in sorted order, comma-separated, ``...`` if there are more."""
    shown = ", ".join(sorted(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")
