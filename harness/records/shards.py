"""A sharded run's plan: which of the selected tests each of N runners runs (``--shard K/N``).

The selected tests are grouped (a model's tests form one group: its export, compile and torch
reference are built once, on one runner) and the groups dealt to the shards longest first, each to
the least loaded shard (LPT, "longest processing time first": its longest shard is at most 4/3 - 1/(3N)
of the best possible, and at most the mean load plus (1 - 1/N) of the longest group).

A group weighs the sum of its tests' durations in earlier results files (``duration_s`` of each
test's newest record, matched by node id); a test those files do not hold weighs the mean of the
ones they do, and with no durations at all every test weighs 1. The plan depends only on the set
of (node id, group) pairs and the durations: not on collection order, the process, or xdist, so
every runner given the same selection and the same durations computes the same plan. Its
``digest`` (SHA-256 of the whole assignment) is recorded by every shard, so the merge
(harness.records.merge) can check that the shards split the same selection the same way.

Why not pytest-split (PyPI): it balances single tests by its own ``.test_durations`` file and has no
way to keep a group of tests on one runner, so a model's export, compile and reference would be
built on several runners (docs/nightly.md, Sharding).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.records.results import Results


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N``: the K-th of N shards, 1 <= K <= N, ASCII digits only (at most 9 each); a ValueError
    saying what was expected otherwise. ``--shard`` (harness.options) and the merge read it so."""
    index, slash, count = text.partition("/")
    if not (slash and all(p.isascii() and p.isdigit() and len(p) <= 9 for p in (index, count))):
        raise ValueError(f"expected a shard K/N, the K-th of N runners (like 2/4), got {text!r}")
    k, n = int(index), int(count)
    if not 1 <= k <= n:
        raise ValueError(f"expected a shard K/N with 1 <= K <= N (like 2/4), got {text!r}")
    return k, n


@dataclass(frozen=True)
class Group:
    """Tests that run on one shard: one model's, or a test without a model alone."""

    key: str  # the model's name, or the node id of a test without one
    tests: tuple[str, ...]  # node ids, sorted
    weight: float  # seconds (or tests, without durations)


@dataclass(frozen=True)
class ShardPlan:
    """The groups of each shard (index 0 is shard 1/N), their loads and the plan's digest."""

    count: int
    shards: tuple[tuple[Group, ...], ...]
    loads: tuple[float, ...]
    digest: str

    def tests(self, index: int) -> frozenset[str]:
        """The node ids of shard ``index`` (1-based, as ``--shard K/N`` names it)."""
        return frozenset(t for g in self.shards[index - 1] for t in g.tests)

    @property
    def selected(self) -> int:
        return sum(len(g.tests) for groups in self.shards for g in groups)


def durations_of(results: Results) -> dict[str, float]:
    """Each test's duration in seconds, from its newest record holding a finite, non-negative one."""
    found: dict[str, float] = {}
    for _, _, record in results.records():
        value = record.meta.duration_s
        if record.meta.test and isinstance(value, (int, float)) and not isinstance(value, bool) and (
                math.isfinite(value) and value >= 0):
            found[record.meta.test] = float(value)
    return found


def _groups(tests: Iterable[tuple[str, str]], durations: Mapping[str, float]) -> list[Group]:
    members: dict[str, set[str]] = {}
    for node_id, key in tests:
        members.setdefault(key, set()).add(node_id)
    every = sorted({t for ids in members.values() for t in ids})
    known = [durations[t] for t in every if t in durations]
    default = math.fsum(known) / len(known) if known else 1.0
    return [Group(key, tuple(sorted(ids)), math.fsum(durations.get(t, default) for t in sorted(ids)))
            for key, ids in members.items()]


def plan_shards(tests: Iterable[tuple[str, str]], count: int, durations: Mapping[str, float]) -> ShardPlan:
    """Deal the groups of ``tests`` ((node id, group key) pairs) to ``count`` shards, longest first.

    Ties are broken by the group key; between shards of equal load, the one holding fewer groups takes
    the next (tests that all took 0.0 s, skips say, are dealt round, not all to shard 1), then the lower
    shard: the plan is a function of its inputs' contents alone. A node id given under two keys is a
    caller's error (ValueError).
    """
    if count < 1:
        raise ValueError(f"expected at least one shard, got {count}")
    groups = _groups(tests, durations)
    owners: dict[str, str] = {}
    for group in groups:
        for node_id in group.tests:
            if owners.setdefault(node_id, group.key) != group.key:
                raise ValueError(f"{node_id} is in two groups: {owners[node_id]} and {group.key}")
    loads = [0.0] * count
    shards: list[list[Group]] = [[] for _ in range(count)]
    for group in sorted(groups, key=lambda g: (-g.weight, g.key)):
        lightest = min(range(count), key=lambda i: (loads[i], len(shards[i]), i))
        shards[lightest].append(group)
        loads[lightest] += group.weight
    assignment = [[i + 1, g.key, list(g.tests)] for i, gs in enumerate(shards) for g in sorted(gs, key=lambda g: g.key)]
    digest = hashlib.sha256(json.dumps([count, assignment], separators=(",", ":")).encode()).hexdigest()
    return ShardPlan(count, tuple(tuple(gs) for gs in shards), tuple(loads), digest)
