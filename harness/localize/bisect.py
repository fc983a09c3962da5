"""The *bisect* method: prefix sub-graphs, each compiled whole, so fusions stay as they are.

Where exposing every tensor changes the candidate's numbers (a runtime fuses fewer nodes when
their outputs must exist, see :mod:`harness.localize.expose`), each probe instead extracts the
prefix of the reference graph that ends at one tensor (``onnx.utils.Extractor``: the image input
to that tensor, nothing else), compiles that sub-graph for the candidate exactly as the full model
is compiled, runs it, and compares its one output with the reference's. Within the prefix every
fusion the runtime would make is made; only the prefix's last node loses a fusion with what came
after it. This is Polygraphy's ``debug reduce`` and msit's accuracy localisation (``bin_divide``)
done on prefixes.

The search (:func:`search`): probe the last tensor; if it is over threshold, binary-search the
*cuts* (tensors all data flows through, :mod:`harness.localize.graph`) for the first one over
threshold, then probe every tensor between the last good cut and that one in topological order,
so a divergence inside a block (a branch of a residual or squeeze-excite block) is found at its
node, not at the block's end. That costs about log2(cuts) + block size compilations instead of
one per node. It assumes that once a cut is over threshold the later cuts are too; an error that
recovers before the next cut and leaves the final output within thresholds is not searched for
(the expose method sees it; ``exhaustive=True`` probes every tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnx.shape_inference
import onnx.utils

from harness.localize.compare import Metrics
from harness.localize.graph import Site, image_input

Probe = Callable[[Site], "tuple[Metrics, bool] | None"]


class PrefixExtractor:
    """Prefix sub-graphs of one model, which is shape-inferred once."""

    def __init__(self, model: onnx.ModelProto):
        self.input, _ = image_input(model)
        try:
            model = onnx.shape_inference.infer_shapes(model)  # types for the sub-graphs' outputs
        except Exception:  # inference is a convenience: untyped outputs are typed below
            pass
        self._extractor = onnx.utils.Extractor(model)
        # The name -> ValueInfoProto map the extractor takes outputs' types from (its name has
        # changed between onnx versions: ``vimap`` before 1.16, ``value_infos`` since).
        types: dict[str, onnx.ValueInfoProto] | None = getattr(self._extractor, "value_infos", None)
        if types is None:
            types = self._extractor.vimap  # type: ignore[attr-defined]  # onnx < 1.16; the stubs are newer
        self._types = types

    def prefix(self, output: str) -> onnx.ModelProto:
        """The sub-graph from the image input to ``output`` (with the initializers it uses)."""
        if output not in self._types:
            # Shape inference gave this tensor no type: an untyped output, typed by the runtime.
            self._types[output] = onnx.ValueInfoProto(name=output)
        return self._extractor.extract_model([self.input], [output])


def search(
    sites: Sequence[Site], probe: Probe, exhaustive: bool = False
) -> tuple[int | None, dict[int, tuple[Metrics, bool]]]:
    """The index (into ``sites``) of the first tensor over threshold, and every probe's result.

    ``sites`` are the comparable tensors in topological order; ``probe(site)`` compiles and runs the
    prefix ending at ``site`` and returns its metrics and whether they are over threshold (None: the
    tensor cannot be compared, e.g. not a float tensor; counted as within).
    """
    results: dict[int, tuple[Metrics, bool]] = {}
    not_comparable: set[int] = set()

    def over(i: int) -> bool:
        if i in not_comparable:
            return False
        if i not in results:
            got = probe(sites[i])
            if got is None:
                not_comparable.add(i)
                return False
            results[i] = got
        return results[i][1]

    if not sites:
        return None, results
    if exhaustive:
        flags = [over(i) for i in range(len(sites))]
        return next((i for i, f in enumerate(flags) if f), None), results
    cuts = [i for i, s in enumerate(sites) if s.cut]
    if not cuts or cuts[-1] != len(sites) - 1:
        cuts.append(len(sites) - 1)
    if not over(cuts[-1]):
        return None, results
    lo, hi = -1, len(cuts) - 1  # cuts[hi] is over threshold; cuts[lo] is not (-1: the image input)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if over(cuts[mid]):
            hi = mid
        else:
            lo = mid
    start = cuts[lo] + 1 if lo >= 0 else 0
    for i in range(start, cuts[hi] + 1):
        if over(i):
            return i, results
    return cuts[hi], results
