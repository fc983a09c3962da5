"""Every command-line option of the suite, declared once: name, metavar, help, default, choices, parser.

The pytest plugin (``harness.pytest.plugin``: ``pytest_addoption``) and the ``python -m harness``
commands (``harness/cli/*``) both fill their parser from these declarations with
:meth:`Option.add_to`, so an option means the same, is checked the same and is described the same
in ``pytest --help`` and ``python -m harness COMMAND --help``. A command may override ``help`` or
``default`` where the option's role there differs (``localize --backend`` compiles a candidate;
its ``--precision`` defaults to fp32, the suite's to the chip's), never the parser.

Defaults are given typed (``("cpu",)``, not ``"cpu"``): argparse runs ``type=`` on a string default
only at the end of a parse, which ``--help`` interrupts, and pytest configures the plugin after it.

A value is checked when the command line is parsed (``type=``): a bad one stops the run before
anything starts with one line saying what was expected, ``pytest: error: argument --limit:
expected a positive number of images (like 1000), got '0'`` (pytest: exit status 4; the commands:
2). Checks that need another option, the registry (fixtures/) or the session stay where those are
known: ``harness.pytest.plugin.pytest_configure`` and the commands' ``main``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.records.shards import parse_shard
from harness.specs import PRECISIONS, SCENARIOS, SINGLE_STREAM
from harness.specs.policy_doc import describe

Parse = Callable[[str], Any]


# --------------------------------------------------------------------------------------------
# Value parsers: each returns the typed value or raises argparse.ArgumentTypeError saying what was
# expected (argparse prefixes ``argument --name: ``)


def _named(parse: Parse, name: str) -> Parse:
    parse.__name__ = name  # argparse names the parser in messages of errors it raises itself
    return parse


def _digits(text: str) -> bool:
    """ASCII digits only, at most 9 (``int()`` also takes "+5", " 5", "1_000" and other scripts' digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def positive_int(what: str, example: int) -> Parse:
    """A whole number > 0 (``--limit``, ``--workers``...)."""

    def parse(text: str) -> int:
        value = int(text) if _digits(text) else 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number of {what} (like {example}), got {text!r}")
        return value

    return _named(parse, f"positive number of {what}")


def opset(text: str) -> int:
    """An ONNX opset number; 7 is the oldest the exporter writes, ATC reads 11."""
    if not _digits(text):
        raise argparse.ArgumentTypeError(f"expected an ONNX opset number (like 11), got {text!r}")
    value = int(text)
    if value < 7:
        raise argparse.ArgumentTypeError(f"opset {value} is too old: expected 7 or newer (ATC supports 11)")
    return value


def names(what: str, example: str) -> Parse:
    """A comma-separated list of names, blanks dropped (``--models a,b``); an empty value is an empty tuple
    (the option's default applies)."""

    def parse(text: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in text.split(",") if v.strip())

    return _named(parse, f"comma-separated {what} (like {example})")


def batch_sizes(text: str) -> tuple[int, ...]:
    """Comma-separated positive batch sizes (``--batch-sizes 1,16``)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not all(_digits(v) and int(v) > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive batch sizes like 1,16, got {text!r}")
    return tuple(int(v) for v in values)


def device_ids(text: str) -> tuple[int, ...]:
    """Comma-separated device numbers, each once (``--device-ids 0,1,2,3``: npu-smi info's Device column)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or not all(_digits(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected device numbers like 0,1,2,3 (npu-smi info's Device column), got {text!r}")
    ids = tuple(int(v) for v in values)
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected each device once, got {text!r} (a device listed twice)")
    return ids


def path(text: str) -> Path:
    """A path, ``~`` expanded; whether it exists is the command's to check when it uses it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return Path(text).expanduser()


def existing_path(what: str) -> Parse:
    """A file or directory that exists now (data given to the run to read)."""

    def parse(text: str) -> Path:
        found = path(text)
        if not found.exists():
            raise argparse.ArgumentTypeError(f"expected {what}; {text!r}: no such file or directory")
        return found

    return _named(parse, what)


def existing_dir(what: str) -> Parse:
    """A directory that exists now."""

    def parse(text: str) -> Path:
        found = path(text)
        if not found.is_dir():
            why = "a file, not a directory" if found.exists() else "no such directory"
            raise argparse.ArgumentTypeError(f"expected {what}; {text!r}: {why}")
        return found

    return _named(parse, what)


def shard(text: str) -> tuple[int, int]:
    """``K/N``: the K-th of N shards (``--shard 2/4``: harness.pytest.shard; harness.records.shards reads it)."""
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backend_name(text: str) -> str:
    """A backend's name (``onnxruntime``, ``openvino``...). Whether it is registered is checked when the
    chip is resolved (``harness.pytest.plugin``, the localize command), not here: a plugin given with
    ``-p`` may register its backend in its own ``pytest_configure``, after the command line is parsed."""
    if not (text.isascii() and text.replace("_", "a").replace("-", "a").isalnum() and len(text) <= 64):
        raise argparse.ArgumentTypeError(f"expected a backend name like onnxruntime or openvino, got {text!r}")
    return text


# --------------------------------------------------------------------------------------------
# The declarations


@dataclass(frozen=True)
class Option:
    """One option as argparse (and pytest's ``addoption``, which takes argparse's keywords) declares it."""

    flag: str
    help: str
    metavar: str | None = None
    type: Parse | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    dest: str | None = None
    action: str | None = None

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The keywords of ``add_argument`` / ``addoption``; ``overrides`` (``help``, ``default``,
        ``required``) where a command gives the option another role."""
        given = {"help": self.help, "metavar": self.metavar, "type": self.type, "default": self.default,
                 "choices": list(self.choices) if self.choices else None, "dest": self.dest, "action": self.action}
        return {key: value for key, value in {**given, **overrides}.items() if value is not None}

    def add_to(self, parser: Any, **overrides: Any) -> None:
        """Add to an argparse parser or group (``add_argument``) or a pytest option group (``addoption``)."""
        add = parser.addoption if hasattr(parser, "addoption") else parser.add_argument
        add(self.flag, **self.kwargs(**overrides))


def _flag(flag: str, help: str, dest: str | None = None, default: bool | None = None) -> Option:
    return Option(flag, help, action="store_true", dest=dest, default=default)


# Options that both the pytest plugin and a ``python -m harness`` command take
IMAGENET = Option("--imagenet", "ImageNet val: DIR/val/*.JPEG + DIR/val_label.txt (ModelZoo), or DIR/val/<wnid>/*.JPEG "
                  "(ImageFolder)", metavar="DIR", type=path)
IMAGENET_LABELS = Option("--imagenet-labels", "the label file (val_label.txt format) if not inside --imagenet DIR",
                         metavar="FILE", type=path)
LIMIT = Option("--limit", "a deterministic subset of N images of --imagenet (ordered by a hash of the name)",
               metavar="N", type=positive_int("images", 1000))
CACHE_DIR = Option("--cache-dir", "the artifact cache (default: $MZC_CACHE_DIR or ~/.cache/modelzoo-cert)",
                   metavar="DIR", type=path)
BACKEND = Option("--backend", "run the chip(s) on another backend of harness/backends (e.g. openvino on cpu); "
                 "default: the chip's in fixtures/chips.toml", metavar="NAME", type=backend_name)
PRECISION = Option("--precision", "compile at this precision (int8: post-training quantization on onnxruntime "
                   "and openvino, calibrated apart from the scored images; docs/int8.md); default: the chip's in "
                   "fixtures/chips.toml", choices=(*PRECISIONS, "int8"))
BASELINES_DIR = Option("--baselines-dir", "perf baselines, one <chip>.csv each (default: fixtures/baselines)",
                       metavar="DIR", type=path)

# The pytest plugin's own
INCONCLUSIVE = Option("--inconclusive", "an inconclusive verdict (too few images to decide) fails the test, or is "
                      "allowed (recorded as inconclusive, the test passes); default: fixtures/policy.toml [accuracy] "
                      "inconclusive", choices=("fail", "allow"))
MODELS = Option("--models", "comma-separated models: fixtures/models.toml names, torchvision / timm names "
                "(tv:resnet50, tv:resnet50.IMAGENET1K_V2, timm:resnest50d.in1k) or globs (tv:*, timm:resnext*); "
                "default: every fixtures/models.toml model", metavar="A,B",
                type=names("model names", "efficientnet_lite0,tv:resnet50"))
CHIP = Option("--chip", "chip(s) from fixtures/chips.toml (default: cpu)", metavar="CHIP[,CHIP]", default=("cpu",),
              type=names("chip names", "cpu,310P3"))
INPUT = Option("--input", "uint8: fold normalization into the model and feed the uint8 cache as is (4x less "
               "host-to-device traffic)", dest="input_dtype", choices=("float32", "uint8"), default="float32")
DECODE = Option("--decode", "JPEG decoding for the preprocessing cache: exact (default, bit-identical with "
                "torchvision) or draft (libjpeg DCT-domain downscaling of JPEGs at least twice the resize target: "
                "faster on large photos, different pixels, cached separately and recorded)",
                choices=("exact", "draft"), default="exact")
BATCH_SIZES = Option("--batch-sizes", "batch sizes (default: accuracy: fixtures/policy.toml; perf: the model's sweep "
                     "in models.toml)", metavar="1,16", type=batch_sizes)
WEIGHTS = Option("--weights", "pretrained checkpoints (checksum-verified) or seeded random weights (conversion "
                 "checks only)", choices=("pretrained", "random"), default="pretrained")
WEIGHTS_DIR = Option("--weights-dir", "where checkpoints are found / downloaded (default: <cache>/weights)",
                     metavar="DIR", type=path)
VERIFY_CACHE = _flag("--verify-cache", "hash every file of every cache entry read, the large ones too (a dataset's "
                     "pixels: ~5 s per 50,000 images), instead of checking files over 256 MiB by size; entries that "
                     "fail are rebuilt")
NO_DOWNLOAD = _flag("--no-download", "never download weights; fail if absent")
PREPROCESS = Option("--preprocess", "a preprocessing variant of the model (e.g. modelzoo); default: the upstream "
                    "recipe", metavar="VARIANT", dest="preprocess_variant")
OPSET = Option("--opset", "ONNX opset for export (default 11, what ATC supports)", metavar="N", type=opset, default=11)
WORKERS = Option("--workers", "preprocessing processes (default: all cores)", metavar="N",
                 type=positive_int("processes", 2))
THREADS = Option("--threads", "inference threads for CPU backends (default: all cores)", metavar="N",
                 type=positive_int("threads", 2))
ON_LABEL_MISMATCH = Option("--on-label-mismatch", "images without labels / labels without images: fail (default) "
                           "or score the intersection", choices=("error", "intersect"), default="error")
MEASUREMENTS = Option("--measurements", "perf: the chip under test's figures measured elsewhere (baseline-format "
                      "CSV, or ais_bench *_summary.json files under <model>/bs<N>/) instead of measuring here",
                      metavar="FILE|DIR", type=existing_path("a baseline-format CSV or a folder of ais_bench "
                                                             "*_summary.json files"))
SAVE_BASELINE = _flag("--save-baseline", "perf: write this run's figures into <baselines-dir>/<chip>.csv (rows of "
                      "the same model and batch replaced)")
SCENARIO = Option("--scenario", "perf: single-stream (one request at a time: latency percentiles; default) or "
                  "offline (as many requests in flight as the backend's throughput mode uses: images/s only); ratios "
                  "compare figures of one scenario and clock", choices=SCENARIOS, default=SINGLE_STREAM)
COMPARE_VENDOR_TOOL = _flag("--compare-vendor-tool", "perf: also measure the best batch with the vendor's own tool "
                            "(OpenVINO benchmark_app, ais_bench, trtexec) in the same scenario and record both "
                            "figures and their ratio (docs/vendor-parity.md)")
DEVICE_IDS = Option("--device-ids", "devices to run on (Ascend: the Device column of npu-smi info; default: 0); "
                    "under pytest-xdist worker gwN takes the N-th (modulo), so perf runs may use -n up to the number "
                    "of devices; in one process, several devices of a card are also measured together at the best "
                    "batch (per_card_measured)", metavar="0,1,2,3", type=device_ids, default=(0,))
PREDICTIONS = Option("--predictions", "accuracy: certify an ais_bench output folder ({image}_0.txt|.npy|.bin per "
                     "image) or a ModelZoo result.json produced elsewhere, against the labels (--imagenet / "
                     "--imagenet-labels); one model (--models) or one sub-folder per model", metavar="DIR",
                     type=existing_dir("a folder of predictions (ais_bench output or a ModelZoo result.json)"))
RESULTS = Option("--results", "JSON-lines record of every result (appended)", metavar="FILE", type=path,
                 default=Path("reports/results.jsonl"))
REPORT_DIR = Option("--report-dir", "where the end of the run writes report.md, report.html and plots/ from the "
                    "whole --results file (this run and the history before it); default: reports/", metavar="DIR",
                    type=path, default=Path("reports"))
NO_REPORT = _flag("--no-report", "do not write the report at the end of the run")
LOCALIZE_ON_FAIL = _flag("--localize-on-fail", "when an accuracy or agreement gate's verdict is fail, localise the "
                         "loss layer by layer on the most divergent images (" + describe("localize.images") + ") and "
                         "record the first divergent node (the default; docs/localize.md)", dest="localize",
                         default=True)
NO_LOCALIZE = Option("--no-localize", "do not localise a failed accuracy or agreement gate", dest="localize",
                     action="store_false")
LOCALIZE_DIR = Option("--localize-dir", "where localisation writes layers.csv and summary.json, one folder per test "
                      "(default: <report-dir>/localize)", metavar="DIR", type=path)
SHARD = Option("--shard", "run only the K-th of N shards of the selected tests (one runner each; every model's tests "
               "in one shard, balanced by --shard-durations; docs/nightly.md, Sharding); python -m harness merge "
               "checks and joins the shards' results files", metavar="K/N", type=shard)
SHARD_DURATIONS = Option("--shard-durations", "results files or a folder of *.jsonl (an earlier night's) whose test "
                         "durations balance --shard; absent or without records: every test weighs the same. Every "
                         "shard must be given the same", metavar="PATH", type=path)
CALIBRATION = Option("--calibration", "int8: calibrate on these images (laid out like --imagenet) instead of "
                     "splitting " + describe("int8.calibration_images") + " off the scored data; the run refuses "
                     "if any of them is also scored (same file content)", metavar="DIR",
                     type=existing_dir("a folder of calibration images laid out like --imagenet"))
KEEP_FLOAT = Option("--keep-float", "int8: keep these ONNX nodes in float (the way back to float: "
                    "python -m harness keep-float finds the fewest that make a failing quantization pass; "
                    "docs/int8.md)",
                    metavar="NODE,NODE", type=names("node names", "/blocks/blocks.0/blocks.0.0/conv_dw/Conv"),
                    default=())
STRICT_CERTIFICATION = _flag("--strict-certification", "a skipped accuracy, agreement or perf certification fails "
                             "(with the skip's reason): a run that certifies nothing is not green")

PYTEST_OPTIONS = (
    IMAGENET, IMAGENET_LABELS, LIMIT, INCONCLUSIVE, MODELS, CHIP, BACKEND, PRECISION, INPUT, DECODE, BATCH_SIZES,
    WEIGHTS, WEIGHTS_DIR, CACHE_DIR, VERIFY_CACHE, NO_DOWNLOAD, PREPROCESS, OPSET, WORKERS, THREADS, ON_LABEL_MISMATCH,
    MEASUREMENTS, SAVE_BASELINE, BASELINES_DIR, SCENARIO, COMPARE_VENDOR_TOOL, DEVICE_IDS, PREDICTIONS, RESULTS,
    REPORT_DIR, NO_REPORT, LOCALIZE_ON_FAIL, NO_LOCALIZE, LOCALIZE_DIR, STRICT_CERTIFICATION, SHARD, SHARD_DURATIONS,
    CALIBRATION, KEEP_FLOAT,
)
"""The pytest plugin's options, in ``pytest --help`` order."""
