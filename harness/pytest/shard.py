"""``--shard K/N``: run the K-th of N shards of the selected tests, each model's tests in one shard.

After ``-m`` / ``-k`` have selected (``trylast``), the selection is planned by
:func:`harness.records.shards.plan_shards` (a model's tests are one group; groups weighed by the
durations in ``--shard-durations``, dealt longest first to the least loaded shard) and every test
of the other shards is deselected (``pytest_deselected``: "N deselected" in pytest's summary, and
in the JUnit only this shard's tests). Under pytest-xdist each worker plans the same collection to
the same plan; the controller, which writes the results file, takes it from the workers' output.

The run record (kind ``run``) then holds ``shard`` ("K/N"), ``shard_plan`` (the plan's SHA-256: the
same on every shard of one selection), ``shard_selected`` and ``shard_tests`` (this shard's node
ids): ``python -m harness merge`` checks with them that every shard reported, once, on the same
selection (harness.records.merge).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.records.shards import ShardPlan, durations_of, plan_shards


@dataclass(frozen=True)
class ShardRun:
    """What this process ran of the plan, for the run record and the terminal."""

    index: int
    count: int
    plan: str  # the plan's SHA-256
    selected: int  # tests of the whole selection
    tests: tuple[str, ...]  # this shard's node ids, in run order
    groups: tuple[str, ...]  # this shard's group keys (models), sorted
    load: float
    total: float
    weighed_by: str

    def fields(self) -> dict[str, Any]:
        """The run record's shard fields (harness.records.schema.RunRecord)."""
        return {"shard": f"{self.index}/{self.count}", "shard_plan": self.plan, "shard_selected": self.selected,
                "shard_tests": self.tests}

    def describe(self) -> str:
        return (f"shard {self.index}/{self.count}: {len(self.tests)} of {self.selected} selected tests, "
                f"{len(self.groups)} group(s) ({', '.join(self.groups[:6])}{' ...' if len(self.groups) > 6 else ''}), "
                f"planned load {self.load:.1f} of {self.total:.1f} ({self.weighed_by}); plan {self.plan[:12]}")


_DURATIONS = pytest.StashKey[tuple[dict[str, float], str]]()
_RUN = pytest.StashKey[ShardRun]()
_WORKER_KEY = "mzc_shard"


def _durations(path: Path | None) -> tuple[dict[str, float], str]:
    """The durations of ``--shard-durations`` and how the plan is weighed, said in words."""
    if path is None:
        return {}, "no --shard-durations: every test weighs 1"
    if not path.exists():
        return {}, f"--shard-durations {path} not found: every test weighs 1"
    from harness.records.results import ResultsError, load_results

    try:
        durations = durations_of(load_results(path))
    except ResultsError:  # a folder without results yet: the first night
        durations = {}
    if not durations:
        return {}, f"no test durations in {path}: every test weighs 1"
    return durations, f"seconds, from {len(durations)} test durations in {path}"


def pytest_configure(config: pytest.Config) -> None:
    durations = config.getoption("--shard-durations")
    if durations is not None and config.getoption("--shard") is None:
        raise pytest.UsageError("--shard-durations balances the shards of --shard K/N: give --shard too, "
                                "or leave --shard-durations out")
    if config.getoption("--shard") is not None:
        config.stash[_DURATIONS] = _durations(durations)


def _group_key(item: pytest.Item) -> str:
    """The model a test certifies (its ``model_spec`` parameter), else its own node id."""
    spec = getattr(getattr(item, "callspec", None), "params", {}).get("model_spec")
    name = getattr(spec, "name", None)
    return f"model {name}" if isinstance(name, str) else item.nodeid


@pytest.hookimpl(trylast=True)  # after -m / -k: the plan splits what they selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    given = config.getoption("--shard")
    if given is None:
        return
    index, count = given
    durations, weighed_by = config.stash[_DURATIONS]
    plan = plan_shards(((item.nodeid, _group_key(item)) for item in items), count, durations)
    mine = plan.tests(index)
    kept = [item for item in items if item.nodeid in mine]
    deselected = [item for item in items if item.nodeid not in mine]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    run = _run(plan, index, kept, weighed_by)
    config.stash[_RUN] = run
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller writes the run record
        config.workeroutput[_WORKER_KEY] = run.__dict__


def _run(plan: ShardPlan, index: int, kept: list[pytest.Item], weighed_by: str) -> ShardRun:
    groups = plan.shards[index - 1]
    return ShardRun(index=index, count=plan.count, plan=plan.digest, selected=plan.selected,
                    tests=tuple(item.nodeid for item in kept), groups=tuple(sorted(g.key for g in groups)),
                    load=plan.loads[index - 1], total=sum(plan.loads), weighed_by=weighed_by)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's; the controller learns the plan from a worker
def pytest_testnodedown(node: Any, error: Any) -> None:
    output = getattr(node, "workeroutput", None) or {}
    found = output.get(_WORKER_KEY)
    if isinstance(found, dict) and _RUN not in node.config.stash:
        node.config.stash[_RUN] = ShardRun(**{**found, "tests": tuple(found["tests"]),
                                              "groups": tuple(found["groups"])})


def shard_fields(config: pytest.Config) -> dict[str, Any]:
    """The run record's shard fields; none for a run without ``--shard``."""
    run = config.stash.get(_RUN, None)
    return run.fields() if run is not None else {}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is not None:
        terminalreporter.write_line(run.describe())
