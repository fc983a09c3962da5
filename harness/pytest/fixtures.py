"""Session fixtures: the run configuration and the Workbench that builds everything once; the test's record.

At the end of a session that used the workbench, its stage clock (harness.run.stages) is written
atomically to ``<report-dir>/stages.json`` (none with ``--no-report``): the seconds and calls per
stage, the session's start (``started_at``, epoch seconds), its wall time from
``pytest_sessionstart`` to the end of ``pytest_sessionfinish`` (``session_seconds``) and that
finish alone (``session_finish_seconds``: the results file's run line, the report and the
fixtures' teardown). Under pytest-xdist every worker has its own
workbench and writes its own ``stages-<worker>.json`` (``stages-gw0.json``...); nothing merges
them, and the controller, which writes the results and the report, has no workbench and writes
no stage file, so its finish is not measured there.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.cache import default_cache_root
from harness.errors import HarnessError
from harness.pytest.state import session_state
from harness.specs import SINGLE_STREAM, ChipSpec, ModelSpec, Policy

if TYPE_CHECKING:  # the workbench pulls in numpy, PIL and (lazily) torch: not at plugin load
    from harness.records.schema import ResultRecord
    from harness.run.workbench import RunConfig, Workbench


def _path(value: str | Path | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


@pytest.fixture(scope="session")
def run_config(pytestconfig: pytest.Config) -> RunConfig:
    from harness.run.workbench import RunConfig

    opt = pytestconfig.getoption
    cache_dir = _path(opt("--cache-dir")) or default_cache_root()
    return RunConfig(
        imagenet=_path(opt("--imagenet")),
        imagenet_labels=_path(opt("--imagenet-labels")),
        limit=opt("--limit"),
        weights=opt("--weights"),
        weights_dir=_path(opt("--weights-dir")) or cache_dir / "weights",
        cache_dir=cache_dir,
        verify_cache=opt("--verify-cache"),
        allow_download=not opt("--no-download"),
        preprocess_variant=opt("preprocess_variant"),
        opset=opt("--opset"),
        workers=opt("--workers"),
        threads=opt("--threads"),
        on_label_mismatch=opt("--on-label-mismatch"),
        input_dtype=opt("input_dtype"),
        decode=opt("--decode"),
        device_ids=session_state(pytestconfig).device_ids,
        calibration=_path(opt("--calibration")),
        keep_float=opt("--keep-float"),
    )


@pytest.fixture(scope="session")
def policy(pytestconfig: pytest.Config) -> Policy:
    return session_state(pytestconfig).policy


@dataclass
class _SessionClock:
    """The session's start and its workbench, for the stage file written at the end; filled as the
    session goes (the start at ``pytest_sessionstart``, the workbench when a test first asks for it)."""

    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    workbench: Workbench | None = None


_SESSION = pytest.StashKey[_SessionClock]()


@pytest.fixture(scope="session")
def workbench(run_config: RunConfig, policy: Policy, pytestconfig: pytest.Config) -> Workbench:
    from harness.run.workbench import Workbench

    bench = Workbench(cfg=run_config, policy=policy)
    pytestconfig.stash.setdefault(_SESSION, _SessionClock()).workbench = bench
    return bench


def stages_path(config: pytest.Config) -> Path:
    """``<report-dir>/stages.json``, or ``stages-<worker>.json`` in a pytest-xdist worker."""
    out = Path(config.getoption("--report-dir")).expanduser()
    out = out if out.is_absolute() else Path(config.rootpath) / out
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return out / (f"stages-{worker}.json" if worker else "stages.json")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = _SessionClock()


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    """Around every other finish (results, report, teardown): then write the workbench's stages."""
    finishing = time.perf_counter()
    try:
        return (yield)
    finally:
        _write_stages(session.config, finishing, int(exitstatus))


def _write_stages(config: pytest.Config, finishing: float, exitstatus: int) -> None:
    clock = config.stash.get(_SESSION, None)
    bench = clock.workbench if clock is not None else None
    if clock is None or bench is None or config.getoption("--no-report"):
        return
    from harness.run.stages import write_stages

    now = time.perf_counter()
    path = stages_path(config)
    try:
        write_stages(path, bench.clock, worker=os.environ.get("PYTEST_XDIST_WORKER"), host=socket.gethostname(),
                     pid=os.getpid(), exit_status=exitstatus, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     started_at=clock.started_at, session_seconds=round(now - clock.started, 6),
                     session_finish_seconds=round(now - finishing, 6))
    except OSError as exc:  # a measurement, never a lost run
        print(f"warning: stage times not written to {path}: {exc}", file=sys.stderr)


@dataclass(frozen=True)
class PerfOptions:
    """The perf tests' command-line choices."""

    measurements: Path | None
    save_baseline: bool
    baselines_dir: Path | None
    batch_sizes: tuple[int, ...] | None  # --batch-sizes; None: each model's sweep
    scenario: str = SINGLE_STREAM  # --scenario
    compare_vendor_tool: bool = False  # --compare-vendor-tool

    def sizes_for(self, spec: ModelSpec) -> tuple[int, ...]:
        return self.batch_sizes or spec.batch_sizes


@pytest.fixture(scope="session")
def perf_options(pytestconfig: pytest.Config) -> PerfOptions:
    opt = pytestconfig.getoption
    return PerfOptions(
        measurements=_path(opt("--measurements")),
        save_baseline=bool(opt("--save-baseline")),
        baselines_dir=_path(opt("--baselines-dir")),
        batch_sizes=session_state(pytestconfig).explicit_batch_sizes,
        scenario=opt("--scenario"),
        compare_vendor_tool=bool(opt("--compare-vendor-tool")),
    )


@pytest.fixture(scope="session")
def chips(pytestconfig: pytest.Config) -> Mapping[str, ChipSpec]:
    """Every chip of fixtures/chips.toml (baseline chips included), by name."""
    return session_state(pytestconfig).all_chips


@pytest.fixture(scope="session")
def registry(pytestconfig: pytest.Config) -> Mapping[str, ModelSpec]:
    """Every model of fixtures/models.toml, by name (not only the selected ones)."""
    return session_state(pytestconfig).registry


class RecordWriter:
    """The running test's typed record (harness.records.schema), grown as the test learns.

    ``start`` sets the record with what is known up front (the configuration, the published
    figures); ``update`` replaces parts as they become known (``update(scores=..., judgement=...)``).
    After every call the record's properties are the test's JUnit properties, so a test that skips
    or fails half-way has recorded what it knew; the results file's line is built from them on the
    controller (harness.pytest.recorder.ResultsRecorder), once per test.
    """

    def __init__(self, node: pytest.Item):
        self._node = node
        self._current: ResultRecord | None = None

    @property
    def current(self) -> ResultRecord:
        if self._current is None:
            raise HarnessError("record.start(<a ResultRecord>) must come before record.current / record.update()")
        return self._current

    def start(self, record: ResultRecord) -> None:
        self._current = record
        self._sync()

    def update(self, **parts: Any) -> None:
        """Replace fields of the record (``dataclasses.replace``: an unknown field name is an error)."""
        self._current = replace(self.current, **parts)
        self._sync()

    def _sync(self) -> None:
        """JUnit properties = the record's properties: known keys updated in place, new ones appended,
        keys no longer recorded removed (each name appears once)."""
        props = self.current.properties()
        kept = [(k, props.pop(k)) for k, _ in self._node.user_properties if k in props]
        self._node.user_properties[:] = [*kept, *props.items()]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> RecordWriter:
    """The test's record: ``record.start(AccuracyRecord(config=...))``, then ``record.update(...)``."""
    return RecordWriter(request.node)
