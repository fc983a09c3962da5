"""Layer-by-layer localisation of an accuracy loss: which node of the graph first diverges.

A candidate (an ONNX file, or the reference compiled for a backend at a precision) is compared
with the reference ONNX run on ONNX Runtime, CPU, fp32, tensor by tensor, on the images where
their final outputs differ most. The modules, one job each:

- ``thresholds``: the [localize] table of fixtures/policy.toml (msit's debug compare defaults)
- ``graph``: the reference's node outputs in topological order; constants; cuts
- ``images``: the preprocessed images, normalized per batch
- ``select``: the first pass, the most divergent images
- ``targets`` (ONNX Runtime, fp16 conversion), ``ov_target`` (OpenVINO), ``ascend_target`` (ATC +
  ais_bench): compiling a graph into a program that returns tensors by name; ``candidates``: the
  candidate for ``--backend B --precision P``
- ``expose``: every intermediate tensor made an output (ONNX, OpenVINO)
- ``bisect``: prefix sub-graphs (onnx.utils.Extractor), compiled whole, searched
- ``compare``: per-tensor metrics, over threshold, local vs accumulated
- ``pipeline``: :func:`localize` and :func:`localize_failure`
- ``summary``: what it found, :class:`LayerRow` and :class:`LocalizationSummary`, and their JSON form
- ``write``: layers.csv and summary.json
- ``fault``: a planted fault (one initializer scaled), to check the answer

See docs/localize.md.
"""

from harness.localize.candidates import BACKENDS, backend_target
from harness.localize.images import Images
from harness.localize.pipeline import METHODS, NothingCompared, localize, localize_failure
from harness.localize.summary import LayerRow, LocalizationSummary
from harness.localize.targets import Target, reference_target
from harness.localize.thresholds import Thresholds, load_thresholds

__all__ = [
    "BACKENDS",
    "METHODS",
    "Images",
    "LayerRow",
    "LocalizationSummary",
    "NothingCompared",
    "Target",
    "Thresholds",
    "backend_target",
    "load_thresholds",
    "localize",
    "localize_failure",
    "reference_target",
]
