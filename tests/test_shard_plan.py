"""The shard plan (harness.records.shards) and the --shard option's parser (harness.options.shard)."""

from __future__ import annotations

import argparse
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.options import SHARD, shard
from harness.records.shards import plan_shards

# (node id, group) pairs: up to 12 groups ("model m3") of 1-4 tests, each with a duration or none
groups = st.dictionaries(st.integers(0, 40).map(lambda i: f"model m{i}"), st.integers(1, 4), min_size=0, max_size=12)
seconds = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)


def _tests(sizes: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"acceptance/test_x.py::test_{t}[{key.split()[1]}-cpu]", key)
            for key, n in sizes.items() for t in range(n)]


@st.composite
def selections(draw: st.DrawFn) -> tuple[list[tuple[str, str]], dict[str, float], int]:
    tests = _tests(draw(groups))
    durations = {t: draw(seconds) for t, _ in tests if draw(st.booleans())}
    return tests, durations, draw(st.integers(1, 6))


@settings(max_examples=200, deadline=None)
@given(selections())
def test_every_test_in_exactly_one_shard_and_no_model_spans_shards(case: tuple) -> None:
    tests, durations, count = case
    plan = plan_shards(tests, count, durations)
    shards_of = [plan.tests(k) for k in range(1, count + 1)]
    assert sum(len(s) for s in shards_of) == len({t for t, _ in tests}) == plan.selected
    assert set().union(*shards_of) == {t for t, _ in tests}
    for group in {g for _, g in tests}:
        holding = [k for k, s in enumerate(shards_of) if any(t in s for t, key in tests if key == group)]
        assert len(holding) == 1, (group, holding)


@settings(max_examples=200, deadline=None)
@given(selections(), st.randoms(use_true_random=False))
def test_the_plan_depends_on_the_selection_not_its_order(case: tuple, rnd: random.Random) -> None:
    tests, durations, count = case
    shuffled = list(tests)
    rnd.shuffle(shuffled)
    first, again = plan_shards(tests, count, durations), plan_shards(shuffled, count, dict(reversed(durations.items())))
    assert first.digest == again.digest
    assert [first.tests(k) for k in range(1, count + 1)] == [again.tests(k) for k in range(1, count + 1)]


def _optimum(weights: list[float], count: int) -> float:
    """The best possible longest shard, by trying every assignment (small cases only)."""
    best = float("inf")
    for assignment in itertools.product(range(count), repeat=len(weights)):
        loads = [0.0] * count
        for weight, shard_index in zip(weights, assignment, strict=True):
            loads[shard_index] += weight
        best = min(best, max(loads))
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.5, 100, allow_nan=False), min_size=1, max_size=7), st.integers(1, 3))
def test_the_longest_shard_is_within_the_lpt_bounds(weights: list[float], count: int) -> None:
    tests = [(f"t{i}", f"model m{i}") for i in range(len(weights))]
    plan = plan_shards(tests, count, {f"t{i}": w for i, w in enumerate(weights)})
    longest = max(plan.loads)
    assert longest <= sum(weights) / count + (1 - 1 / count) * max(weights) + 1e-9  # list scheduling
    assert longest <= (4 / 3 - 1 / (3 * count)) * _optimum(weights, count) + 1e-9  # Graham's LPT bound


def test_a_model_weighs_the_sum_of_its_tests_and_unknown_tests_the_mean_of_the_known() -> None:
    tests = [("a1", "model a"), ("a2", "model a"), ("b1", "model b"), ("c1", "model c")]
    plan = plan_shards(tests, 2, {"a1": 10.0, "a2": 30.0, "b1": 20.0})  # c1 unknown: the mean, 20
    weights = {g.key: g.weight for groups in plan.shards for g in groups}
    assert weights == {"model a": 40.0, "model b": 20.0, "model c": 20.0}
    assert plan.tests(1) == {"a1", "a2"} and plan.tests(2) == {"b1", "c1"}
    assert plan.loads == (40.0, 40.0)


def test_without_durations_every_test_weighs_one_and_ties_go_by_name() -> None:
    plan = plan_shards([("x", "model b"), ("y", "model a")], 2, {})
    assert plan.tests(1) == {"y"} and plan.tests(2) == {"x"}


@pytest.mark.parametrize("count", [2, 3, 5])
def test_tests_that_took_no_time_are_dealt_round_not_all_to_shard_one(count: int) -> None:
    """A night of skips (`-m accuracy` without --imagenet): every duration 0.0, every shard gets a share."""
    tests = _tests({f"model m{i}": 2 for i in range(8)})
    plan = plan_shards(tests, count, dict.fromkeys((t for t, _ in tests), 0.0))
    sizes = [len(groups) for groups in plan.shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 8, sizes


def test_more_shards_than_groups_leaves_shards_empty() -> None:
    plan = plan_shards([("x", "model a")], 3, {})
    assert [len(plan.tests(k)) for k in (1, 2, 3)] == [1, 0, 0]


def test_a_test_in_two_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="x is in two groups"):
        plan_shards([("x", "model a"), ("x", "model b")], 2, {})


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("2/4", (2, 4)), ("4/4", (4, 4))])
def test_shard_parses(text: str, expected: tuple[int, int]) -> None:
    assert shard(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "with 1 <= K <= N (like 2/4), got '0/3'"),
    ("4/3", "with 1 <= K <= N (like 2/4), got '4/3'"),
    ("a/b", "expected a shard K/N, the K-th of N runners (like 2/4), got 'a/b'"),
    ("1-3", "expected a shard K/N, the K-th of N runners (like 2/4), got '1-3'"),
    ("1/", "got '1/'"), ("/2", "got '/2'"), ("+1/2", "got '+1/2'"), ("1/2/3", "got '1/2/3'"),
])
def test_bad_shards_stop_the_parse_with_one_line(text: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="pytest")
    SHARD.add_to(parser)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--shard", text])
    assert stop.value.code == 2
    assert "pytest: error: argument --shard: expected a shard K/N" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        shard(text)
    assert message in str(refused.value)
