#!/usr/bin/env bash
# The codebase's own checks, run by .ci/run before the tests (docs/contributing.md): ruff (lint and
# import order), mypy (types: all of harness/, strict on judge, records and specs), import-linter
# (the layer contracts of docs/architecture.md) and vulture (dead code). Each prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
status=0
step() {
    local name=$1; shift
    local start=$SECONDS
    if "$@"; then echo "lint: $name passed in $((SECONDS - start)) s" >&2
    else echo "lint: $name FAILED in $((SECONDS - start)) s" >&2; status=1; fi
}
step ruff "$PY" -m ruff check .
step mypy "$PY" -m mypy
BIN=$(dirname "$PY")
step import-linter "$BIN/lint-imports" --no-cache
step vulture "$PY" -m vulture
exit $status
