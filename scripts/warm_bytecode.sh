#!/usr/bin/env bash
# Byte-compile the modules a run of the suite imports, once, whatever PYTHONDONTWRITEBYTECODE says:
# scripts/setup.sh installs with `pip --no-compile` (compiling every installed module took ~35 s of a
# ~90 s install on the 2-core CI machine); this compiles only what is imported (~16 s, one core), so
# that the first test run's processes do not each compile it before the cache is written. Optional
# packages an extra did not install are passed over; a failure here costs only that time later.
# Env: PY (default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
env -u PYTHONDONTWRITEBYTECODE "$PY" - <<'EOF' || true
import importlib

for name in ("torch", "torchvision", "timm", "onnx", "onnxslim", "onnxruntime", "onnxruntime.quantization",
             "openvino", "matplotlib.pyplot", "harness.pytest.plugin", "harness.model.export"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
EOF
