"""Session fixtures: the run configuration and the Workbench that builds everything once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import pytest

from harness.cache import default_cache_root
from harness.pytest.plugin import selection
from harness.specs import ChipSpec, ModelSpec, Policy

if TYPE_CHECKING:  # the workbench pulls in numpy, PIL and (lazily) torch: not at plugin load
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


@pytest.fixture
def record(record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """``record(kind="accuracy", top1=...)``: JUnit properties (and the results file) in one call."""

    def _record(**props: Any) -> None:
        for key, value in props.items():
            record_property(key, value)

    return _record
