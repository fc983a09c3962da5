"""Frozen specifications loaded from ``fixtures/*.toml`` and validated on load.

Every number the suite certifies against lives in ``fixtures/``; this module turns those files
into typed, immutable objects and rejects anything malformed with a message that names the file,
the entry, the field, what was expected and what was found.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from harness.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"

RESIZE_METHODS = ("resize_crop", "squash_crop", "crop_resize")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
ARCH_SOURCES = ("torchvision", "timm")
KEY_MAPPINGS = ("none", "by_position")
PRECISIONS = ("fp32", "fp16", "bf16")


class SpecError(UsageError, ValueError):
    """A fixtures file is malformed: the message names file, entry, field and the fix."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How one JPEG becomes one model input.

    ``method``:
      - ``resize_crop``: resize the shorter side to ``resize`` (torchvision ``Resize(int)``),
        then center-crop ``crop`` (the torchvision / timm evaluation recipe).
      - ``squash_crop``: resize to ``resize x resize`` ignoring aspect ratio, then center-crop
        (what several ModelZoo preprocessing scripts do).
      - ``crop_resize``: center-crop ``crop / resize`` of the shorter side, then resize to
        ``crop x crop`` (ResNeSt's upstream ``ECenterCrop``).
    """

    resize: int
    crop: int
    interpolation: str = "bilinear"
    method: str = "resize_crop"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def cache_fields(self) -> dict[str, Any]:
        """The fields that decide the uint8 pixels (mean/std are applied per batch, later)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "method": self.method,
        }

    def describe(self) -> str:
        return (
            f"{self.method} resize={self.resize} crop={self.crop} {self.interpolation} "
            f"mean={list(self.mean)} std={list(self.std)}"
        )


@dataclass(frozen=True)
class ArchSpec:
    """Where the torch architecture comes from."""

    source: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Keyword arguments used only when building seeded random weights for conversion tests
    # (e.g. timm's ``zero_init_last=False``, so parity tests cannot pass trivially).
    random_init_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsSpec:
    """A checkpoint: where it comes from and how to know it is the right one."""

    filename: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    package: str | None = None
    package_path: str | None = None
    key_mapping: str = "none"
    state_dict_key: str | None = None

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256 or self.sha256_prefix)


@dataclass(frozen=True)
class AccuracyRef:
    """A published accuracy with its source. ``top5`` is None where the source gives none."""

    top1: float
    top5: float | None
    source: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    seed: str
    arch: ArchSpec
    weights: WeightsSpec
    input_name: str
    output_name: str
    num_classes: int
    preprocess: PreprocessSpec
    preprocess_variants: Mapping[str, PreprocessSpec]
    published: AccuracyRef
    batch_sizes: tuple[int, ...]
    fixed_input_size: bool = False
    notes: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.preprocess.crop, self.preprocess.crop)

    def preprocess_for(self, variant: str | None) -> PreprocessSpec:
        """The default recipe, or a named variant (e.g. ``modelzoo``)."""
        if variant in (None, "", "default", "upstream"):
            return self.preprocess
        try:
            return self.preprocess_variants[variant]
        except KeyError:
            known = ", ".join(["default", *sorted(self.preprocess_variants)])
            raise SpecError(
                f"model {self.name!r} has no preprocessing variant {variant!r}; "
                f"available: {known} (see fixtures/models.toml)"
            ) from None


@dataclass(frozen=True)
class PerfRule:
    """A certification rule: at the best batch size, this chip >= ``min_ratio`` x ``baseline``."""

    baseline: str
    min_ratio: float
    source: str = ""


@dataclass(frozen=True)
class ChipSpec:
    """An inference target: which backend runs it, with which options, on what devices, and the
    throughput rules it must meet against other chips' baselines."""

    name: str
    backend: str
    aliases: tuple[str, ...] = ()
    devices_per_card: int = 1
    precision: str = "fp32"
    description: str = ""
    backend_options: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[PerfRule, ...] = ()


