"""``python -m harness report [PATHS...]``: merge results files into one report.

The nightly merge job runs this over every machine's artifacts; a person runs it over
``reports/``. Exit status: 0 written; 2 bad input (one line saying what was expected, no
traceback); 1 regressions flagged, only with ``--fail-on-regression`` so a report is never lost
to a red build by default.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.options import BASELINES_DIR
from harness.safe_names import printable, printable_errors
from harness.specs import SpecError

NAME = "report"
DEFAULT_RESULTS = Path("reports")
EXIT_OK, EXIT_REGRESSION = 0, 1


def add_parser(commands: Any) -> None:
    report = commands.add_parser(
        NAME, help="merge results files (JSON lines) into report.md, report.html and plots/",
        description="Merge results files (JSON lines written by pytest --results) from one or more runs and "
        "machines into report.md, a self-contained report.html and plots/<model>.png.",
    )
    report.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="results files, or directories searched recursively for *.jsonl (default: reports/)")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="where to write the report (default: the first PATH if it is a directory, else reports/)")
    BASELINES_DIR.add_to(report)  # it must exist: checked when the command runs (the docs' commands parse as typed)
    report.add_argument("--fail-on-regression", action="store_true",
                        help="exit with status 1 when a regression is flagged (default: report it, exit 0)")
    report.set_defaults(main=main)


def _out_dir(paths: Sequence[Path], out: Path | None) -> Path:
    if out is not None:
        return out
    return paths[0] if paths and paths[0].is_dir() else DEFAULT_RESULTS


def main(args: argparse.Namespace) -> int:
    """The command; every line it prints is escaped (harness.safe_names.printable): the results
    files come from other machines, their names and fields may hold terminal escape codes."""
    with printable_errors():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from harness.records.results import load_results
    from harness.report.build import terminal_table, write_report

    paths = list(args.paths) or [DEFAULT_RESULTS]
    if args.baselines_dir is not None and not args.baselines_dir.is_dir():
        raise SpecError(f"--baselines-dir {args.baselines_dir}: expected a directory of <chip>.csv files, found none")
    results = load_results(paths)
    written = write_report(results, _out_dir(paths, args.out), baselines_dir=args.baselines_dir)
    print(terminal_table(results))
    print()
    for warning in results.warnings:
        print(printable(f"warning: {warning}"))
    for note in written.notes:
        print(printable(f"note: {note}"))
    print(printable(f"report written: {written.markdown}, {written.html}, {len(written.plots)} plot(s) in "
                    f"{written.out_dir / 'plots'}"))
    if written.regressions:
        print(f"{len(written.regressions)} regression(s):")
        for regression in written.regressions:
            print(printable(f"  {regression.describe()}"))
    else:
        print("no regressions against the previous runs")
    return EXIT_REGRESSION if written.regressions and args.fail_on_regression else EXIT_OK
