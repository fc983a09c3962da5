"""Session fixtures: the run configuration and the Workbench that builds everything once; the test's record."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pytest

from harness.cache import default_cache_root
from harness.errors import HarnessError
from harness.pytest.plugin import selection
from harness.specs import ChipSpec, ModelSpec, Policy

if TYPE_CHECKING:  # the workbench pulls in numpy, PIL and (lazily) torch: not at plugin load
    from harness.records.schema import ResultRecord
    from harness.run.workbench import RunConfig, Workbench


def _path(value: str | None) -> Path | None:
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
        allow_download=not opt("--no-download"),
        preprocess_variant=opt("preprocess_variant"),
        opset=opt("--opset"),
        workers=opt("--workers"),
        threads=opt("--threads"),
        on_label_mismatch=opt("--on-label-mismatch"),
        input_dtype=opt("input_dtype"),
        decode=opt("--decode"),
        device_ids=selection(pytestconfig)["device_ids"],
    )


@pytest.fixture(scope="session")
def policy(pytestconfig: pytest.Config) -> Policy:
    return selection(pytestconfig)["policy"]


@pytest.fixture(scope="session")
def workbench(run_config: RunConfig, policy: Policy) -> Workbench:
    from harness.run.workbench import Workbench

    return Workbench(cfg=run_config, policy=policy)


@dataclass(frozen=True)
class PerfOptions:
    """The perf tests' command-line choices."""

    measurements: Path | None
    save_baseline: bool
    baselines_dir: Path | None
    batch_sizes: tuple[int, ...] | None  # --batch-sizes; None: each model's sweep

    def sizes_for(self, spec: ModelSpec) -> tuple[int, ...]:
        return self.batch_sizes or spec.batch_sizes


@pytest.fixture(scope="session")
def perf_options(pytestconfig: pytest.Config) -> PerfOptions:
    opt = pytestconfig.getoption
    return PerfOptions(
        measurements=_path(opt("--measurements")),
        save_baseline=bool(opt("--save-baseline")),
        baselines_dir=_path(opt("--baselines-dir")),
        batch_sizes=selection(pytestconfig)["explicit_batch_sizes"],
    )


@pytest.fixture(scope="session")
def chips(pytestconfig: pytest.Config) -> Mapping[str, ChipSpec]:
    """Every chip of fixtures/chips.toml (baseline chips included), by name."""
    return selection(pytestconfig)["all_chips"]


@pytest.fixture(scope="session")
def registry(pytestconfig: pytest.Config) -> Mapping[str, ModelSpec]:
    """Every model of fixtures/models.toml, by name (not only the selected ones)."""
    return selection(pytestconfig)["registry"]


class RecordWriter:
    """The running test's typed record (harness.records.schema), grown as the test learns.

    ``start`` sets the record with what is known up front (the configuration, the published
    figures); ``update`` replaces parts as they become known (``update(scores=..., judgement=...)``).
    After every call the record's properties are the test's JUnit properties, so a test that skips
    or fails half-way has recorded what it knew; the results file's line is built from them on the
    controller (harness.pytest.plugin.ResultsRecorder), once per test.
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