@dataclass(frozen=True)
class CompileTarget:
    """Everything that decides a compiled artifact besides the ONNX file itself."""

    chip: str
    batch_size: int
    input_shape: tuple[int, int, int]
    input_name: str
    precision: str = "fp32"
    options: Mapping[str, str] = field(default_factory=dict)

    def cache_fields(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "input_name": self.input_name,
            "precision": self.precision,
            "options": dict(sorted(self.options.items())),
        }


@dataclass(frozen=True)
class TimingPolicy:
    """How the one timing loop measures (fixtures/policy.toml [perf])."""

    warmup_runs: int = 3
    min_runs: int = 10
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    ring_images: int = 128
    computed_rtol: float = 1e-4


@dataclass(frozen=True)
class HistoryPolicy:
    """When the report flags a run as worse than the previous one (fixtures/policy.toml [history]).

    Separate from the gates: a nightly drift of half a point is worth a look long before it fails
    the 1-point certification tolerance.
    """

    regression_top1_points: float = 0.5
    regression_throughput_percent: float = 5.0


@dataclass(frozen=True)
class Policy:
    accuracy_tolerance_points: float
    agreement_min_top1: float
    accuracy_batch_sizes: tuple[int, ...]
    conversion_rtol: float
    conversion_min_cosine: float
    calibration_images: int
    seed: int
    timing: TimingPolicy = TimingPolicy()
    history: HistoryPolicy = HistoryPolicy()


# --------------------------------------------------------------------------------------------
# Validation helpers: every failure names file, entry and field.


class _Reader:
    def __init__(self, source: str, entry: str, table: Mapping[str, Any]):
        if not isinstance(table, dict):
            # e.g. `accuracy = 5` where [accuracy] belongs, or a variant that is not a table.
            raise SpecError(f"{source}: [{entry}]: expected a table, found {table!r}")
        self.source, self.entry, self.table = source, entry, table
        self.used: set[str] = set()

    def fail(self, key: str, expected: str, found: Any) -> SpecError:
        where = f"{self.source}: [{self.entry}]" + (f" field {key!r}" if key else "")
        return SpecError(f"{where}: expected {expected}, found {found!r}")

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.fail(key, expected, "<missing>")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, expected, value)
        if not isinstance(value, kind):
            raise self.fail(key, expected, value)
        return value

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> Any:
        expected = "one of " + ", ".join(choices) if choices else "a non-empty string"
        value = self.get(key, str, expected, default)
        if value is default and default is not ...:
            return value
        if not value.strip() or (choices and value not in choices):
            raise self.fail(key, expected, value)
        return value

    def number(self, key: str, lo: float, hi: float, default: Any = ...) -> Any:
        expected = f"a number in [{lo}, {hi}]"
        value = self.get(key, (int, float), expected, default)
        if value is default and default is not ...:
            return value
        # Compared before float(): TOML integers are unbounded and float(10**400) overflows.
        if not lo <= value <= hi:
            raise self.fail(key, expected, value)
        return float(value)

    def integer(self, key: str, lo: int, hi: int, default: Any = ...) -> Any:
        expected = f"an integer in [{lo}, {hi}]"
        value = self.get(key, int, expected, default)
        if value is default and default is not ...:
            return value
        if not lo <= value <= hi:
            raise self.fail(key, expected, value)
        return value

    def table_(self, key: str, default: Any = ...) -> Mapping[str, Any]:
        return self.get(key, dict, "a table", default)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise SpecError(
                f"{self.source}: [{self.entry}]: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"known fields: {', '.join(sorted(self.used))}"
            )


def _triple(reader: _Reader, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
    value = reader.get(key, list, "a list of 3 finite numbers", default)
    if value is default:
        return default
    # Finite and of pixel scale: NaN passes every range check, and an unbounded TOML integer
    # would overflow float().
    if len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 and math.isfinite(v) for v in value
    ):
        raise reader.fail(key, "a list of 3 finite numbers", value)
    return (float(value[0]), float(value[1]), float(value[2]))


