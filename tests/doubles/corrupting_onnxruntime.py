"""A test double: ONNX Runtime on the CPU with a conversion bug planted, to fail a certification.

``CorruptingOnnxRuntimeBackend`` is the real ONNX Runtime backend, except that ``compile`` scales
one Conv's weight initializer (:func:`harness.localize.fault.plant_fault`) before ONNX Runtime
optimizes the graph: a compiled model that really loses accuracy, the way a converter bug would.
Its compiled artifacts are cached apart (``compile_fields`` names the fault).

Loaded as a pytest plugin (``-p corrupting_onnxruntime`` with tests/doubles on ``PYTHONPATH``) it
registers the backend as ``corrupting_onnxruntime`` in ``harness.backends.base._BACKENDS`` (select
it with ``--backend corrupting_onnxruntime``), and gives the ``--localize-on-fail`` hook the same
corrupted model as its candidate: localisation recompiles the chip's ONNX for the chip's backend
(harness.localize.candidates.backend_target), which knows the real backends only, so the plugin
wraps the name ``harness.localize.pipeline`` calls. Both are undone at ``pytest_unconfigure``.

The fault: the weight of node :data:`NODE` times :data:`SCALE` (environment ``CORRUPT_NODE`` and
``CORRUPT_SCALE`` when the module is imported; a test may set the attributes). Nothing here is a
claim about any real runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import onnx
import pytest

from harness.backends.base import _BACKENDS, BackendUnavailable
from harness.backends.onnxruntime import OnnxRuntimeBackend
from harness.localize.fault import plant_fault
from harness.specs import CompileTarget

NAME = "corrupting_onnxruntime"
# efficientnet_lite0's node of docs/localize.md's planted fault. On the first 400 images of
# imagenet-val-1300 (--limit 400): x2 drops top-1 from 83.0 to 74.25 (41 images only the reference
# gets right, 6 only the compiled model); x1.5 drops 1.5 points (9 vs 3), too few to decide.
NODE = os.environ.get("CORRUPT_NODE", "/blocks/blocks.3/blocks.3.1/conv_pw/Conv")
SCALE = float(os.environ.get("CORRUPT_SCALE", "2.0"))


def write_planted_fault(source: Path, destination: Path, node: str, scale: float = 1.5) -> Path:
    """:func:`~harness.localize.fault.plant_fault` on the ONNX file ``source``, saved as ``destination``."""
    onnx.save(plant_fault(onnx.load(str(source)), node, scale), str(destination))
    return destination


def fault() -> str:
    """The planted fault, as records and cache keys name it (NODE and SCALE read when called)."""
    return f"{NODE} weight x{SCALE:g}"


class CorruptingOnnxRuntimeBackend(OnnxRuntimeBackend):
    """ONNX Runtime (CPU) compiling the model with :data:`NODE`'s weight scaled by :data:`SCALE`."""

    name: ClassVar[str] = NAME

    def compile_fields(self) -> Mapping[str, str]:
        return {**super().compile_fields(), "planted_fault": fault()}

    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        corrupted = write_planted_fault(Path(onnx_path), Path(out_dir) / "corrupted.onnx", NODE, SCALE)
        try:
            return super().compile(corrupted, target, out_dir)
        finally:
            corrupted.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "planted_fault": fault()}


def localization_target(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    """``backend_target`` that also knows :data:`NAME`: the reference with the same fault planted,
    run as the backend runs it (ONNX Runtime, CPU, every optimization on)."""
    from harness.localize.targets import OrtTarget

    def backend_target(reference: onnx.ModelProto, backend: str, precision: str, input_shape: tuple[int, int, int],
                       options: Mapping[str, str] | None = None, threads: int | None = None) -> Any:
        if backend != NAME:
            return wrapped(reference, backend, precision, input_shape, options, threads)
        if precision != "fp32":
            raise BackendUnavailable(f"{NAME} runs fp32 only, not {precision!r}")
        return OrtTarget(
            plant_fault(reference, NODE, SCALE), f"{NAME} CPU fp32 (planted fault: {fault()})", "all", threads
        )

    backend_target.wrapped = wrapped  # type: ignore[attr-defined]
    return backend_target


def install() -> None:
    """Register the backend and its localisation target (idempotent)."""
    from harness.localize import pipeline

    _BACKENDS[NAME] = f"{__name__}:CorruptingOnnxRuntimeBackend"
    if not hasattr(pipeline.backend_target, "wrapped"):
        pipeline.backend_target = localization_target(pipeline.backend_target)


def uninstall() -> None:
    from harness.localize import pipeline

    _BACKENDS.pop(NAME, None)
    original = getattr(pipeline.backend_target, "wrapped", None)
    if original is not None:
        pipeline.backend_target = original


@pytest.hookimpl(tryfirst=True)  # before harness.pytest.plugin checks --backend against the registry
def pytest_configure(config: pytest.Config) -> None:
    install()


def pytest_unconfigure(config: pytest.Config) -> None:
    uninstall()
