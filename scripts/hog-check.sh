#!/usr/bin/env bash
# Prove that no timing-sensitive test depends on the machine's speed or load (docs/testing.md):
# run them RUNS times (default 3) while busy processes hog every core, one per core plus
# MZC_HOG_EXTRA (default 2) more, and fail if any run failed.
#
#   bash scripts/hog-check.sh                      # the tests marked `timing`, 3 runs
#   MZC_HOG_RUNS=5 bash scripts/hog-check.sh       # 5 runs
#   bash scripts/hog-check.sh tests/test_cards.py  # other tests (arguments replace `-m timing`)
#
# Env: MZC_HOG_RUNS, MZC_HOG_EXTRA, PY (default .venv/bin/python), MZC_HOG_LOG_DIR (default
# reports/hog-check: one log per run). The hogs are this script's own children, ended on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${MZC_HOG_RUNS:-3}
EXTRA=${MZC_HOG_EXTRA:-2}
LOGS=${MZC_HOG_LOG_DIR:-reports/hog-check}
if [ $# -eq 0 ]; then set -- -m timing; fi
mkdir -p "$LOGS"

cores=$(nproc 2>/dev/null || echo 2)
hogs=()
stop_hogs() {
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${hogs[@]}"; do wait "$pid" 2>/dev/null; done
    hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 $((cores + EXTRA))); do
    "$PY" -c "while True: pass" &
    hogs+=($!)
done
echo "hog-check: $((cores + EXTRA)) busy processes on $cores core(s); $RUNS run(s) of: pytest $*" >&2

failed=0
for run in $(seq 1 "$RUNS"); do
    start=$SECONDS
    log="$LOGS/run-$run.log"
    # Serial, as these tests run in the suite (scripts/test.sh); no results file or report written.
    if "$PY" -m pytest -p no:cacheprovider -p no:xdist -p no:randomly -q --no-report \
            --results "$PWD/$LOGS/results-$run.jsonl" "$@" >"$log" 2>&1; then
        echo "hog-check: run $run passed in $((SECONDS - start)) s ($(tail -1 "$log"))" >&2
    else
        failed=$((failed + 1))
        echo "hog-check: run $run FAILED in $((SECONDS - start)) s ($(tail -1 "$log")); see $log" >&2
        grep -E "^(FAILED|ERROR) " "$log" | sed 's/^/    /' >&2
    fi
done
echo "hog-check: $failed of $RUNS run(s) failed" >&2
[ "$failed" -eq 0 ]
