"""The ``python -m harness COMMAND`` subcommands, one module each.

A command module defines ``NAME``, ``add_parser(commands)`` (its argparse sub-parser, whose
defaults set ``run``) and ``run(args) -> int`` (an exit status). A :class:`~harness.errors.UsageError`
or an ``OSError`` it raises is printed as one ``error:`` line with exit status 2, never a traceback.
Add a command by adding its module to :data:`COMMANDS`.
"""

from __future__ import annotations

COMMANDS = ("harness.cli.report", "harness.cli.localize", "harness.cli.models", "harness.cli.reference",
            "harness.cli.merge", "harness.cli.keep_float")
