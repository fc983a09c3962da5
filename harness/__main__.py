"""``python -m harness COMMAND``: the suite's tools outside pytest (see harness.cli).

Exit status: what the command returns (0 on success); 2 for bad input, printed as one line that
says what was expected, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness.cli import COMMANDS
from harness.errors import UsageError
from harness.safe_names import printable

EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    """The ``python -m harness`` parser (harness.options_doc documents it)."""
    parser = argparse.ArgumentParser(prog="python -m harness", description="model-zoo certification tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.main(args))
    except UsageError as exc:
        print(f"python -m harness {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = printable(str(exc.filename or ""))
        print(
            f"python -m harness {args.command}: error: {where}: {printable(str(exc.strerror or exc))}", file=sys.stderr
        )
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
