"""``python -m harness merge SHARD_RESULTS... --out merged.jsonl``: one chip's shards as one results file.

The nightly's merge job runs it over the results files of every shard of ``pytest --shard K/N``
(harness.pytest.shard) of one chip; ``python -m harness report`` then reads the merged file.
It checks that the shards make one whole run (harness.records.merge: every shard reported, once,
on the same selection and chips, no test in two shards) and prints each shard's tests and seconds.

Exit status: 0 merged; 1 the shards do not make a whole run (each problem on its own ``error:``
line, a missing shard named; nothing written); 2 bad input (a path that does not exist or holds no
records: one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.safe_names import printable, printable_errors

NAME = "merge"
EXIT_OK, EXIT_INCOMPLETE = 0, 1


def add_parser(commands: Any) -> None:
    merge = commands.add_parser(
        NAME, help="check the results files of one chip's shards (pytest --shard K/N) and join them into one",
        description="Check that the results files of the shards of one sharded run (pytest --shard K/N) make a "
        "whole (every shard 1..N reported once, the same selection and chips, no test in two shards) and write "
        "their records into one results file for python -m harness report.",
    )
    merge.add_argument("paths", nargs="+", type=Path, metavar="SHARD_RESULTS",
                       help="the shards' results files, or directories searched recursively for *.jsonl")
    merge.add_argument("--out", type=Path, required=True, metavar="FILE",
                       help="the merged results file to write (replaced atomically)")
    merge.set_defaults(main=main)


def main(args: argparse.Namespace) -> int:
    """Every line printed is escaped (harness.safe_names.printable): the files come from other runners."""
    with printable_errors():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from harness.records.merge import ShardsIncomplete, check_shards, write_merged
    from harness.records.results import load_results

    results = load_results(args.paths)
    for warning in results.warnings:
        print(printable(f"warning: {warning}"))
    try:
        merged = check_shards(results)
    except ShardsIncomplete as exc:
        for problem in exc.problems:
            print(printable(f"python -m harness merge: error: {problem}"), file=sys.stderr)
        print(f"python -m harness merge: {len(exc.problems)} problem(s); nothing written to {printable(str(args.out))}",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    lines = write_merged(merged, args.out)
    busiest = max((s.seconds for s in merged.shards), default=0.0)
    mean = sum(s.seconds for s in merged.shards) / merged.count
    for s in merged.shards:
        print(printable(f"shard {s.index}/{merged.count}: {s.given} test(s) given, {s.recorded} recorded, "
                        f"{s.seconds:.1f} s of tests, on {s.run.host or '?'} (run {s.run.run_id})"))
    for index in merged.empty:
        print(f"shard {index}/{merged.count}: no test in the plan (more shards than models), no run record")
    balance = f"longest shard {busiest:.1f} s, {busiest / mean:.2f}x the mean" if mean > 0 else "no test seconds"
    print(printable(f"merged {len(merged.shards)} shard run(s) of {merged.count} on {', '.join(merged.chips)}: "
                    f"{merged.selected} test(s), {lines} record(s) written to {args.out} ({balance})"))
    return EXIT_OK
