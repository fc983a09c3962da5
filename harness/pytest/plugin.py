"""The pytest plugin: options, parametrization from the registry, results file, terminal summary.

Hooks only; the work happens in harness.run.workbench, the fixtures in harness.pytest.fixtures, the
results file is written by harness.pytest.recorder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UsageError
from harness.pytest.recorder import ResultsRecorder, check_output_paths
from harness.specs import (
    PRECISIONS,
    SCENARIOS,
    SINGLE_STREAM,
    ChipSpec,
    ModelSpec,
    SpecError,
    load_chips,
    load_models,
    load_policy,
    resolve_chip,
    resolve_models,
)

pytest_plugins = ["harness.pytest.fixtures", "harness.pytest.outcomes", "harness.pytest.certification"]

_STATE = pytest.StashKey[dict[str, Any]]()

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


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("modelzoo-cert", "model-zoo certification")
    g.addoption("--imagenet", metavar="DIR", help="ImageNet val: DIR/val/*.JPEG + DIR/val_label.txt (ModelZoo), or DIR/val/<wnid>/*.JPEG (ImageFolder)")
    g.addoption("--imagenet-labels", metavar="FILE", help="label file if not DIR/val_label.txt")
    g.addoption("--limit", type=int, metavar="N", help="certify on a deterministic subset of N images")
    g.addoption("--inconclusive", choices=["fail", "allow"],
                help="an inconclusive verdict (too few images to decide) fails the test, or is allowed (recorded as "
                     "inconclusive, the test passes); default: fixtures/policy.toml [accuracy] inconclusive")
    g.addoption("--models", metavar="A,B", help="comma-separated models: fixtures/models.toml names, torchvision / timm "
                "names (tv:resnet50, tv:resnet50.IMAGENET1K_V2, timm:resnest50d.in1k) or globs (tv:*, timm:resnext*); "
                "default: every fixtures/models.toml model")
    g.addoption("--chip", default="cpu", metavar="CHIP[,CHIP]", help="chip(s) from fixtures/chips.toml (default: cpu)")
    g.addoption("--backend", metavar="NAME",
                help="run the chip(s) on another backend (e.g. openvino on cpu); default: the chip's in chips.toml")
    g.addoption("--precision", choices=list(PRECISIONS),
                help="compile at this precision (fp32, fp16, bf16); default: the chip's in chips.toml")
    g.addoption("--input", dest="input_dtype", choices=["float32", "uint8"], default="float32",
                help="uint8: fold normalization into the model and feed the uint8 cache as is (4x less host-to-device traffic)")
    g.addoption("--decode", choices=["exact", "draft"], default="exact",
                help="JPEG decoding for the preprocessing cache: exact (default, bit-identical with torchvision) or "
                "draft (libjpeg DCT-domain downscaling of JPEGs at least twice the resize target: faster on large "
                "photos, different pixels, cached separately and recorded)")
    g.addoption("--batch-sizes", metavar="1,16",
                help="batch sizes (default: accuracy: fixtures/policy.toml; perf: the model's sweep in models.toml)")
    g.addoption("--weights", choices=["pretrained", "random"], default="pretrained",
                help="pretrained checkpoints (checksum-verified) or seeded random weights (conversion checks only)")
    g.addoption("--weights-dir", metavar="DIR", help="where checkpoints are found / downloaded (default: <cache>/weights)")
    g.addoption("--cache-dir", metavar="DIR", help="artifact cache (default: $MZC_CACHE_DIR or ~/.cache/modelzoo-cert)")
    g.addoption("--verify-cache", action="store_true",
                help="hash every file of every cache entry read, the large ones too (a dataset's pixels: ~5 s per 50,000 "
                "images), instead of checking files over 256 MiB by size; entries that fail are rebuilt")
    g.addoption("--no-download", action="store_true", help="never download weights; fail if absent")
    g.addoption("--preprocess", dest="preprocess_variant", metavar="VARIANT",
                help="a preprocessing variant of the model (e.g. modelzoo); default: the upstream recipe")
    g.addoption("--opset", type=int, default=11, help="ONNX opset for export (default 11, what ATC supports)")
    g.addoption("--workers", type=int, metavar="N", help="preprocessing processes (default: all cores)")
    g.addoption("--threads", type=int, metavar="N", help="inference threads for CPU backends (default: all cores)")
    g.addoption("--on-label-mismatch", choices=["error", "intersect"], default="error",
                help="images without labels / labels without images: fail (default) or score the intersection")
    g.addoption("--measurements", metavar="FILE|DIR",
                help="perf: the chip under test's figures measured elsewhere (baseline-format CSV, or ais_bench "
                "*_summary.json files under <model>/bs<N>/) instead of measuring here")
    g.addoption("--save-baseline", action="store_true",
                help="perf: write this run's figures into <baselines-dir>/<chip>.csv (rows of the same model and batch replaced)")
    g.addoption("--baselines-dir", metavar="DIR", help="perf baselines, one <chip>.csv each (default: fixtures/baselines)")
    g.addoption("--scenario", choices=list(SCENARIOS), default=SINGLE_STREAM,
                help="perf: single-stream (one request at a time: latency percentiles; default) or offline (as many "
                "requests in flight as the backend's throughput mode uses: images/s only); ratios compare figures "
                "of one scenario and clock")
    g.addoption("--compare-vendor-tool", action="store_true",
                help="perf: also measure the best batch with the vendor's own tool (OpenVINO benchmark_app, ais_bench, "
                "trtexec) in the same scenario and record both figures and their ratio (docs/vendor-parity.md)")
    g.addoption("--device-ids", metavar="0,1,2,3",
                help="devices to run on (Ascend: the Device column of npu-smi info); under pytest-xdist worker gwN "
                "takes the N-th (modulo), so perf runs may use -n up to the number of devices; in one process, "
                "several devices of a card are also measured together at the best batch (per_card_measured)")
    g.addoption("--predictions", metavar="DIR",
                help="accuracy: certify an ais_bench output folder ({image}_0.txt|.npy|.bin per image) or a ModelZoo "
                "result.json produced elsewhere, against the labels (--imagenet / --imagenet-labels); one model "
                "(--models) or one sub-folder per model")
    g.addoption("--results", metavar="FILE", default="reports/results.jsonl",
                help="JSON-lines record of every result (appended)")
    g.addoption("--report-dir", metavar="DIR", default="reports",
                help="where the end of the run writes report.md, report.html and plots/ from the whole --results "
                "file (this run and the history before it); default: reports/")
    g.addoption("--no-report", action="store_true", help="do not write the report at the end of the run")
    g.addoption("--localize-on-fail", dest="localize", action="store_true", default=True,
                help="when an accuracy or agreement gate's verdict is fail, localise the loss layer by layer on the 16 "
                "most divergent images and record the first divergent node (the default; docs/localize.md)")
    g.addoption("--no-localize", dest="localize", action="store_false",
                help="do not localise a failed accuracy or agreement gate")
    g.addoption("--localize-dir", metavar="DIR",
                help="where localisation writes layers.csv and summary.json, one folder per test "
                "(default: <report-dir>/localize)")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    try:
        registry = load_models()
        chips = load_chips()
        policy = load_policy()
        if config.getoption("--inconclusive"):
            policy = replace(policy, verdicts=replace(policy.verdicts, inconclusive=config.getoption("--inconclusive")))
        # curated names, tv:/timm: library names and globs (harness.specs.library); default: every curated model
        selected = resolve_models(_csv(config.getoption("--models")), registry)
        registry = {**registry, **selected}
        names = list(selected)
        selected_chips = [_override(resolve_chip(chips, c), config) for c in _csv(config.getoption("--chip")) or ["cpu"]]
        bs_text = _csv(config.getoption("--batch-sizes"))
        try:
            explicit_sizes = tuple(int(b) for b in bs_text)
        except ValueError:
            raise SpecError(f"--batch-sizes expects integers like 1,16; got {config.getoption('--batch-sizes')!r}") from None
        if any(b <= 0 for b in explicit_sizes):
            raise SpecError(f"--batch-sizes must be positive, got {list(explicit_sizes)}")
        batch_sizes = explicit_sizes or policy.accuracy_batch_sizes
        measurements = config.getoption("--measurements")
        if measurements and not Path(measurements).exists():
            raise SpecError(f"--measurements {measurements}: no such file or directory")
        if measurements and config.getoption("--save-baseline"):
            raise SpecError("--save-baseline saves figures measured here; with --measurements nothing is measured")
        device_ids = _device_ids(config.getoption("--device-ids"))
        predictions = config.getoption("--predictions")
        if predictions and not Path(predictions).is_dir():
            raise SpecError(f"--predictions {predictions}: expected a directory (an ais_bench output folder), found none")
        limit = config.getoption("--limit")
        if limit is not None and limit <= 0:
            raise SpecError(f"--limit must be a positive number of images, got {limit}")
        if config.getoption("--opset") < 7:
            raise SpecError(f"--opset {config.getoption('--opset')} is too old; ATC supports 11")
        if not hasattr(config, "workerinput"):  # the controller writes; xdist workers only compute
            check_output_paths(_under_root(config, config.getoption("--results")), _output_dirs(config))
    except UsageError as exc:  # SpecError, and any other option or fixtures/ data the harness refuses
        raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = {
        "registry": registry,
        "models": [registry[n] for n in names],
        "chips": selected_chips,
        "batch_sizes": batch_sizes,
        "explicit_batch_sizes": explicit_sizes or None,
        "all_chips": chips,
        "policy": policy,
        "device_ids": device_ids,
        "localize": bool(config.getoption("localize")),
        "localize_dir": _under_root(config, config.getoption("--localize-dir")
                                    or Path(config.getoption("--report-dir")) / "localize"),
    }
    if not hasattr(config, "workerinput"):
        recorder = ResultsRecorder(config, _under_root(config, config.getoption("--results")), config.stash[_STATE])
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

    base = selection(config)["localize_dir"]
    function, bracket, params = test_name.partition("[")
    if bracket and params.endswith("]") and function.isascii() and function.isidentifier() and len(function) <= 80:
        return inside(base, base / f"{function}-{safe_component(params[:-1])}")
    return inside(base, base / safe_component(test_name))


def _device_ids(text: str | None) -> tuple[int, ...]:
    values = _csv(text) or ["0"]
    if not all(v.isdigit() for v in values):
        raise SpecError(f"--device-ids expects device numbers like 0,1,2,3 (npu-smi info's Device column); got {text!r}")
    ids = tuple(int(v) for v in values)
    if len(set(ids)) != len(ids):
        raise SpecError(f"--device-ids lists a device twice: {text!r}")
    return ids


def _override(chip: ChipSpec, config: pytest.Config) -> ChipSpec:
    """The chip as --backend / --precision ask to run it (other backends get no chip options)."""
    backend, precision = config.getoption("--backend"), config.getoption("--precision")
    if backend and backend != chip.backend:
        from harness.backends.base import known_backends

        if backend not in known_backends():
            raise SpecError(f"unknown --backend {backend!r}; known backends: {', '.join(known_backends())}")
        chip = replace(chip, backend=backend, backend_options={})
    if precision:
        chip = replace(chip, precision=precision)
    return chip


def selection(config: pytest.Config) -> dict[str, Any]:
    return config.stash[_STATE]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = selection(metafunc.config)
    if "model_spec" in metafunc.fixturenames:
        models: list[ModelSpec] = state["models"]
        metafunc.parametrize("model_spec", models, ids=[m.name for m in models])
    if "perf_rule" in metafunc.fixturenames:
        params = []
        for chip in state["chips"]:
            if not chip.rules:
                params.append(pytest.param(chip, None, id=f"{chip.name}-no-rules", marks=pytest.mark.skip(
                    reason=f"{chip.name} has no throughput rules in fixtures/chips.toml (nothing to compare with)")))
            params.extend(pytest.param(chip, rule, id=f"{chip.name}-vs-{rule.baseline}") for rule in chip.rules)
        metafunc.parametrize(("chip_spec", "perf_rule"), params)
    elif "chip_spec" in metafunc.fixturenames:
        chips: list[ChipSpec] = state["chips"]
        metafunc.parametrize("chip_spec", chips, ids=[c.name for c in chips])
    if "batch_size" in metafunc.fixturenames:
        sizes = state["batch_sizes"]
        metafunc.parametrize("batch_size", sizes, ids=[f"bs{b}" for b in sizes])
