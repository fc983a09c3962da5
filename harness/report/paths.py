"""Paths in the report as the user typed them, where the run's own command line says how.

The records keep resolved paths (the plugin resolves ``--imagenet`` and the other path options
before the tests run, so ``../shared/datasets/x`` is recorded as ``/work/shared/datasets/x``), and
the run's working directory is not recorded. The run record does keep the arguments as typed, so
a recorded absolute path that ends with what an argument names (its ``..``, ``.`` and ``~``
parts aside) is shown as that argument plus the rest: ``/work/shared/datasets/x/val`` of a run
given ``--imagenet ../shared/datasets/x`` is shown ``../shared/datasets/x/val``. A path no
argument names is shown as recorded. Display only: nothing here is read from disk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

_SKIP_PARTS = ("", ".", "..", "~", "/")
_AFTER = r"(?=[/\s;:,()'\"]|$)"


def typed_paths(args: Sequence[str]) -> list[str]:
    """The values of a command line that look like relative (or home-relative) paths."""
    found = []
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else (
            arg if i > 0 and args[i - 1].startswith("--") and not arg.startswith("-") else None)
        if value and not value.startswith("/") and ("/" in value or value.startswith((".", "~"))):
            found.append(value.rstrip("/"))
    return sorted(set(found), key=len, reverse=True)  # the longest first: the most specific wins


def as_typed(args: Sequence[str]) -> Callable[[str], str]:
    """A function that rewrites every absolute path in a text that one of ``args`` names."""
    rules = []
    for value in typed_paths(args):
        tail = [p for p in PurePosixPath(value).parts if p not in _SKIP_PARTS]
        if tail:
            pattern = re.compile(r"(?<![\w.~-])/(?:[^\s/;:,()'\"]+/)*?" + re.escape("/".join(tail)) + _AFTER)
            rules.append((pattern, value))

    def rewrite(text: str) -> str:
        for pattern, value in rules:
            text = pattern.sub(value.replace("\\", "\\\\"), text)
        return text

    return rewrite
