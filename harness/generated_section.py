"""A generated part of a Markdown file between two marker comments, and the command that keeps it fresh.

docs/policy.md's policy table (harness.specs.policy_doc) and README.md's options tables
(harness.options_doc) are generated from their one declaration; each module says what to generate
and this one writes it between the markers, or with ``--check`` exits 1 when the file is stale
(a test runs the check, so a declaration changed without its doc fails CI).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def splice(text: str, begin: str, end: str, body: str, where: Path) -> str:
    """``text`` with what lies between the ``begin`` and ``end`` markers replaced by ``body``."""
    if begin not in text or end not in text:
        raise ValueError(f"{where}: the markers {begin!r} and {end!r} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def main(doc: Path, render: Callable[[str], str], *, what: str, command: str, description: str | None,
         argv: Sequence[str] | None = None) -> int:
    """Write ``render(doc's text)`` to ``doc`` when it differs; ``--check``: exit 1 instead, saying so."""
    parser = argparse.ArgumentParser(prog=command, description=description)
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {doc.name}'s {what} is stale")
    args = parser.parse_args(argv)
    current = doc.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{doc}: stale {what}; run {command}", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        doc.write_text(wanted)
        print(f"wrote {doc}")
    return 0
