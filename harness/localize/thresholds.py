"""The thresholds a tensor is judged by: the ``[localize]`` table of ``fixtures/policy.toml``.

The metric thresholds are msit's documented defaults for ``debug compare`` (its analyser flags the
first operator with CosineSimilarity < 0.99, RootMeanSquareError > 1.0 or MeanRelativeError > 1.0;
github.com/Ascend/msit ``msit/components/debug/compare/README_EN.md``, "Comparison Result
Analysis", and the same numbers in ``msquickcmp/net_compare/analyser.py`` ``MONITOR_THRESHOLD``;
see docs/localize.md). msit has no threshold on the largest absolute or relative difference: ours
default to infinity (reported, never judged) and can be set in the table. The other fields are
this suite's own choices, explained in docs/localize.md.

A missing table or field means the default below; a malformed one is a
:class:`~harness.specs.SpecError` naming the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.specs import FIXTURES_DIR
from harness.specs.reader import Reader, load_toml

TABLE = "localize"


@dataclass(frozen=True)
class Thresholds:
    """When a tensor is over threshold, and how localisation runs (fixtures/policy.toml [localize])."""

    min_cosine: float = 0.99  # msit: CosineSimilarity < 0.99
    max_rmse: float = 1.0  # msit: RootMeanSquareError > 1.0
    max_mean_relative_error: float = 1.0  # msit: MeanRelativeError > 1.0
    max_abs_diff: float = math.inf  # msit has none: reported, not judged
    max_relative_diff: float = math.inf  # msit has none: reported, not judged
    images: int = 16  # the most divergent images the layer comparison runs on
    # Exposing every tensor must not change the candidate's final error by more than this fraction,
    # or the exposed run does not show the error being localised: bisect instead.
    exposure_tolerance: float = 0.2
    # Accumulated: some tensor after the first divergent one is this many times further from the
    # reference (1 - cosine) than the first divergent one; local otherwise.
    growth_factor: float = 2.0

    def over(self, cosine: float, rmse: float, mean_relative_error: float, max_abs_diff: float,
             max_relative_diff: float) -> tuple[str, ...]:
        """The metrics over threshold (empty: within); a NaN (non-finite output) counts as over."""
        reasons = []
        if not cosine >= self.min_cosine:
            reasons.append("cosine")
        if not rmse <= self.max_rmse:
            reasons.append("rmse")
        if not mean_relative_error <= self.max_mean_relative_error:
            reasons.append("mean_relative_error")
        if not max_abs_diff <= self.max_abs_diff:
            reasons.append("max_abs_diff")
        if not max_relative_diff <= self.max_relative_diff:
            reasons.append("max_relative_diff")
        return tuple(reasons)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (infinity as the string ``"inf"``: JSON has no infinity)."""
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


def load_thresholds(path: Path | None = None) -> Thresholds:
    """The ``[localize]`` table of ``path`` (default: fixtures/policy.toml), with the defaults above."""
    path = Path(path) if path else FIXTURES_DIR / "policy.toml"
    data = load_toml(path)
    table = data.get(TABLE, {})
    r = Reader(str(path), TABLE, table)
    d = Thresholds()
    thresholds = Thresholds(
        min_cosine=r.number("min_cosine", -1.0, 1.0, d.min_cosine),
        max_rmse=r.number("max_rmse", 0.0, math.inf, d.max_rmse),
        max_mean_relative_error=r.number("max_mean_relative_error", 0.0, math.inf, d.max_mean_relative_error),
        max_abs_diff=r.number("max_abs_diff", 0.0, math.inf, d.max_abs_diff),
        max_relative_diff=r.number("max_relative_diff", 0.0, math.inf, d.max_relative_diff),
        images=r.integer("images", 1, 4096, d.images),
        exposure_tolerance=r.number("exposure_tolerance", 0.0, math.inf, d.exposure_tolerance),
        growth_factor=r.number("growth_factor", 1.0, math.inf, d.growth_factor),
    )
    r.finish()  # NaN is refused by the range checks above, a misspelt field here
    return thresholds
