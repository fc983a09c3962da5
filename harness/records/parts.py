"""The parts records are made of: flat groups of fields, each field one JSON key of the same name.

A record (harness.records.schema) is built from parts: :class:`Configuration` (what a figure is a
figure of), :class:`Setup`, :class:`Scores`, :class:`Judgement`, ... On disk and in JUnit a part's
fields are flat keys named as the suite has always named them (nightly consumers parse the JUnit
properties), plus three prefixed families spelled here and nowhere else:

- ``env_<name>``: the backend's own description (:attr:`Setup.environment`);
- ``gate_<name>``: each gate's recorded outcome (:attr:`Judgement.gates`), next to ``verdict``;
- ``<figure>_bs<N>``: per-batch figures (:class:`PerfPoint`), spelled by :func:`batch_key` alone.

A field ``None`` is a field not recorded: absent from the JSON and from JUnit.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    Any,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from harness.errors import UsageError
from harness.judge.gates import Gate, overall_verdict, worst_verdict
from harness.judge.ratios import RatioCheck
from harness.specs import SINGLE_STREAM

# Where a record's figures come from: part of every configuration (a series never mixes them).
MEASURED = "measured"  # measured by this suite on this machine
MEASUREMENTS = "measurements"  # --measurements FILE|DIR: the chip's figures measured elsewhere
PREDICTIONS = "predictions"  # --predictions DIR: logits made elsewhere, scored here
BASELINE = "baseline"  # fixtures/baselines/<chip>.csv
SOURCE_LABELS = {MEASURED: "measured here", MEASUREMENTS: "--measurements", PREDICTIONS: "--predictions",
                 BASELINE: "baseline file"}

PASS, FAIL = "pass", "fail"
ENV_PREFIX, GATE_PREFIX = "env_", "gate_"


class SchemaError(UsageError, ValueError):
    """A JSON object is not a record the schema can read (wrong type, unknown kind, newer schema)."""


def batch_key(name: str, batch_size: int) -> str:
    """The one spelling of a per-batch key: ``images_per_s`` at bs 16 is ``images_per_s_bs16``."""
    return f"{name}_bs{batch_size}"


# --------------------------------------------------------------------------------------------
# Parts: flat groups of fields, each field one JSON key of the same name


T = TypeVar("T", bound="Part")


@dataclass(frozen=True)
class Part:
    """A group of a record's fields. Scalars only, except ``environment`` / ``gates`` (prefixed keys)."""

    def properties(self) -> dict[str, Any]:
        """The recorded (non-None) fields as flat JSON keys, in field order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _PREFIXED:
                out.update({_PREFIXED[f.name] + k: v for k, v in value.items()})
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def take(cls: type[T], data: dict[str, Any]) -> T:
        """This part's fields, removed from ``data`` (type-checked; absent keys are None)."""
        values: dict[str, Any] = {}
        for name, allowed in field_types(cls).items():
            if name in _PREFIXED:
                prefix = _PREFIXED[name]
                values[name] = {k[len(prefix):]: data.pop(k) for k in [k for k in data if k.startswith(prefix)]}
            elif name in data:
                values[name] = checked_value(cls.__name__, name, data.pop(name), allowed)
        return cls(**values)


_PREFIXED = {"environment": ENV_PREFIX, "gates": GATE_PREFIX}
_FIELD_TYPES: dict[type, dict[str, tuple[type, ...]]] = {}


def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """name -> the JSON types a value may have (empty: any), from the annotations, cached."""
    if cls not in _FIELD_TYPES:
        hints = get_type_hints(cls)
        out: dict[str, tuple[type, ...]] = {}
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
            out[f.name] = tuple(a for a in args if a in (str, int, float, bool))
        _FIELD_TYPES[cls] = out
    return _FIELD_TYPES[cls]


