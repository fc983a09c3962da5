#!/usr/bin/env bash
# The tests as CI runs them (README, docs/testing.md), in two phases with one JUnit file:
#   1. every independent test in parallel, one pytest-xdist worker per core (`-n auto`), a file's
#      tests on one worker (`--dist loadfile`: a module's fixtures are built once, not per worker),
#      the files longest first by their measured cost (`--no-loadscope-reorder` keeps the order
#      tests/conftest.py gives them from tests/durations.json: tests/ordering.py says why);
#   2. the tests that time things or own a device (markers `serial`, `perf`) alone, in one process,
#      after the others are done. The `timing` tests (hang-bounded waits for events: process races,
#      tool time limits, interruptions) run in phase 1: scripts/hog-check.sh proves them green with
#      every core busy, more load than one other worker puts beside them.
# The two JUnit files are merged into reports/junit.xml (junitparser, the `test` extra). Extra
# arguments go to both phases (paths, -k, -x, --durations=20, -p no:cacheprovider...); select
# with paths and -k, not -m (the phases are split by -m). Exit status: the worse of the two.
#
# Env: PY (default .venv/bin/python), MZC_TEST_WORKERS (default auto: one per core),
# MZC_JUNIT (default reports/junit.xml).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${MZC_TEST_WORKERS:-auto}
JUNIT=${MZC_JUNIT:-reports/junit.xml}
SERIAL="serial or perf"

# Bytecode is cached (__pycache__/, git-ignored) even where the environment says not to: the tests start
# a few hundred Python processes (suite runs in subprocesses, xdist workers), and without the cache
# each one compiles the harness and pytest rewrites its assertions anew: ~0.5 s of CPU a process here.
unset PYTHONDONTWRITEBYTECODE

parts=$(mktemp -d "${TMPDIR:-/tmp}/mzc-junit.XXXXXX")
trap 'rm -rf "$parts"' EXIT

echo "test.sh: phase 1 of 2: independent tests, $WORKERS worker(s) (pytest -n $WORKERS --dist loadfile --no-loadscope-reorder -m \"not ($SERIAL)\")" >&2
# One OpenMP thread per worker (torch; unless OMP_NUM_THREADS is set): with a worker per core, torch's
# default of a thread per core puts two spinning thread pools on each core. Measured on 2 cores
# (docs/testing.md): the same tests take 38% less CPU and 7% less wall time.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
    "$PY" -m pytest -n "$WORKERS" --dist loadfile --no-loadscope-reorder -m "not ($SERIAL)" --junitxml="$parts/1-parallel.xml" "$@"
parallel=$?
echo "test.sh: phase 2 of 2: tests that must run alone, one process (pytest -p no:xdist -m \"$SERIAL\")" >&2
"$PY" -m pytest -p no:xdist -m "$SERIAL" --junitxml="$parts/2-serial.xml" "$@"
serial=$?

mkdir -p "$(dirname "$JUNIT")"
"$PY" - "$JUNIT" "$parts/1-parallel.xml" "$parts/2-serial.xml" <<'EOF' || exit 3
import sys
from pathlib import Path

from junitparser import JUnitXml, TestSuite

out, *parts = sys.argv[1:]
merged = JUnitXml()
for part in parts:
    if Path(part).is_file():
        doc = JUnitXml.fromfile(part)
        for suite in [doc] if isinstance(doc, TestSuite) else list(doc):
            suite.name = f"{suite.name} ({Path(part).stem.split('-', 1)[1]})"  # pytest (parallel), pytest (serial)
            merged.add_testsuite(suite)
merged.update_statistics()
merged.write(out)
print(f"test.sh: {merged.tests} tests, {merged.failures} failures, {merged.errors} errors, "
      f"{merged.skipped} skipped: {out}", file=sys.stderr)
EOF

# 5 (no test collected) in one phase is fine when the other ran tests: a path with no serial test.
status() { [ "$1" -eq 5 ] && [ "$2" -ne 5 ] && echo 0 || echo "$1"; }
a=$(status "$parallel" "$serial")
b=$(status "$serial" "$parallel")
echo "test.sh: phase 1 exit $parallel, phase 2 exit $serial" >&2
[ "$a" -ge "$b" ] && exit "$a" || exit "$b"
