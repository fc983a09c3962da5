"""The vendors' own benchmark tools, run on the suite's compiled artifact, for a parity check.

Every vendor's customers trust one tool for throughput: OpenVINO's ``benchmark_app``, Ascend's
``python -m ais_bench``, NVIDIA's ``trtexec``. :func:`vendor_tool_for` picks the one of a backend;
its :meth:`~harness.benchmark_tools.base.VendorTool.measure` measures the artifact in the suite's scenario and
returns a :class:`VendorFigure` (docs/vendor-parity.md: the commands, and what each tool measures).

- ``base``: :class:`VendorFigure`, :class:`VendorTool`, the errors, output reading;
- ``benchmark_app``, ``ais_bench_cli``, ``trtexec``: one tool each.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.benchmark_tools.ais_bench_cli import AisBench
from harness.benchmark_tools.base import (
    VendorFigure,
    VendorOutputError,
    VendorTool,
    VendorToolUnavailable,
    VendorUsageError,
)
from harness.benchmark_tools.benchmark_app import BenchmarkApp
from harness.benchmark_tools.trtexec import Trtexec

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
KNOWN = "openvino (benchmark_app), ascend (ais_bench) and onnxruntime with the TensorRT provider (trtexec)"


class NoVendorTool(VendorToolUnavailable):
    """The backend has no vendor benchmark tool the suite knows (a skip naming the ones it does)."""


def vendor_tool_for(backend_name: str, backend_options: Mapping[str, str] | None = None) -> VendorTool:
    """The vendor tool that measures what ``backend_name`` with ``backend_options`` (a chip's
    ``backend_options`` in fixtures/chips.toml) runs; :class:`NoVendorTool` for any other."""
    options = dict(backend_options or {})
    if backend_name == "openvino":
        return BenchmarkApp(options)
    if backend_name == "ascend":
        return AisBench()
    if backend_name == "onnxruntime":
        providers = options.get("providers") or ""
        names = [p.strip() for p in (providers.split(",") if isinstance(providers, str) else providers)]
        if TENSORRT_PROVIDER in names:
            return Trtexec()
        what = f"the onnxruntime backend with providers {','.join(n for n in names if n)}" if any(names) \
            else "the onnxruntime CPU backend"
        raise NoVendorTool(f"{what} has no vendor benchmark tool; --compare-vendor-tool compares {KNOWN}")
    raise NoVendorTool(
        f"the {backend_name} backend has no vendor benchmark tool; --compare-vendor-tool compares {KNOWN}"
    )


__all__ = [
    "AisBench",
    "BenchmarkApp",
    "NoVendorTool",
    "Trtexec",
    "VendorFigure",
    "VendorOutputError",
    "VendorTool",
    "VendorToolUnavailable",
    "VendorUsageError",
    "vendor_tool_for",
]