def checked_value(owner: str, name: str, value: Any, allowed: tuple[type, ...]) -> Any:
    if value is None or not allowed:
        return value
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # JSON has one number type; an int stays an int (JUnit shows it as recorded)
    if not ok:
        expected = " or ".join(a.__name__ for a in allowed)
        raise SchemaError(f"{owner}.{name}: expected {expected}, found {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True)
class PytestFacts(Part):
    """What pytest said about the test; filled in by the recorder (harness.pytest.recorder)."""

    run_id: str | None = None
    test: str | None = None
    outcome: str | None = None  # passed / failed / skipped
    phase: str | None = None
    duration_s: float | None = None
    time: str | None = None
    host: str | None = None
    reason: str | None = None  # why it was skipped or failed


@dataclass(frozen=True)
class Configuration(Part):
    """What a figure is a figure of: every series and every table row is keyed by all of it."""

    model: str | None = None
    chip: str | None = None
    backend: str | None = None
    precision: str | None = None
    input_dtype: str | None = None
    batch_size: int | None = None  # None: a batch sweep (perf), or predictions made elsewhere
    source: str | None = None  # MEASURED, MEASUREMENTS, PREDICTIONS or BASELINE
    scenario: str | None = None  # perf: single-stream / offline (harness.specs.SCENARIOS); None elsewhere

    def covers(self, other: Configuration) -> bool:
        """Every field this configuration knows equals ``other``'s (a test that stopped before
        compiling knows less than the same test that ran)."""
        return all(v is None or v == getattr(other, k) for k, v in dataclasses.asdict(self).items())

    def label(self, fields: Sequence[str] = ("chip", "backend", "precision", "input_dtype", "batch_size", "source",
                                             "scenario")) -> str:
        """``cpu onnxruntime fp32 bs8``, ``Ascend310P3 (--measurements)``, ``cpu (--predictions)``:
        the named fields that are known, float32 input and measured-here figures left implicit."""
        parts = []
        for name in fields:
            value = getattr(self, name)
            if (
                value is None
                or (name == "input_dtype" and value == "float32")
                or (name == "source" and value == MEASURED)
                or (name == "scenario" and value == SINGLE_STREAM)
            ):
                continue
            parts.append({"input_dtype": f"{value} input", "batch_size": f"bs{value}",
                          "source": f"({SOURCE_LABELS.get(str(value), value)})"}.get(name, str(value)))
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class Published(Part):
    """The published accuracy a model is certified against (fixtures/models.toml, or a library's
    records for ``tv:`` / ``timm:`` models: which library version, and how the published figure's
    recipe differs from the library's default one, if it does)."""

    published_top1: float | None = None
    published_top5: float | None = None
    published_source: str | None = None
    library: str | None = None  # "timm 1.0.19: resnest50d.in1k"
    recipe_note: str | None = None


@dataclass(frozen=True)
class Setup(Part):
    """What ran, on what: the runtime, the images, the weights (each kind records what applies)."""

    backend_version: str | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)  # env_<key>: Backend.describe()
    device_id: int | None = None
    decode: str | None = None
    dataset: str | None = None
    dataset_name: str | None = None
    dataset_key: str | None = None
    label_source: str | None = None
    preprocess: str | None = None
    ring_images: int | None = None
    weights: str | None = None
    weights_source: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class Scores(Part):
    """Top-1/top-5 (percent) on the images scored, and the images left out."""

    images: int | None = None
    skipped_unlabeled: int | None = None
    skipped_missing: int | None = None
    top1: float | None = None
    top5: float | None = None


@dataclass(frozen=True)
class Reference(Part):
    """The framework (torch) reference on the same images, and the agreement with it."""

    reference_top1: float | None = None
    reference_top5: float | None = None
    delta_top1_vs_reference: float | None = None
    delta_top5_vs_reference: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    # Who computed the reference logits: "torch 2.14.1 on HOST at TIME", plus "; imported from FILE"
    # when they came from `python -m harness reference import` (harness.run.reference).
    reference_computed: str | None = None
    # Where the reference logits came from: "computed here" (in this session), "cached" (an earlier
    # run's cache entry) or "imported" (python -m harness reference import: reference_file and its
    # SHA-256). Logits not computed in this session judge only after torch, run here on a fresh
    # random sample of their images (seed recorded), reproduced them (harness.run.reference).
    reference_origin: str | None = None
    reference_file: str | None = None
    reference_file_sha256: str | None = None
    reference_checked_images: int | None = None
    reference_check_seed: int | None = None
    reference_check_max_rel_diff: float | None = None
    # How torch computed the reference logits (harness.model.fast_eval.describe_path): the path that
    # ran (traced-channels-last, channels-last, eager), its threads and its check against eager, or
    # why eager ran instead of the path asked for. None: computed before it was recorded (eager).
    reference_path: str | None = None


@dataclass(frozen=True)
class PredictionsInput(Part):
    """Where predictions made elsewhere (--predictions) were read from, and how."""

    figures_from: str | None = None
    source_format: str | None = None
    labels: str | None = None
    other_outputs_ignored: int | None = None
    device_folders: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Judgement(Part):
    """The verdict and every gate's outcome, as harness.judge.gates decided them."""

    # gate_<name>: pass / fail / inconclusive / "not applicable: why" / "not checked: why"
    gates: Mapping[str, str] = field(default_factory=dict)
    verdict: str | None = None  # pass / fail / inconclusive; None: the test stopped before its gates

    @classmethod
    def of(cls, gates: Sequence[Gate], not_checked: Mapping[str, str] | None = None) -> Judgement:
        """Each gate's verdict (harness.judge.gates); gates of one name (e.g. the computed-check
        of each batch size) record the worst of theirs. The verdict: harness.judge.gates.overall_verdict."""
        outcomes: dict[str, str] = {}
        for g in gates:
            outcomes[g.name] = worst_verdict([outcomes[g.name], g.verdict]) if g.name in outcomes else g.verdict
        return cls(gates={**outcomes, **(not_checked or {})}, verdict=overall_verdict(list(gates)))

    def with_ratio(self, check: RatioCheck) -> Judgement:
        """These gates and a throughput rule's (``gate_ratio_vs_<baseline>``); the verdict fails if any does."""
        outcome = PASS if check.passed else FAIL
        verdict = FAIL if FAIL in (self.verdict, outcome) else PASS
        return Judgement(gates={**self.gates, f"ratio_vs_{check.rule.baseline}": outcome}, verdict=verdict)