def _plain(value: Any) -> bool:
    """JSON-like: what may go into a cache key (TOML dates and times may not)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool))


def _plain_table(reader: _Reader, key: str) -> dict[str, Any]:
    value = reader.table_(key, {})
    if not _plain(value):
        raise reader.fail(key, "a table of strings, numbers, booleans, lists and tables (no dates)", value)
    return dict(value)


def _preprocess(source: str, entry: str, table: Mapping[str, Any], base: PreprocessSpec | None) -> PreprocessSpec:
    r = _Reader(source, entry, table)
    b = base
    spec = PreprocessSpec(
        resize=r.integer("resize", 1, 4096, *( (b.resize,) if b else ())),
        crop=r.integer("crop", 1, 4096, *((b.crop,) if b else ())),
        interpolation=r.text("interpolation", b.interpolation if b else "bilinear", INTERPOLATIONS),
        method=r.text("method", b.method if b else "resize_crop", RESIZE_METHODS),
        mean=_triple(r, "mean", b.mean if b else PreprocessSpec.mean),
        std=_triple(r, "std", b.std if b else PreprocessSpec.std),
    )
    r.finish()
    if spec.crop > spec.resize:
        raise SpecError(f"{source}: [{entry}]: crop {spec.crop} is larger than resize {spec.resize}")
    if any(s <= 0 for s in spec.std):
        raise SpecError(f"{source}: [{entry}]: std must be positive, found {list(spec.std)}")
    return spec


def _hex(reader: _Reader, key: str, lengths: tuple[int, ...]) -> str | None:
    value = reader.get(key, str, f"a hex string of length {'/'.join(map(str, lengths))}", None)
    if value is None:
        return None
    value = value.lower()
    if len(value) not in lengths or any(c not in "0123456789abcdef" for c in value):
        raise reader.fail(key, f"a hex string of length {'/'.join(map(str, lengths))}", value)
    return value


def _batch_sizes(reader: _Reader, key: str) -> tuple[int, ...]:
    expected = "a non-empty list of distinct integers in [1, 4096]"
    value = reader.get(key, list, expected)
    if (
        not value
        or not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= 4096 for b in value)
        or len(set(value)) != len(value)
    ):
        raise reader.fail(key, expected, value)
    return tuple(value)


def _model(source: str, name: str, table: Mapping[str, Any]) -> ModelSpec:
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [models.{name}]: expected a table, found {table!r}")
    r = _Reader(source, f"models.{name}", table)

    a = _Reader(source, f"models.{name}.arch", r.table_("arch"))
    arch = ArchSpec(
        source=a.text("source", choices=ARCH_SOURCES),
        name=a.text("name"),
        # Both become part of cache keys (hashed as JSON): plain values only.
        kwargs=_plain_table(a, "kwargs"),
        random_init_kwargs=_plain_table(a, "random_init_kwargs"),
    )
    a.finish()

    w = _Reader(source, f"models.{name}.weights", r.table_("weights"))
    weights = WeightsSpec(
        filename=w.text("filename"),
        url=w.text("url", None),
        md5=_hex(w, "md5", (32,)),
        sha256=_hex(w, "sha256", (64,)),
        sha256_prefix=_hex(w, "sha256_prefix", tuple(range(6, 65))),
        package=w.text("package", None),
        package_path=w.text("package_path", None),
        key_mapping=w.text("key_mapping", "none", KEY_MAPPINGS),
        state_dict_key=w.text("state_dict_key", None),
    )
    w.finish()
    if "/" in weights.filename or "\\" in weights.filename or weights.filename.startswith("."):
        raise w.fail("filename", "a plain file name (no directories)", weights.filename)
    if not weights.has_checksum:
        raise w.fail("md5/sha256/sha256_prefix", "at least one checksum", "<none>")
    if bool(weights.package) != bool(weights.package_path):
        raise w.fail("package/package_path", "both or neither", (weights.package, weights.package_path))

    pre = _preprocess(source, f"models.{name}.preprocess", r.table_("preprocess"), None)
    variants = {
        vname: _preprocess(source, f"models.{name}.preprocess_variants.{vname}", vtable, pre)
        for vname, vtable in r.table_("preprocess_variants", {}).items()
    }

    p = _Reader(source, f"models.{name}.published", r.table_("published"))
    published = AccuracyRef(
        top1=p.number("top1", 0.0, 100.0),
        top5=p.number("top5", 0.0, 100.0, None),
        source=p.text("source"),
    )
    p.finish()
    if published.top5 is not None and published.top5 < published.top1:
        raise p.fail("top5", f"top5 >= top1 ({published.top1})", published.top5)

    batch_sizes = _batch_sizes(r, "batch_sizes")

    spec = ModelSpec(
        name=name,
        title=r.text("title"),
        seed=r.text("seed"),
        arch=arch,
        weights=weights,
        input_name=r.text("input_name"),
        output_name=r.text("output_name", "output"),
        num_classes=r.integer("num_classes", 2, 100000, 1000),
        preprocess=pre,
        preprocess_variants=variants,
        published=published,
        batch_sizes=tuple(batch_sizes),
        fixed_input_size=r.get("fixed_input_size", bool, "true or false", False),
        notes=r.text("notes", ""),
    )
    r.finish()
    return spec


def _check_name(source: str, kind: str, name: str) -> None:
    if not name or not all(c.isalnum() or c in "_." for c in name):
        raise SpecError(
            f"{source}: {kind} name {name!r} must be letters, digits, '_' or '.' "
            "(it becomes part of test ids and file names)"
        )


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"registry file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid TOML for this suite: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise SpecError(f"cannot read registry file {path}: {exc.strerror or exc}") from None


def load_models(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate the model registry (``fixtures/models.toml`` by default)."""
    path = Path(path) if path else FIXTURES_DIR / "models.toml"
    data = _load_toml(path)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpecError(f"{path}: expected one or more [models.<name>] tables, found none")
    extra = sorted(set(data) - {"models"})
    if extra:
        raise SpecError(f"{path}: unknown top-level table(s) {extra}; only [models.<name>] is allowed")
    out = {}
    for name, table in models.items():
        _check_name(str(path), "model", name)
        out[name] = _model(str(path), name, table)
    return out


