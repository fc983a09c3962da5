#!/usr/bin/env bash
# Set up .venv with everything the suite and its tests need. Safe to rerun (it only adds what is
# missing). Env: PYTHON (default python3), MZC_EXTRAS (default "test,lint,realweights,openvino,report"),
# MZC_TORCH_PIN (default "torch==2.14.1 torchvision==0.29.1", the tested pair on x86_64; set it
# empty to let pip choose from pyproject's ranges, e.g. on aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${MZC_EXTRAS:-test,lint,realweights,openvino,report}
TORCH_PIN=${MZC_TORCH_PIN-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mzc-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS $TORCH_PIN"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing dependencies into .venv (first run takes a few minutes)" >&2
# --no-compile: pip would byte-compile every module of every package (torch's CUDA build, sympy...), ~35 s
# of a ~90 s install on the 2-core CI machine; the modules the suite imports are compiled below, ~16 s.
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile $TORCH_PIN -e ".[$EXTRAS]"
# Byte-compile what a run imports, once (scripts/warm_bytecode.sh; .ci/run does it beside the linters).
if [ "${MZC_SETUP_WARM_BYTECODE:-1}" = 1 ]; then
  bash scripts/warm_bytecode.sh
fi
echo "$want" > "$stamp"
