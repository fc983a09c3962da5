"""The shards of one sharded night joined into one results file, after checking they make a whole.

Each shard of ``pytest --shard K/N`` (harness.pytest.shard) writes its own results file; its run
record says which shard it was, the plan's SHA-256 and the node ids it was given. The shards'
files come from other runners (not trusted: docs/security.md), so before anything is written:

- every run is a finished shard run (a run record with ``shard``): a killed shard has none;
- all runs split the same selection the same way (one ``shard_plan``, one N) on the same chips;
- each shard 1..N reported once; a shard that did not report is a failure naming it, unless the
  shards that did report account for the whole selection (N above the number of models leaves a
  shard with no test, and a run with no test writes no run record);
- no test was given to, or recorded by, two shards, nor recorded by a shard it was not given to.

The merged file holds every record of the shards, each run kept as its own run (its own host and
environment fingerprint: the report's runs table shows each runner), shard 1 first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import atomic_write_bytes
from harness.errors import HarnessError
from harness.records.results import Results, Run
from harness.records.shards import parse_shard


class ShardsIncomplete(HarnessError):
    """The shards given do not make one whole sharded run; ``problems`` says each way they do not."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class ShardSummary:
    """One shard as merged: its run, the tests it was given and recorded, their seconds."""

    index: int
    run: Run
    given: int
    recorded: int
    seconds: float


@dataclass
class Merged:
    count: int
    chips: tuple[str, ...]
    selected: int
    shards: list[ShardSummary] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)  # shards the plan gave no test (no run record)


def _where(run: Run) -> str:
    return f"run {run.run_id} ({', '.join(run.sources) or 'no file'})"


def _shard_of(run: Run, problems: list[str]) -> tuple[int, int] | None:
    if run.info is None:
        problems.append(f"{_where(run)} has test records but no run record: killed before it finished? "
                        "its shard cannot be told; rerun that shard")
        return None
    if run.info.shard is None:
        problems.append(f"{_where(run)} is not a shard run (no --shard K/N); merge only the shards' results files")
        return None
    try:
        return parse_shard(run.info.shard)
    except ValueError as exc:
        problems.append(f"{_where(run)}: shard: {exc}")
        return None


def check_shards(results: Results) -> Merged:
    """The shards of ``results`` checked to make one whole run (:class:`ShardsIncomplete` if not)."""
    problems: list[str] = []
    shards: dict[int, Run] = {}
    counts, plans, chip_sets, selections = set(), set(), set(), set()
    for run in results.runs:
        found = _shard_of(run, problems)
        if found is None or run.info is None:
            continue
        index, count = found
        counts.add(count)
        plans.add(run.info.shard_plan)
        chip_sets.add(run.info.chips)
        selections.add(run.info.shard_selected)
        if index in shards:
            problems.append(f"shard {index}/{count} reported twice: {_where(shards[index])} and {_where(run)}")
            continue
        shards[index] = run
    if len(counts) > 1:
        problems.append(f"the runs are shards of different splits ({', '.join(f'N={n}' for n in sorted(counts))}): "
                        "merge the shards of one night")
    if len(plans) > 1 or len(selections) > 1:
        problems.append("the shards split different selections (their shard_plan differ: other --models, -m, "
                        "--chip, fixtures/ or --shard-durations); run every shard with the same command but --shard")
    if len(chip_sets) > 1:
        problems.append(f"the shards ran different chips ({'; '.join(', '.join(c) for c in sorted(chip_sets))}): "
                        "merge one chip's shards at a time")
    if not shards and not problems:
        problems.append("no shard runs in the files given")
    if problems:
        raise ShardsIncomplete(problems)
    count = counts.pop()
    selected = selections.pop() or 0
    merged = Merged(count=count, chips=chip_sets.pop(), selected=selected)
    owner: dict[str, int] = {}
    for index in sorted(shards):
        info = shards[index].info
        assert info is not None
        for test in info.shard_tests:
            if test in owner:
                problems.append(f"{test} was given to shard {owner[test]}/{count} and to shard {index}/{count}")
            owner.setdefault(test, index)
    recorder: dict[str, int] = {}
    for index in sorted(shards):
        run = shards[index]
        for record in run.records:
            test = str(record.meta.test)
            if recorder.setdefault(test, index) != index:
                problems.append(f"{test} recorded by shard {recorder[test]}/{count} and shard {index}/{count}")
            elif owner.get(test) != index:
                given = f"shard {owner[test]}/{count}" if test in owner else "no shard"
                problems.append(f"{test} recorded by shard {index}/{count} but the plan gave it to {given}")
    missing = [k for k in range(1, count + 1) if k not in shards]
    if missing and len(owner) != selected:
        problems += [f"shard {k}/{count} did not report (no run record of shard {k}/{count} in the files given): "
                     f"the shards that did hold {len(owner)} of the {selected} selected tests" for k in missing]
    elif len(owner) != selected:
        problems.append(f"the shards were given {len(owner)} tests, but the selection holds {selected}")
    if problems:
        raise ShardsIncomplete(problems)
    merged.empty = missing
    for index in sorted(shards):
        run = shards[index]
        assert run.info is not None
        seconds = sum(r.meta.duration_s or 0.0 for r in run.records)
        merged.shards.append(ShardSummary(index, run, len(run.info.shard_tests), len(run.records), seconds))
    return merged


def write_merged(merged: Merged, out: Path) -> int:
    """Every record of the shards, shard by shard (tests, then the run record), to ``out``
    (replaced atomically); the number of lines written."""
    import json

    lines: list[str] = []
    for shard in merged.shards:
        lines += [json.dumps(r.to_json(), default=str) for r in shard.run.records]
        if shard.run.info is not None:
            lines.append(json.dumps(shard.run.info.to_json(), default=str))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, "".join(line + "\n" for line in lines).encode())
    return len(lines)
