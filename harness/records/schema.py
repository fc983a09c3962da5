"""The results file's record kinds, one frozen dataclass each, and their JSON form with its version.

A results file holds one JSON object per line: one per test (kinds ``accuracy``, ``agreement``,
``conversion``, ``perf``, ``perf_ratio``; a ``--predictions`` run is an ``accuracy`` record whose
configuration's source is ``predictions``) and one ``run`` record per session. Test records are
made of parts (harness.records.parts); ``to_json`` flattens them, ``from_json`` takes them back.

Version rules:

- every line written carries ``schema_version`` = :data:`SCHEMA_VERSION` (1);
- a line without it is schema 0 (written before typed records): same spellings, read by
  :func:`record_from_json` after :func:`upgrade_v0` adds what schema 0 left implicit;
- a line of a newer schema is refused with the reason (a :class:`SchemaError`), never guessed at;
- adding an optional field keeps the version; renaming or re-meaning a key raises it, with an
  upgrade step here, so every file ever written still loads.

Round trip: ``from_json(r.to_json()) == r`` for every record; ``to_json(from_json(line))`` equals a
schema-1 line. Keys no part knows are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from harness.records.parts import (
    FAIL,
    MEASURED,
    MEASUREMENTS,
    PASS,
    PREDICTIONS,
    Configuration,
    Judgement,
    ParityFigures,
    Part,
    PredictionsInput,
    Published,
    PytestFacts,
    Quantization,
    Reference,
    SchemaError,
    Scores,
    Setup,
    Verdicts,
    checked_value,
    field_types,
)
from harness.records.perf_parts import (
    Best,
    Origin,
    PerfPoint,
    RatioResult,
    RatioRule,
    VendorComparison,
    points_json,
    take_points,
)
from harness.specs import SINGLE_STREAM

if TYPE_CHECKING:  # records never import the localisation code: the test hands its summary in
    from harness.localize.summary import LocalizationSummary

SCHEMA_VERSION = 1
SCHEMA_KEY = "schema_version"
RUN_KIND = "run"

R = TypeVar("R", bound="ResultRecord")


@dataclass(frozen=True)
class ResultRecord:
    """What one test recorded: its configuration, its parts, its verdict, and pytest's outcome."""

    kind: ClassVar[str] = ""

    meta: PytestFacts = field(default_factory=PytestFacts)
    config: Configuration = field(default_factory=Configuration)
    setup: Setup = field(default_factory=Setup)
    judgement: Judgement = field(default_factory=Judgement)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str | None:
        return self.meta.outcome

    @property
    def verdict(self) -> str | None:
        return self.judgement.verdict

    @property
    def model(self) -> str | None:
        return self.config.model

    def to_json(self) -> dict[str, Any]:
        """The line: schema version, pytest's facts, kind, then the parts in field order."""
        out: dict[str, Any] = {SCHEMA_KEY: SCHEMA_VERSION, **self.meta.properties(), "kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name in ("meta", "extra"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Part):
                out.update(value.properties())
            elif f.name == "points":
                out.update(points_json(value))
            elif value is not None:
                out[f.name] = value
        out.update(self._extra_json())
        return out

    def _extra_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.extra.items() if k not in ("kind", SCHEMA_KEY)}

    def properties(self) -> dict[str, Any]:
        """What the test itself records (its JUnit properties): the line without pytest's facts."""
        meta = set(field_types(PytestFacts))
        return {k: v for k, v in self.to_json().items() if k != SCHEMA_KEY and k not in meta}

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """A record of this kind from a schema-1 object (see :func:`record_from_json` for any version)."""
        rest = {k: v for k, v in data.items() if k not in ("kind", SCHEMA_KEY)}
        values: dict[str, Any] = {}
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            part = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(part, type) and issubclass(part, Part):  # every part field defaults to an empty part
                values[f.name] = part.take(rest)
            elif f.name == "points":
                values[f.name] = take_points(rest, cls.__name__)
            elif f.name in rest:
                values[f.name] = checked_value(cls.__name__, f.name, rest.pop(f.name), types[f.name])
        values.update(cls._take_special(rest, values))
        return cls(**values, extra=rest)

    @classmethod
    def _take_special(cls, rest: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Localization(Part):
    """Where a failed accuracy or agreement gate's loss starts: the ``--localize-on-fail`` hook's
    summary (harness.localize, docs/localize.md). Its worst nodes and cosine by depth stay in the
    summary.json it names (the report reads them there). A part of the accuracy records alone, so
    it is here rather than in harness.records.parts."""

    localization: str | None = None  # the summary's last line, or "not run: <why>"
    first_divergent_node: str | None = None  # absent when no tensor is over threshold
    first_divergent_op: str | None = None
    first_divergent_cosine: float | None = None
    localization_classification: str | None = None  # none / local / accumulated
    localization_method: str | None = None  # expose / bisect
    localization_images: int | None = None  # images compared (the most divergent of the run's)
    localization_tensors: int | None = None  # tensors compared
    localization_seconds: float | None = None
    localization_summary: str | None = None  # summary.json: worst nodes, cosine by depth
    localization_layers: str | None = None  # layers.csv: every node's metrics

    @classmethod
    def of(cls, summary: LocalizationSummary) -> Localization:
        cosine = summary.first_divergent_cosine
        return cls(
            localization=summary.last_line(), first_divergent_node=summary.first_divergent_node,
            first_divergent_op=summary.first_divergent_op,
            first_divergent_cosine=round(cosine, 6) if cosine is not None and math.isfinite(cosine) else None,
            localization_classification=summary.classification, localization_method=summary.method,
            localization_images=len(summary.images), localization_tensors=summary.tensors_compared,
            localization_seconds=round(summary.seconds, 2), localization_summary=summary.summary_json,
            localization_layers=summary.layers_csv,
        )


@dataclass(frozen=True)
class AccuracyRecord(ResultRecord):
    """Top-1/top-5 of a compiled model (or of predictions made elsewhere) vs the published figures."""

    kind: ClassVar[str] = "accuracy"

    published: Published = field(default_factory=Published)
    scores: Scores = field(default_factory=Scores)
    reference: Reference = field(default_factory=Reference)
    verdicts: Verdicts = field(default_factory=Verdicts)
    predictions: PredictionsInput = field(default_factory=PredictionsInput)
    localization: Localization = field(default_factory=Localization)
    quantization: Quantization = field(default_factory=Quantization)  # int8 runs only


@dataclass(frozen=True)
class AgreementRecord(AccuracyRecord):
    """The compiled model's agreement with the torch reference on the project's own images."""

    kind: ClassVar[str] = "agreement"


@dataclass(frozen=True)
class ConversionRecord(ResultRecord):
    """torch -> ONNX export at an opset and its parity with torch (seeded random weights)."""

    kind: ClassVar[str] = "conversion"

    opset: int | None = None
    images: int | None = None
    onnx_sha256_prefix: str | None = None
    parity: ParityFigures = field(default_factory=ParityFigures)


def single_stream_unless_said(config: Configuration) -> Configuration:
    """A perf record written before ``--scenario`` existed measured one request at a time."""
    return config if config.scenario is not None else dataclasses.replace(config, scenario=SINGLE_STREAM)


@dataclass(frozen=True)
class PerfRecord(ResultRecord):
    """A batch sweep: images/s (and latency, and the computed-check) per batch size, the best batch."""

    kind: ClassVar[str] = "perf"

    origin: Origin = field(default_factory=Origin)
    points: tuple[PerfPoint, ...] = ()
    best: Best = field(default_factory=Best)
    vendor: VendorComparison = field(default_factory=VendorComparison)
    saved_baseline: str | None = None

    @classmethod
    def _take_special(cls, rest: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        return {"config": single_stream_unless_said(values["config"])}

    def figures(self) -> dict[int, float]:
        """images/s per batch size, as recorded (per chip or per card: see ``best.unit``)."""
        return {p.batch_size: float(p.images_per_s) for p in self.points if p.images_per_s is not None}

    def figures_per_card(self) -> dict[int, float]:
        """images/s per batch size for the whole card (per-chip figures x devices_per_card)."""
        factor = (self.best.devices_per_card or 1) if self.best.unit == "per_chip" else 1
        return {bs: value * factor for bs, value in sorted(self.figures().items())}

    def best_per_card(self) -> tuple[int, float] | None:
        """(batch size, images/s per card) at the best batch, as the test chose and recorded it."""
        b = self.best
        return (b.best_batch, float(b.best_images_per_s_per_card)) if (
            b.best_batch is not None and b.best_images_per_s_per_card is not None) else None


@dataclass(frozen=True)
class PerfRatioRecord(ResultRecord):
    """One throughput rule: the chip's best batch vs the baseline chip's, per card, and its verdict.

    ``named_ratio`` is the ratio under the gate's own name (``ratio_vs_T4``: 4 decimals), the key
    nightly consumers read; ``result.ratio`` has 6 decimals; ``points[].ratio`` per batch size.
    """

    kind: ClassVar[str] = "perf_ratio"

    rule: RatioRule = field(default_factory=RatioRule)
    origin: Origin = field(default_factory=Origin)
    points: tuple[PerfPoint, ...] = ()
    result: RatioResult = field(default_factory=RatioResult)
    named_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        value = out.pop("named_ratio", None)
        if value is not None and self.rule.gate:
            out[self.rule.gate] = value
        return out

    @classmethod
    def _take_special(cls, rest: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        special: dict[str, Any] = {"config": single_stream_unless_said(values["config"])}
        gate = values["rule"].gate
        if gate and gate in rest:
            special["named_ratio"] = checked_value(cls.__name__, gate, rest.pop(gate), (float,))
        return special

    def per_batch(self) -> dict[int, float]:
        """The recorded ratio at each batch size both sides have."""
        return {p.batch_size: float(p.ratio) for p in self.points if p.ratio is not None}


TEST_KINDS: dict[str, type[ResultRecord]] = {
    c.kind: c for c in (AccuracyRecord, AgreementRecord, ConversionRecord, PerfRecord, PerfRatioRecord)}


@dataclass(frozen=True)
class RunRecord:
    """One pytest session: when, on what machine (the environment fingerprint), what was asked."""

    kind: ClassVar[str] = RUN_KIND

    run_id: str | None = None
    started: str | None = None
    finished: str | None = None
    exit_status: int | None = None
    args: tuple[str, ...] = ()
    chips: tuple[str, ...] = ()
    outcomes: Mapping[str, int] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    # --shard K/N (harness.pytest.shard): "K/N", the plan's SHA-256 (the same on every shard of one
    # selection), the tests of the whole selection, and the node ids this shard was given. Absent
    # (None, ()) for a run without --shard, and then not written: older files read unchanged.
    shard: str | None = None
    shard_plan: str | None = None
    shard_selected: int | None = None
    shard_tests: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        sharded = {"shard": self.shard, "shard_plan": self.shard_plan, "shard_selected": self.shard_selected,
                   "shard_tests": list(self.shard_tests)} if self.shard is not None else {}
        return {SCHEMA_KEY: SCHEMA_VERSION, "kind": RUN_KIND, "run_id": self.run_id, "started": self.started,
                "finished": self.finished, "exit_status": self.exit_status, "args": list(self.args),
                "chips": list(self.chips), "outcomes": dict(self.outcomes), "environment": dict(self.environment),
                **sharded, **{k: v for k, v in self.extra.items() if k not in ("kind", SCHEMA_KEY)}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        rest = {k: v for k, v in data.items() if k not in ("kind", SCHEMA_KEY)}
        values: dict[str, Any] = {}
        for name, allowed in (("run_id", (str,)), ("started", (str,)), ("finished", (str,)), ("exit_status", (int,)),
                              ("shard", (str,)), ("shard_plan", (str,)), ("shard_selected", (int,))):
            values[name] = checked_value("RunRecord", name, rest.pop(name, None), allowed)
        for name in ("args", "chips", "shard_tests"):
            items = rest.pop(name, None) or []
            if not isinstance(items, list):
                raise SchemaError(f"RunRecord.{name}: expected a list, found {type(items).__name__}")
            values[name] = tuple(str(i) for i in items)
        for name in ("outcomes", "environment"):
            mapping = rest.pop(name, None) or {}
            if not isinstance(mapping, dict):
                raise SchemaError(f"RunRecord.{name}: expected an object, found {type(mapping).__name__}")
            values[name] = mapping
        return cls(**values, extra=rest)


Record = ResultRecord | RunRecord
KINDS = (*TEST_KINDS, RUN_KIND)


def version_of(data: Mapping[str, Any]) -> int:
    """The schema version a line was written with (0: none stated)."""
    version = data.get(SCHEMA_KEY, 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise SchemaError(f"{SCHEMA_KEY} must be a whole number, found {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"written with results schema version {version}; this harness reads versions 0 to "
                          f"{SCHEMA_VERSION}: read it with the newer harness that wrote it")
    return version


def upgrade_v0(data: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-0 line in schema 1's terms: the same keys, plus what schema 0 left implicit.

    - ``source``: ``figures_from`` said it ("measured here", a --measurements path, "predictions
      <dir>"); accuracy, agreement and conversion records without it were measured here.
    - ``input_dtype``: float32 for a record measured here on a known backend (the only input
      before --input existed).
    - ``verdict``: a gate field that says ``fail`` is a fail; otherwise a test that passed passed
      every gate it had (schema 0 recorded most verdicts as the test's outcome alone).
    """
    out = dict(data)
    kind = out.get("kind")
    if kind not in TEST_KINDS:
        return out
    origin = out.get("figures_from")
    if "source" not in out:
        if isinstance(origin, str) and origin.startswith("predictions "):
            out["source"] = PREDICTIONS
        elif origin == "measured here" or (not origin and kind in ("accuracy", "agreement", "conversion")):
            out["source"] = MEASURED
        elif origin:
            out["source"] = MEASUREMENTS
    if "input_dtype" not in out and out.get("source") == MEASURED and out.get("backend"):
        out["input_dtype"] = "float32"
    if "verdict" not in out:
        gates = [v for k, v in out.items() if k.startswith("gate_")]
        if FAIL in gates:
            out["verdict"] = FAIL
        elif out.get("outcome") == "passed":
            out["verdict"] = PASS
    return out


def record_from_json(data: Mapping[str, Any]) -> Record:
    """Any line of any readable version as its typed record (a :class:`SchemaError` says why not)."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"expected a JSON object (one record), found {type(data).__name__}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise SchemaError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    if version_of(data) == 0:
        data = upgrade_v0(data)
    if kind == RUN_KIND:
        return RunRecord.from_json(data)
    return TEST_KINDS[kind].from_json(data)
