"""The pytest plugin: options, parametrization from the registry, results file, terminal summary.

Hooks only; the work happens in harness.run.workbench, the fixtures in harness.pytest.fixtures, the
results file is written by harness.pytest.recorder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.options import PYTEST_OPTIONS
from harness.pytest.recorder import ResultsRecorder, check_output_paths
from harness.pytest.state import STATE, SessionState, session_state
from harness.specs import (
    ChipSpec,
    SpecError,
    load_chips,
    load_models,
    load_policy,
    resolve_chip,
    resolve_models,
)

pytest_plugins = ["harness.pytest.fixtures", "harness.pytest.outcomes", "harness.pytest.certification",
                  "harness.pytest.shard"]

# Registered by the plugin, not an ini-file, so they hold wherever pytest finds its configuration.
MARKERS = {
    "accuracy": "certify a compiled model's top-1/top-5 on ImageNet val against the published numbers",
    "conversion": "torch -> ONNX export and parity with torch (seeded random weights)",
    "agreement": "compiled model agrees with the torch reference on the same images",
    "perf": "throughput certification (batch sweep, ratio gates)",
    "slow": "takes more than a few seconds (real models, real data)",
    "requires_option(name)": "certifies only when the run gives this option (e.g. --predictions); "
                             "--strict-certification leaves its skip a skip otherwise",
}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Before the first conftest loads: take this plugin's option values for values, not test paths.

    Runs only when the plugin is loaded early (the ``pytest11`` entry point of the installed
    package); loaded from conftest.py it is too late, and ``--option=value`` is needed.
    """
    from harness.pytest.rootdir import reroot

    reroot(early_config, args)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The lab hooks (harness.pytest.hookspec, docs/extending.md)."""
    from harness.pytest import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every option as harness.options declares it: values are checked as the command line is parsed."""
    group = parser.getgroup("modelzoo-cert", "model-zoo certification")
    for option in PYTEST_OPTIONS:
        option.add_to(group)


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the options against fixtures/ into the session's :class:`SessionState`.

    Each value was checked alone at parse time (harness.options); what needs the registry, another
    option or the rootdir is checked here, a usage error (exit 4) before any test runs.
    """
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    opt = config.getoption
    try:
        registry = load_models()
        chips = load_chips()
        policy = load_policy()
        if opt("--inconclusive"):  # a policy field: the policy is read here
            policy = replace(policy, accuracy=replace(policy.accuracy, inconclusive=opt("--inconclusive")))
        # curated names, tv:/timm: library names and globs (harness.specs.library); default: every curated model
        selected = resolve_models(list(opt("--models") or ()), registry)
        registry = {**registry, **selected}
        selected_chips = tuple(_override(resolve_chip(chips, c), config) for c in opt("--chip") or ("cpu",))
        explicit_sizes: tuple[int, ...] = opt("--batch-sizes") or ()
        if opt("--measurements") and opt("--save-baseline"):  # two options
            raise SpecError("--save-baseline saves figures measured here; with --measurements nothing is measured")
        if not hasattr(config, "workerinput"):  # the controller writes; xdist workers only compute (the rootdir)
            check_output_paths(_under_root(config, opt("--results")), _output_dirs(config))
    except UsageError as exc:  # SpecError, and any other option or fixtures/ data the harness refuses
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = SessionState(
        registry=registry,
        models=tuple(registry[n] for n in selected),
        chips=selected_chips,
        all_chips=chips,
        policy=policy,
        batch_sizes=explicit_sizes or policy.accuracy.batch_sizes,
        explicit_batch_sizes=explicit_sizes or None,
        device_ids=opt("--device-ids"),
        localize=bool(opt("localize")),
        localize_dir=_under_root(config, opt("--localize-dir") or Path(opt("--report-dir")) / "localize"),
    )
    if not hasattr(config, "workerinput"):
        recorder = ResultsRecorder(config, _under_root(config, opt("--results")), config.stash[STATE])
        config.pluginmanager.register(recorder, "modelzoo-cert-results")


def _output_dirs(config: pytest.Config) -> list[tuple[str, Path]]:
    """The directories this run may write to, checked at start-up (harness.pytest.recorder)."""
    report_dir = _under_root(config, config.getoption("--report-dir"))
    localize, localize_given = bool(config.getoption("localize")), config.getoption("--localize-dir")
    dirs = []
    if not config.getoption("--no-report") or (localize and not localize_given):  # reports, or <report-dir>/localize
        dirs.append(("--report-dir", report_dir))
    if localize and localize_given:
        dirs.append(("--localize-dir", _under_root(config, localize_given)))
    if config.getoption("--save-baseline"):
        from harness.judge.baselines import BASELINES_DIR

        dirs.append(("--baselines-dir", Path(config.getoption("--baselines-dir") or BASELINES_DIR)))
    return dirs


def _under_root(config: pytest.Config, path: str | Path) -> Path:
    """A path option: relative ones are taken from the rootdir, as --results and --report-dir are."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(config.rootpath) / path


def localize_dir(config: pytest.Config, test_name: str) -> Path:
    """The folder of one test's localisation: ``<--localize-dir>/<test name, made a file name>``, a
    test ``function[parameters]`` as ``function-<parameters>`` (``test_accuracy-efficientnet_lite0-cpu-bs8``),
    the parameters (model names: data) made one safe file name by harness.safe_names.safe_component:
    never outside --localize-dir, and two tests never share a folder."""
    from harness.safe_names import inside, safe_component

    base = session_state(config).localize_dir
    function, bracket, params = test_name.partition("[")
    if bracket and params.endswith("]") and function.isascii() and function.isidentifier() and len(function) <= 80:
        return inside(base, base / f"{function}-{safe_component(params[:-1])}")
    return inside(base, base / safe_component(test_name))


def _override(chip: ChipSpec, config: pytest.Config) -> ChipSpec:
    """The chip as --backend / --precision ask to run it (other backends get no chip options; the
    precision was checked at parse time, the backend's registration is checked here)."""
    backend, precision = config.getoption("--backend"), config.getoption("--precision")
    if backend and backend != chip.backend:
        from harness.backends.base import known_backends  # here, not at parse time: see options.backend_name

        if backend not in known_backends():
            raise SpecError(f"unknown --backend {backend!r}; known backends: {', '.join(known_backends())}")
        chip = replace(chip, backend=backend, backend_options={})
    if precision:
        chip = replace(chip, precision=precision)
    return chip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = session_state(metafunc.config)
    if "model_spec" in metafunc.fixturenames:
        metafunc.parametrize("model_spec", state.models, ids=[m.name for m in state.models])
    if "perf_rule" in metafunc.fixturenames:
        params = []
        for chip in state.chips:
            if not chip.rules:
                params.append(pytest.param(chip, None, id=f"{chip.name}-no-rules", marks=pytest.mark.skip(
                    reason=f"{chip.name} has no throughput rules in fixtures/chips.toml (nothing to compare with)")))
            params.extend(pytest.param(chip, rule, id=f"{chip.name}-vs-{rule.baseline}") for rule in chip.rules)
        metafunc.parametrize(("chip_spec", "perf_rule"), params)
    elif "chip_spec" in metafunc.fixturenames:
        metafunc.parametrize("chip_spec", state.chips, ids=[c.name for c in state.chips])
    if "batch_size" in metafunc.fixturenames:
        metafunc.parametrize("batch_size", state.batch_sizes, ids=[f"bs{b}" for b in state.batch_sizes])
