"""The pytest plugin: options, parametrization from the registry, results file, terminal summary.

Hooks only; the work happens in harness.run.workbench, the fixtures in harness.pytest.fixtures.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UsageError
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
        config.pluginmanager.register(ResultsRecorder(config), "modelzoo-cert-results")


def _under_root(config: pytest.Config, path: str | Path) -> Path:
    """A path option: relative ones are taken from the rootdir, as --results and --report-dir are."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(config.rootpath) / path


def localize_dir(config: pytest.Config, test_name: str) -> Path:
    """The folder of one test's localisation: ``<--localize-dir>/<test name, made a file name>``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in test_name).strip("-")
    return selection(config)["localize_dir"] / safe


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


class ResultsRecorder:
    """Writes one typed record (harness.records.schema) per test outcome and prints the summary.

    Registered on the controller only: under pytest-xdist it is the one process that sees every
    report (with the properties the test's record left in it), so each result is written exactly
    once. The line is the test's record with pytest's facts (outcome, reason, times) filled in.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        path = Path(config.getoption("--results"))
        self.path = path if path.is_absolute() else Path(config.rootpath) / path
        self.records: list[Any] = []  # harness.records.schema.ResultRecord, for the summary
        self.outcomes: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []  # records written as the test left them: not readable as typed
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.report: Any = None  # harness.report.build.ReportPaths once written
        self.report_error: str | None = None

    def _append(self, record: dict[str, Any]) -> None:
        """One ``write`` on an O_APPEND descriptor: a killed run cannot leave half a line behind
        another process's record, and concurrent runs appending to one file do not interleave."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.skipped or report.failed):
            return
        props = dict(report.user_properties)
        if "kind" not in props:
            return
        from harness.records.parts import PytestFacts, SchemaError
        from harness.records.schema import SCHEMA_KEY, SCHEMA_VERSION, record_from_json

        reason = None
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(report.longrepr)
        meta = PytestFacts(run_id=self.run_id, test=report.nodeid, outcome=report.outcome, phase=report.when,
                        duration_s=round(report.duration, 3), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        host=socket.gethostname(), reason=reason)
        line = {SCHEMA_KEY: SCHEMA_VERSION, **meta.properties(), **props}
        try:
            record = record_from_json(line)
        except SchemaError as exc:  # a writer's bug: keep what the test knew, say so at the end
            self.problems.append(f"{report.nodeid}: {exc}")
        else:
            line = record.to_json()
            self.records.append(record)
        self.outcomes[report.outcome] += 1
        self._append(line)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """One ``kind: run`` record per run: the environment fingerprint and what was asked."""
        if not self.outcomes:
            return
        from harness.environment import fingerprint
        from harness.records.schema import RunRecord

        self._append(RunRecord(
            run_id=self.run_id, started=self.started, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            exit_status=int(exitstatus), args=tuple(map(str, self.config.invocation_params.args)),
            chips=tuple(c.name for c in selection(self.config)["chips"]), outcomes=dict(self.outcomes),
            environment=fingerprint(),
        ).to_json())
        if not self.config.getoption("--no-report"):
            self._write_report()

    def _write_report(self) -> None:
        """The report of the whole results file; a problem with it is a warning, never a lost run."""
        from harness.records.results import load_results
        from harness.report.build import write_report

        try:
            results = load_results(self.path)
            out = Path(self.config.getoption("--report-dir"))
            out = out if out.is_absolute() else Path(self.config.rootpath) / out
            baselines = self.config.getoption("--baselines-dir")
            state = selection(self.config)
            self.report = write_report(results, out, baselines_dir=Path(baselines) if baselines else None,
                                       chips=state["all_chips"], policy=state["policy"])
        except Exception as exc:  # noqa: BLE001 - the run's results are already safe in the results file
            self.report_error = f"{type(exc).__name__}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.outcomes:
            return
        from harness.records.results import results_of
        from harness.report.build import terminal_table

        tr = terminalreporter
        tr.write_sep("=", "certification summary")
        tr.write_line(terminal_table(results_of(self.records, self.path)))
        skipped: dict[str, list[str]] = defaultdict(list)
        for r in self.records:
            if r.outcome == "skipped":
                skipped[r.meta.reason or ""].append(str(r.meta.test).split("::")[-1])
        if skipped:
            tr.write_line("")
            tr.write_line("not run, and what to pass to run them:")
            for reason, names in skipped.items():
                tr.write_line(f"  {len(names)} x {reason}")
                tr.write_line(f"      {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}")
        for problem in self.problems:
            tr.write_line(f"warning: record not in the results schema, written as recorded: {problem}")
        tr.write_line(f"results appended to {self.path}")
        if self.report is not None:
            tr.write_line(f"report written: {self.report.html} (and report.md, {len(self.report.plots)} plot(s))")
            for note in self.report.notes:
                tr.write_line(f"  note: {note}")
            for regression in self.report.regressions:
                tr.write_line(f"  {regression.describe()}")
        elif self.report_error is not None:
            tr.write_line(f"warning: no report written ({self.report_error}); the results file is intact: "
                          f"python -m harness report {self.path} writes it")
