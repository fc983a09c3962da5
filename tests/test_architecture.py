"""The shape rules of docs/architecture.md that import-linter cannot say.

The import rules (the layers, no import circle, no torch in harness.data, backends apart) are
contracts in pyproject.toml, checked by ``lint-imports`` (scripts/lint.sh). Here: what loading the
pytest plugin imports at run time, the exception family, the one Session contract, and the size
limit of a module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import harness
from harness.backends.base import Session
from harness.errors import HarnessError

ROOT = Path(harness.__file__).resolve().parent
MAX_LINES = 420  # docs/architecture.md: no module over 420 lines
HEAVY = ("torch", "torchvision", "timm")


def _harness_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(harness.__path__, "harness.")]


def test_loading_the_pytest_plugin_imports_no_torch() -> None:
    """Every pytest run loads the plugin (an entry point), also `--help` and a run that needs no model:
    torch, torchvision and timm are imported only when a test needs them. import-linter sees every
    import, also those inside functions, so "at load time" is checked here, in a fresh interpreter."""
    code = (f"import sys; import harness.pytest.plugin; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"importing harness.pytest.plugin imported {done.stdout.strip()}"


def test_collecting_the_certification_suite_imports_no_torch_and_no_onnx() -> None:
    """Collecting acceptance/ (every run of the suite does, also one that only reads measurements or
    predictions, `--collect-only`, or a shard's plan) loads neither torch (~1.9 s here) nor onnx
    (~0.7 s); a test that converts or computes imports them when it runs."""
    heavy = (*HEAVY, "onnx", "onnxruntime")
    modules = sorted(p.stem for p in (ROOT.parent / "acceptance").glob("*.py") if p.stem != "__init__")
    code = (f"import sys, importlib; [importlib.import_module('acceptance.' + m) for m in {modules!r}]; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "test_perf" in modules and "test_predictions" in modules
    assert done.stdout.split() == [], f"importing acceptance/{{{','.join(modules)}}} imported {done.stdout.strip()}"


def test_every_harness_exception_derives_from_harness_error() -> None:
    strays = []
    for name in _harness_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
                    and not issubclass(obj, HarnessError)):
                strays.append(f"{name}.{attr}")
    assert not strays, f"exceptions outside the HarnessError family: {strays}"


def test_every_session_keeps_the_one_infer_contract() -> None:
    """``Session.infer`` checks the batch, calls the backend's ``_forward`` and checks the logits;
    a backend's session implements ``_forward`` and never ``infer`` itself."""
    for name in _harness_modules():
        if name.startswith("harness.backends."):
            importlib.import_module(name)
    sessions, stack = [], list(Session.__subclasses__())
    while stack:
        cls = stack.pop()
        sessions.append(cls)
        stack.extend(cls.__subclasses__())
    ours = [cls for cls in sessions if cls.__module__.startswith("harness.")]
    assert {"OnnxRuntimeSession", "OpenVinoSession", "AscendSession", "TorchSession"} <= {c.__name__ for c in ours}
    overriding = [f"{cls.__module__}.{cls.__qualname__}" for cls in ours if "infer" in vars(cls)]
    assert not overriding, f"these sessions override Session.infer instead of implementing _forward: {overriding}"


def test_no_harness_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(ROOT.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in ROOT.rglob("*.py")}
    over = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not over, f"split these modules (one job per module, at most {MAX_LINES} lines): {over}"
