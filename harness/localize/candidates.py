"""The candidate for ``--backend B --precision P``: the reference compiled for that backend.

- ``onnxruntime``: fp32 is the reference with every ONNX Runtime optimization (CPU); fp16 is the
  reference converted by onnxconverter-common (:func:`harness.localize.targets.float16_model`).
- ``openvino``: :class:`harness.localize.ov_target.OpenVinoTarget` (fp32, bf16, fp16).
- ``ascend``: :class:`harness.localize.ascend_target.AscendTarget` (prefix sub-graphs through ATC).

Each module is imported only when its backend is asked for; a backend that cannot run here raises
:class:`~harness.backends.base.BackendUnavailable` (a NotApplicable: a skip in the suite, exit 3
from the command).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from harness.backends.base import BackendUnavailable
from harness.errors import UsageError
from harness.localize.targets import OrtTarget, Target, float16_model

BACKENDS = ("onnxruntime", "openvino", "ascend")


def backend_target(reference: onnx.ModelProto, backend: str, precision: str, input_shape: tuple[int, int, int],
                   options: Mapping[str, str] | None = None, threads: int | None = None) -> Target:
    """The reference compiled for ``backend`` at ``precision``; unavailable ones raise BackendUnavailable."""
    options = dict(options or {})
    if backend == "onnxruntime":
        providers = options.pop("providers", "CPUExecutionProvider")
        options.pop("threads", None)
        if providers != "CPUExecutionProvider" or options:
            raise BackendUnavailable(
                f"localisation runs ONNX Runtime on the CPU only; asked for providers {providers!r}"
                + (f" with options {sorted(options)}" if options else "")
            )
        if precision == "fp32":
            return OrtTarget(reference, "onnxruntime CPU fp32 (all optimizations)", "all", threads)
        if precision == "fp16":
            return OrtTarget(float16_model(reference), "onnxruntime CPU fp16 (onnxconverter-common float16)", "all",
                             threads)
        raise BackendUnavailable(
            f"onnxruntime on the CPU runs fp32, or fp16 through onnxconverter-common; not {precision!r}"
        )
    if backend == "openvino":
        from harness.localize.ov_target import OpenVinoTarget

        return OpenVinoTarget(reference, precision, input_shape, threads=threads, **options)
    if backend == "ascend":
        from harness.localize.ascend_target import AscendTarget

        return AscendTarget(reference, precision, input_shape, options)
    raise UsageError(f"unknown backend {backend!r} for localisation; known: {', '.join(BACKENDS)}")
