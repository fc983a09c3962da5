"""How often does the reference gate's subset rule refuse an honest reference, and how often does
it catch a broken one? (docs/reference-check.md)

On a subset of the validation set (a ``--limit N`` subset or a user's own folder), the reference
gate (:func:`harness.judge.reference_check.reference_gates`) passes when the published figure lies
within the reference's Wilson interval widened by ``[reference] subset_margin_points`` on each
side. Whether it passes depends only on how many of the ``n`` images the reference got right, so
the rule is tabled once per ``n`` (:func:`refused_counts`, the gate's own condition, with the same
:func:`~harness.judge.metrics.wilson_interval`, :func:`~harness.judge.paired.z_value` and
``SLACK``) and a subset is simulated as its count of right images, drawn from a
:class:`Population`:

- a ``--limit`` subset of the full validation set: ``n`` of 50,000 images of which
  round(published x 500) are right, without replacement (hypergeometric);
- a user's own folder: ``n`` images resampled from a real per-image correctness vector (the
  reference's, on real images), without replacement while ``n`` fits in it, with replacement
  beyond. The count of right images in a without-replacement resample of a 0/1 vector is
  hypergeometric, and binomial with replacement, so drawing the count is drawing the resample;
- a reference that scores like a broken one (random weights, labels off by one...): binomial.

Simulated rates are seeded (one generator per population and ``n``, so a table does not depend
on the order it is filled in, and every margin sees the same draws); :func:`exact_refusal_rate`
sums the same rule over the exact distribution, as a check of the simulation.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.judge.gates import SLACK
from harness.judge.metrics import wilson_interval
from harness.judge.paired import z_value

FULL_VAL = 50_000
SIZES = (50, 500, 1300, 5000)
MARGINS = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)
REPS = 20_000
HONEST_REFUSAL_LIMIT = 0.001  # an honest reference may be refused in at most 0.1% of subsets
CATCH_LIMIT = 0.999  # a broken one must be caught in at least 99.9%


@functools.lru_cache(maxsize=64)
def _wilson_bounds(n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    z = z_value(confidence)
    bounds = np.array([wilson_interval(k, n, z) for k in range(n + 1)], dtype=float)
    bounds.setflags(write=False)
    return bounds[:, 0], bounds[:, 1]


def refused_counts(n: int, published: float, margin: float, confidence: float = 0.95) -> np.ndarray:
    """Bool (n + 1,): element k is True when a reference right on k of n images is refused
    (element by element the gate's own decision)."""
    low, high = _wilson_bounds(n, confidence)
    return ~((low - margin - SLACK <= published) & (published <= high + margin + SLACK))


def needed_margins(counts: np.ndarray, n: int, published: float, confidence: float = 0.95) -> np.ndarray:
    """Per drawn count, the smallest margin (points) at which that subset passes."""
    low, high = _wilson_bounds(n, confidence)
    counts = np.asarray(counts)
    needed: np.ndarray = np.maximum(0.0, np.maximum(low[counts] - published, published - high[counts]))
    return needed


@dataclass(frozen=True)
class Population:
    """Where a subset's images come from: ``correct`` right of ``size`` images, drawn without
    replacement while a subset fits in them and with replacement beyond (``size`` 0: an endless
    population, every image right with probability ``rate``)."""

    name: str
    correct: int = 0
    size: int = 0
    rate: float = 0.0  # used when size == 0

    @classmethod
    def full_val(cls, name: str, published: float, size: int = FULL_VAL) -> Population:
        """The validation set as published: round(published% x size) of ``size`` right."""
        return cls(name, correct=round(published / 100.0 * size), size=size)

    @classmethod
    def folder(cls, name: str, correct: Sequence[bool] | np.ndarray) -> Population:
        """A real per-image correctness vector, resampled."""
        vector = np.asarray(correct, dtype=bool)
        return cls(name, correct=int(vector.sum()), size=int(vector.size))

    @classmethod
    def scoring(cls, name: str, percent: float) -> Population:
        """A reference that is right on ``percent``% of images, image after image."""
        return cls(name, rate=percent / 100.0)

    @property
    def p(self) -> float:
        return self.correct / self.size if self.size else self.rate

    @property
    def percent(self) -> float:
        return 100.0 * self.p

    def without_replacement(self, n: int) -> bool:
        return 0 < n <= self.size

    def how(self, n: int) -> str:
        if self.without_replacement(n):
            return f"{n:,} of {self.size:,} without replacement"
        return f"{n:,} with replacement" if self.size else f"{n:,} images"

    def draw(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        """``reps`` subsets of ``n`` images: how many of each are right."""
        if self.without_replacement(n):
            if n == self.size:
                return np.full(reps, self.correct, dtype=np.int64)
            return rng.hypergeometric(self.correct, self.size - self.correct, n, size=reps)
        return rng.binomial(n, self.p, size=reps)

    def pmf(self, n: int) -> np.ndarray:
        """(n + 1,): the exact probability of k right of n."""
        k = np.arange(n + 1)
        if self.without_replacement(n):
            good, bad = self.correct, self.size - self.correct
            feasible = (k <= good) & (n - k <= bad)
            kf = k[feasible]
            log = (_log_choose(good, kf) + _log_choose(bad, n - kf)) - _log_choose(self.size, np.array([n]))[0]
            out = np.zeros(n + 1)
            out[feasible] = np.exp(log)
            return out
        p = self.p
        if p <= 0.0 or p >= 1.0:
            out = np.zeros(n + 1)
            out[0 if p <= 0.0 else n] = 1.0
            return out
        binomial: np.ndarray = np.exp(_log_choose(n, k) + k * math.log(p) + (n - k) * math.log1p(-p))
        return binomial


def _log_choose(n: int, k: np.ndarray) -> np.ndarray:
    lgamma = np.frompyfunc(math.lgamma, 1, 1)
    k = np.asarray(k, dtype=float)
    logs: np.ndarray = (math.lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)).astype(float)
    return logs


def generator(seed: int, population: Population, n: int) -> np.random.Generator:
    """The generator of one population at one size: independent of the order tables are filled."""
    return np.random.default_rng([seed, zlib.crc32(population.name.encode()), n])


def simulate(population: Population, n: int, reps: int = REPS, seed: int = 0) -> np.ndarray:
    """Seeded draws: how many of ``n`` images are right, ``reps`` times."""
    return population.draw(n, reps, generator(seed, population, n))


def refusal_rate(counts: np.ndarray, n: int, published: float, margin: float, confidence: float = 0.95) -> float:
    """The share of drawn subsets the gate refuses."""
    return float(refused_counts(n, published, margin, confidence)[np.asarray(counts)].mean())


def exact_refusal_rate(population: Population, n: int, published: float, margin: float,
                       confidence: float = 0.95) -> float:
    """The probability that the gate refuses a subset of ``n`` drawn from ``population``."""
    return float(population.pmf(n)[refused_counts(n, published, margin, confidence)].sum())


def caught_below(n: int, published: float, margin: float, confidence: float = 0.95,
                 limit: float = CATCH_LIMIT) -> float:
    """The highest accuracy (percent, to 0.01) at which a reference on images as hard as the
    validation set is still caught in at least ``limit`` of subsets of ``n``: what the margin
    gives up (0 when not even a reference right on no image is caught so often)."""
    lo, hi = 0.0, published
    if exact_refusal_rate(Population.scoring("", lo), n, published, margin, confidence) < limit:
        return 0.0
    while hi - lo > 0.005:
        mid = (lo + hi) / 2
        if exact_refusal_rate(Population.scoring("", mid), n, published, margin, confidence) >= limit:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Table:
    """Refusal rates of one population per (n, margin), simulated and exact, and per n the 0.1st
    and 99.9th percentiles of the drawn subsets' needed margins (:func:`needed_margins`): an honest
    reference is refused in at most 0.1% of subsets from the upper one on, a broken one caught in
    at least 99.9% below the lower one."""

    population: Population
    published: float
    simulated: Mapping[tuple[int, float], float]
    exact: Mapping[tuple[int, float], float]
    needed: Mapping[int, tuple[float, float]]
    spread: Mapping[int, tuple[float, float]]  # 0.1st and 99.9th percentiles of subset % - published
    sizes: tuple[int, ...]
    margins: tuple[float, ...]

    def worst(self, margin: float, exact: bool = False) -> float:
        rates = self.exact if exact else self.simulated
        return max(rates[(n, margin)] for n in self.sizes)

    def best(self, margin: float, exact: bool = False) -> float:
        rates = self.exact if exact else self.simulated
        return min(rates[(n, margin)] for n in self.sizes)


def refusal_table(population: Population, published: float, sizes: Iterable[int] = SIZES,
                  margins: Iterable[float] = MARGINS, reps: int = REPS, seed: int = 0,
                  confidence: float = 0.95) -> Table:
    sizes, margins = tuple(sizes), tuple(float(m) for m in margins)
    simulated, exact, needed, spread = {}, {}, {}, {}
    tails = (1.0 - CATCH_LIMIT, 1.0 - HONEST_REFUSAL_LIMIT)
    for n in sizes:
        counts = simulate(population, n, reps, seed)
        low, high = np.quantile(needed_margins(counts, n, published, confidence), tails)
        needed[n] = (float(low), float(high))
        low, high = np.quantile(100.0 * counts / n - published, tails)
        spread[n] = (float(low), float(high))
        for margin in margins:
            simulated[(n, margin)] = refusal_rate(counts, n, published, margin, confidence)
            exact[(n, margin)] = exact_refusal_rate(population, n, published, margin, confidence)
    return Table(population, published, simulated, exact, needed, spread, sizes, margins)


def recommend(honest: Sequence[Table], limit: float = HONEST_REFUSAL_LIMIT, exact: bool = False) -> float | None:
    """The smallest margin of the tables' margins whose refusal rate is at most ``limit`` in every
    honest table at every n (None: no listed margin is wide enough)."""
    margins = sorted(set.intersection(*(set(t.margins) for t in honest))) if honest else []
    for margin in margins:
        if all(t.worst(margin, exact) <= limit for t in honest):
            return margin
    return None


def format_table(table: Table, honest: bool = True, exact: bool = False) -> list[str]:
    """Markdown: one row per n, one column per margin: percent of subsets refused (the same
    number is the catch rate of a broken reference); then where 99.8% of the subsets' figures sit
    from the published one (points), and the margin that n needs: an honest reference passes
    99.9% of subsets from it on, a broken one is caught in 99.9% below it."""
    rates = table.exact if exact else table.simulated
    last = "passes 99.9% from" if honest else "caught 99.9% below"
    head = "| n | " + " | ".join(f"{m:g}" for m in table.margins) + f" | subset - published | {last} |"
    lines = [head, "|---|" + "---:|" * (len(table.margins) + 2)]
    for n in table.sizes:
        cells = " | ".join(_percent(rates[(n, m)]) for m in table.margins)
        low, high = table.spread[n]
        needed = table.needed[n][1 if honest else 0]
        shown = f"{needed:.2f}" if honest or needed > 0 else "no margin"
        lines.append(f"| {table.population.how(n)} | {cells} | {low:+.1f} .. {high:+.1f} | {shown} |")
    return lines


def _percent(rate: float) -> str:
    if rate == 0.0:
        return "0"
    if rate == 1.0:
        return "100"
    return f"{100 * rate:.3f}" if rate < 0.01 or rate > 0.99 else f"{100 * rate:.1f}"