def load_chips(path: Path | None = None) -> dict[str, ChipSpec]:
    """Read and validate ``fixtures/chips.toml``."""
    path = Path(path) if path else FIXTURES_DIR / "chips.toml"
    data = _load_toml(path)
    chips = data.get("chips")
    if not isinstance(chips, dict) or not chips:
        raise SpecError(f"{path}: expected one or more [chips.<name>] tables, found none")
    out: dict[str, ChipSpec] = {}
    for name, table in chips.items():
        _check_name(str(path), "chip", name)
        if not isinstance(table, dict):
            raise SpecError(f"{path}: [chips.{name}]: expected a table, found {table!r}")
        r = _Reader(str(path), f"chips.{name}", table)
        aliases = r.get("aliases", list, "a list of strings", [])
        if not all(isinstance(a, str) and a for a in aliases):
            raise r.fail("aliases", "a list of strings", aliases)
        options = r.get("backend_options", dict, "a table of strings", {})
        if not all(isinstance(v, str) for v in options.values()):
            raise r.fail("backend_options", "a table of strings", options)
        out[name] = ChipSpec(
            name=name,
            backend=r.text("backend"),
            aliases=tuple(aliases),
            devices_per_card=r.integer("devices_per_card", 1, 64, 1),
            precision=r.text("precision", "fp32", PRECISIONS),
            description=r.text("description", ""),
            backend_options=dict(options),
            rules=_rules(str(path), name, r.get("rules", list, "a list of {baseline, min_ratio} tables", [])),
        )
        r.finish()
    for chip in out.values():
        for rule in chip.rules:
            if rule.baseline not in out:
                raise SpecError(
                    f"{path}: [chips.{chip.name}] rule against {rule.baseline!r}: no such chip; "
                    f"known chips: {', '.join(out)}"
                )
    seen: dict[str, str] = {}
    for chip in out.values():
        for alias in (chip.name, *chip.aliases):
            if alias.lower() in seen and seen[alias.lower()] != chip.name:
                raise SpecError(f"{path}: name {alias!r} is used by both {seen[alias.lower()]} and {chip.name}")
            seen[alias.lower()] = chip.name
    return out


