#!/usr/bin/env python3
"""Mutation testing of the judging code (issue 19): mutmut on a copy of the tree.

    .venv/bin/python scripts/mutation.py            # the whole configured scope, ~6 minutes on 2 cores
    .venv/bin/python scripts/mutation.py --keep     # keep the scratch copy (mutmut show / browse there)

What is mutated and which tests run is ``[tool.mutmut]`` in pyproject.toml; the score, the
surviving mutants and why each is equivalent are in docs/mutation.md. mutmut writes a mutated
copy to ``./mutants/`` of the directory it runs in, so this script copies the working tree
(harness/, tests/, fixtures/, conftest.py, pyproject.toml, uncommitted edits included) to a
scratch directory and runs there: nothing is written into the repository. Not run in CI.

Prints the score per module (killed/total; a mutant that hangs a test past mutmut's timeout
counts as killed) and every surviving mutant with its diff, marking those docs/mutation.md
lists as equivalent. Exits 1 when a module scores below ``--min-score`` (90%) or a survivor is
not listed there, 2 when mutmut is missing or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("harness", "tests", "fixtures", "conftest.py", "pyproject.toml", "setup.cfg")
DOC = ROOT / "docs" / "mutation.md"
# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed, 0 survived, 5 and 33 no tests, timeouts.
KILLED, SURVIVED, NO_TESTS, TIMEOUT = {1, 3}, {0}, {5, 33}, {24, -24, 36, 152, 255}


def mutmut_command() -> list[str]:
    """The mutmut of this interpreter's environment; exits 2 with the install hint if there is none."""
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed in this environment: pip install -e '.[mutation]' (then rerun)", file=sys.stderr)
        sys.exit(2)
    beside = Path(sys.executable).parent / "mutmut"
    found = str(beside) if beside.exists() else shutil.which("mutmut")
    if not found:
        print("mutmut is importable but its command is not on PATH: pip install -e '.[mutation]'", file=sys.stderr)
        sys.exit(2)
    return [found]


def copy_tree(scratch: Path) -> None:
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "mutants")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, scratch / name, ignore=junk)
        elif src.exists():
            shutil.copy2(src, scratch / name)


def tally(scratch: Path) -> dict[str, dict[str, object]]:
    """Per mutated module: counts by outcome and the surviving mutants' names."""
    out: dict[str, dict[str, object]] = {}
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(scratch / "mutants"))[: -len(".meta")]
        counts: Counter[str] = Counter()
        survivors = []
        for name, code in codes.items():
            kind = ("killed" if code in KILLED else "timeout" if code in TIMEOUT else "survived" if code in SURVIVED
                    else "no tests" if code in NO_TESTS else "not run" if code is None else f"other ({code})")
            counts[kind] += 1
            if kind != "killed" and kind != "timeout":
                survivors.append(name)
        out[module] = {"counts": counts, "total": len(codes), "survivors": sorted(survivors, key=natural)}
    return out


def natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def diff_of(mutmut: list[str], scratch: Path, name: str) -> str:
    shown = subprocess.run([*mutmut, "show", name], cwd=scratch, capture_output=True, text=True).stdout
    lines = [line for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return "\n".join(f"      {line}" for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "modelzoo-cert-mutation",
                        help="where the tree is copied and mutmut runs (emptied first)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="mutmut's parallel workers")
    parser.add_argument("--min-score", type=float, default=90.0, help="percent killed each module must reach")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy afterwards")
    args = parser.parse_args()

    mutmut = mutmut_command()
    scratch = args.scratch.resolve()
    if scratch == ROOT or ROOT in scratch.parents:
        print(f"--scratch must lie outside the repository ({ROOT}): mutmut writes mutated copies there",
              file=sys.stderr)
        return 2
    copy_tree(scratch)
    print(f"mutmut on a copy in {scratch} ({args.max_children} workers); this takes about 6 minutes", flush=True)
    started = time.monotonic()
    run = subprocess.run([*mutmut, "run", "--max-children", str(args.max_children)], cwd=scratch,
                         capture_output=True, text=True)
    elapsed = time.monotonic() - started
    (scratch / "mutmut-run.log").write_text(run.stdout + run.stderr)
    results = tally(scratch) if (scratch / "mutants").exists() else {}
    if run.returncode != 0 or not results:
        print((run.stdout + run.stderr)[-3000:], file=sys.stderr)
        print(f"mutmut run failed (exit {run.returncode}); full log: {scratch / 'mutmut-run.log'}", file=sys.stderr)
        return 2

    documented = set(re.findall(r"harness\.[\w.ǁ]+__mutmut_\d+", DOC.read_text())) if DOC.exists() else set()
    status = 0
    print(f"\nmutation score (killed, timeouts included, of all mutants), {elapsed / 60:.1f} minutes:")
    killed_all = total_all = 0
    for module, r in results.items():
        counts, total = r["counts"], r["total"]
        killed = counts["killed"] + counts["timeout"]
        killed_all, total_all = killed_all + killed, total_all + total
        score = 100.0 * killed / total if total else 100.0
        rest = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k not in ("killed", "timeout") and n)
        left = rest or "none left"
        print(f"  {module:32} {killed:4}/{total:<4} {score:5.1f}%  ({counts['timeout']} by timeout; {left})")
        if score < args.min_score:
            status = 1
    print(f"  {'all':32} {killed_all:4}/{total_all:<4} {100.0 * killed_all / total_all:5.1f}%")

    for module, r in results.items():
        if not r["survivors"]:
            continue
        print(f"\nnot killed in {module}:")
        for name in r["survivors"]:
            known = name in documented
            status = status or (0 if known else 1)
            print(f"  {name}{'  (equivalent: docs/mutation.md)' if known else '  NOT LISTED in docs/mutation.md'}")
            print(diff_of(mutmut, scratch, name))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"\nkept {scratch}: cd there and run `mutmut show NAME` or `mutmut browse`")
    return status


if __name__ == "__main__":
    sys.exit(main())