@dataclass(frozen=True)
class Verdicts(Part):
    """The figures behind the three-way accuracy verdicts (harness.judge.gates.verdict_fields):
    the coverage of the images, the paired drop against the reference with its interval and
    discordant counts, the published gate (decided on the full validation set only), agreement's
    interval, and the images an inconclusive verdict would need. Floats rounded to 4 decimals."""

    dataset_coverage: str | None = None  # full / subset / other (harness.data.coverage); unknown: a result.json
    dataset_coverage_detail: str | None = None
    paired_drop_top1: float | None = None  # reference top-1 - compiled top-1, points
    paired_drop_top1_low95: float | None = None
    paired_drop_top1_high95: float | None = None
    tolerance_top1_points: float | None = None
    discordant_ref_only: int | None = None  # images only the reference gets right (top-1)
    discordant_compiled_only: int | None = None  # images only the compiled model gets right (top-1)
    images_needed_top1: int | None = None
    paired_drop_top5: float | None = None
    paired_drop_top5_low95: float | None = None
    paired_drop_top5_high95: float | None = None
    tolerance_top5_points: float | None = None
    discordant_ref_only_top5: int | None = None
    discordant_compiled_only_top5: int | None = None
    images_needed_top5: int | None = None
    published_gate: str | None = None  # pass / fail / "not applicable: subset of N images"
    top1_low95: float | None = None  # Wilson interval of a subset's top-1, beside the published figure
    top1_high95: float | None = None
    top5_low95: float | None = None
    top5_high95: float | None = None
    agreement_top1: float | None = None
    agreement_top1_low95: float | None = None
    agreement_top1_high95: float | None = None
    images_needed_agreement: int | None = None
    images_needed: int | None = None  # when inconclusive: the largest of the gates' estimates
    # Is the torch reference plausible before it judges (harness.judge.reference_check): pass / fail,
    # and on a subset its own Wilson interval, which widened by the policy's margin must hold the
    # published figure.
    reference_gate: str | None = None
    reference_top1_low95: float | None = None
    reference_top1_high95: float | None = None
    reference_top5_low95: float | None = None
    reference_top5_high95: float | None = None
    # Predictions made elsewhere (--predictions): images the paired gate decided, and the rest, which
    # the unpaired gate decides (reference on the paired images vs the predictions on the others).
    images_paired: int | None = None
    images_unpaired: int | None = None
    unpaired_drop_top1: float | None = None
    unpaired_drop_top1_low95: float | None = None
    unpaired_drop_top1_high95: float | None = None
    unpaired_drop_top5: float | None = None
    unpaired_drop_top5_low95: float | None = None
    unpaired_drop_top5_high95: float | None = None

    @classmethod
    def of(cls, fields: Mapping[str, Any], coverage: Mapping[str, Any] | None = None) -> Verdicts:
        """From ``verdict_fields(gates)`` (its ``verdict`` goes to :class:`Judgement`, its
        ``images`` is :attr:`Scores.images`) and ``Coverage.as_record()``."""
        values = {**(coverage or {}), **fields}
        values = {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()
                  if k not in ("verdict", "images")}
        return cls(**values)


@dataclass(frozen=True)
class ParityFigures(Part):
    """torch vs exported ONNX on the same inputs (harness.judge.metrics.Parity)."""

    count: int | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    max_rel_diff: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None


@dataclass(frozen=True)
class Quantization(Part):
    """An int8 run (``--precision int8``, harness.run.int8): its calibration images, kept apart from the
    scored ones (``calibration_overlap`` is 0 or the run refused), the quantizer and what it did, and
    the scored images whose top-1 logit is tied (quantized logits tie)."""

    calibration_images: int | None = None
    calibration_source: str | None = None
    calibration_digest: str | None = None
    calibration_overlap: int | None = None
    quantization_tool: str | None = None
    quantization_version: str | None = None
    quantization_scheme: str | None = None
    activation_type: str | None = None
    weight_type: str | None = None
    per_channel: bool | None = None
    excluded_nodes: str | None = None  # comma-separated: the nodes kept in float (logits layer, --keep-float)
    quantization_seconds: float | None = None  # calibration and quantization, wall time
    logit_ties: int | None = None

    @classmethod
    def of(cls, figures: Mapping[str, Any] | None) -> Quantization:
        """From :attr:`harness.run.evaluation.Evaluation.quantization` (None: not an int8 run)."""
        if not figures:
            return cls()
        q = figures.get("quantization") or {}
        return cls(calibration_images=figures.get("calibration_images"),
                   calibration_source=figures.get("calibration_source"),
                   calibration_digest=figures.get("calibration_digest"),
                   calibration_overlap=figures.get("calibration_overlap"), quantization_tool=q.get("tool"),
                   quantization_version=q.get("version"), quantization_scheme=q.get("scheme"),
                   activation_type=q.get("activation_type"), weight_type=q.get("weight_type"),
                   per_channel=q.get("per_channel"), excluded_nodes=",".join(q.get("excluded_nodes") or ()),
                   quantization_seconds=q.get("seconds"), logit_ties=figures.get("logit_ties"))