def _rules(source: str, chip: str, raw: list[Any]) -> tuple[PerfRule, ...]:
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SpecError(f"{source}: [chips.{chip}] rules[{i}]: expected a table {{baseline, min_ratio}}, found {item!r}")
        r = _Reader(source, f"chips.{chip}.rules[{i}]", item)
        rules.append(PerfRule(baseline=r.text("baseline"), min_ratio=r.number("min_ratio", 0.0, 1000.0),
                              source=r.text("source", "")))
        r.finish()
    return tuple(rules)


def resolve_chip(chips: Mapping[str, ChipSpec], name: str) -> ChipSpec:
    """Find a chip by name or alias, case-insensitively (``310P3``, ``Ascend710``...)."""
    for chip in chips.values():
        if name.lower() in (n.lower() for n in (chip.name, *chip.aliases)):
            return chip
    known = ", ".join(f"{c.name} ({', '.join(c.aliases)})" if c.aliases else c.name for c in chips.values())
    raise SpecError(f"unknown chip {name!r}; known chips: {known} (fixtures/chips.toml)")


def load_policy(path: Path | None = None) -> Policy:
    """Read ``fixtures/policy.toml``: tolerances and seeds the gates use."""
    path = Path(path) if path else FIXTURES_DIR / "policy.toml"
    data = _load_toml(path)
    acc = _Reader(str(path), "accuracy", data.get("accuracy", {}))
    conv = _Reader(str(path), "conversion", data.get("conversion", {}))
    policy = Policy(
        accuracy_tolerance_points=acc.number("tolerance_points", 0.0, 100.0),
        agreement_min_top1=acc.number("agreement_min_top1", 0.0, 100.0),
        accuracy_batch_sizes=_batch_sizes(acc, "batch_sizes"),
        conversion_rtol=conv.number("rtol", 0.0, 1.0),
        conversion_min_cosine=conv.number("min_cosine", -1.0, 1.0),
        calibration_images=conv.integer("calibration_images", 0, 100000),
        seed=conv.integer("seed", 0, 2**31 - 1),
    )
    acc.finish()
    conv.finish()
    perf = _Reader(str(path), "perf", data.get("perf", {}))
    defaults = TimingPolicy()
    timing = TimingPolicy(
        warmup_runs=perf.integer("warmup_runs", 0, 10000, defaults.warmup_runs),
        min_runs=perf.integer("min_runs", 1, 10**6, defaults.min_runs),
        min_seconds=perf.number("min_seconds", 0.0, 3600.0, defaults.min_seconds),
        max_seconds=perf.number("max_seconds", 0.0, 86400.0, defaults.max_seconds),
        ring_images=perf.integer("ring_images", 1, 10**6, defaults.ring_images),
        computed_rtol=perf.number("computed_rtol", 0.0, 1.0, defaults.computed_rtol),
    )
    perf.finish()
    if timing.max_seconds < timing.min_seconds:
        raise SpecError(f"{path}: [perf] max_seconds {timing.max_seconds} is below min_seconds {timing.min_seconds}")
    hist = _Reader(str(path), "history", data.get("history", {}))
    hist_defaults = HistoryPolicy()
    history = HistoryPolicy(
        regression_top1_points=hist.number("regression_top1_points", 0.0, 100.0, hist_defaults.regression_top1_points),
        regression_throughput_percent=hist.number(
            "regression_throughput_percent", 0.0, 100.0, hist_defaults.regression_throughput_percent),
    )
    hist.finish()
    extra = sorted(set(data) - {"accuracy", "conversion", "perf", "history"})
    if extra:
        raise SpecError(f"{path}: unknown table(s) {extra}; allowed: [accuracy], [conversion], [perf], [history]")
    return replace(policy, timing=timing, history=history)


def as_dict(obj: Any) -> Any:
    """A JSON-ready view of a spec dataclass (for manifests and result records)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: as_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj
