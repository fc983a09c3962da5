"""The loaders of ``fixtures/*.toml``: models, chips and policy, validated into frozen specs;
finding a chip by alias; a JSON-ready view of any spec.

Each loader reads its file with ``harness.specs.reader`` and refuses anything malformed with a
SpecError naming the file, the entry, the field, what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from harness.specs.chip import PRECISIONS, ChipSpec, PerfRule
from harness.specs.model import (
    ARCH_SOURCES,
    INTERPOLATIONS,
    KEY_MAPPINGS,
    LIBRARY_PREFIXES,
    RESIZE_METHODS,
    AccuracyRef,
    ArchSpec,
    ModelSpec,
    PreprocessSpec,
    WeightsSpec,
)
from harness.specs.policy import TOLERANCE_RULES, AccuracyPolicy, AccuracyTolerance, Policy
from harness.specs.reader import (
    Reader,
    SpecError,
    batch_sizes,
    check_name,
    hex_string,
    load_toml,
    plain_table,
    triple,
)
from harness.specs.settings import read_declared, read_tables

# The repository's fixtures/: harness/specs/load.py -> harness/specs -> harness -> the repository.
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# fixtures/models.toml


def _preprocess(source: str, entry: str, table: Mapping[str, Any], base: PreprocessSpec | None) -> PreprocessSpec:
    r = Reader(source, entry, table)
    b = base
    spec = PreprocessSpec(
        resize=r.integer("resize", 1, 4096, *((b.resize,) if b else ())),
        crop=r.integer("crop", 1, 4096, *((b.crop,) if b else ())),
        interpolation=r.text("interpolation", b.interpolation if b else "bilinear", INTERPOLATIONS),
        method=r.text("method", b.method if b else "resize_crop", RESIZE_METHODS),
        mean=triple(r, "mean", b.mean if b else PreprocessSpec.mean),
        std=triple(r, "std", b.std if b else PreprocessSpec.std),
    )
    r.finish()
    if spec.crop > spec.resize:
        raise SpecError(f"{source}: [{entry}]: crop {spec.crop} is larger than resize {spec.resize}")
    if any(s <= 0 for s in spec.std):
        raise SpecError(f"{source}: [{entry}]: std must be positive, found {list(spec.std)}")
    return spec


class _Collector:
    """Reads each part of an entry on its own, so that one bad field does not hide the next: every
    problem of the entry is reported at once (:meth:`check`)."""

    def __init__(self, source: str, entry: str) -> None:
        self.source, self.entry = source, entry
        self.errors: list[SpecError] = []

    def take(self, read: Callable[[], T]) -> T:
        """``read()``; on a SpecError, the error is kept and None stands in (:meth:`check` raises
        before any stand-in is used)."""
        try:
            return read()
        except SpecError as error:
            self.errors.append(error)
            return cast(T, None)

    def check(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            lines = "".join(f"\n    {str(e).removeprefix(self.source + ': ')}" for e in self.errors)
            error = SpecError(f"{self.source}: [{self.entry}]: {len(self.errors)} problems:{lines}")
            error.problems = tuple(p for e in self.errors for p in e.problems)
            raise error


def _arch(source: str, name: str, r: Reader) -> ArchSpec:
    a = Reader(source, f"models.{name}.arch", r.table_("arch"))
    arch = ArchSpec(
        source=a.text("source", choices=ARCH_SOURCES),
        name=a.text("name"),
        # Both become part of cache keys (hashed as JSON): plain values only.
        kwargs=plain_table(a, "kwargs"),
        random_init_kwargs=plain_table(a, "random_init_kwargs"),
    )
    a.finish()
    return arch


def _weights(source: str, name: str, r: Reader) -> WeightsSpec:
    w = Reader(source, f"models.{name}.weights", r.table_("weights"))
    weights = WeightsSpec(
        filename=w.text("filename"),
        url=w.text("url", None),
        md5=hex_string(w, "md5", (32,)),
        sha256=hex_string(w, "sha256", (64,)),
        sha256_prefix=hex_string(w, "sha256_prefix", tuple(range(6, 65))),
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
    return weights


def _published(source: str, name: str, r: Reader) -> AccuracyRef:
    p = Reader(source, f"models.{name}.published", r.table_("published"))
    published = AccuracyRef(
        top1=p.number("top1", 0.0, 100.0),
        top5=p.number("top5", 0.0, 100.0, None),
        source=p.text("source"),
    )
    p.finish()
    if published.top5 is not None and published.top5 < published.top1:
        raise p.fail("top5", f"top5 >= top1 ({published.top1})", published.top5)
    return published


def _model(source: str, name: str, table: Mapping[str, Any]) -> ModelSpec:
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [models.{name}]: expected a table, found {table!r}")
    r = Reader(source, f"models.{name}", table)
    c = _Collector(source, f"models.{name}")
    arch = c.take(lambda: _arch(source, name, r))
    weights = c.take(lambda: _weights(source, name, r))
    pre = c.take(lambda: _preprocess(source, f"models.{name}.preprocess", r.table_("preprocess"), None))
    variants: dict[str, PreprocessSpec] = {}
    for vname, vtable in (c.take(lambda: r.table_("preprocess_variants", {})) or {}).items():
        if pre is not None:  # a variant is read over the model's own preprocess

            def variant(entry: str = f"models.{name}.preprocess_variants.{vname}",
                        table: Mapping[str, Any] = vtable, base: PreprocessSpec = pre) -> PreprocessSpec:
                return _preprocess(source, entry, table, base)

            variants[vname] = c.take(variant)
    published = c.take(lambda: _published(source, name, r))
    values: dict[str, Any] = {
        "title": c.take(lambda: r.text("title")),
        "seed": c.take(lambda: r.text("seed")),
        "input_name": c.take(lambda: r.text("input_name")),
        "output_name": c.take(lambda: r.text("output_name", "output")),
        "num_classes": c.take(lambda: r.integer("num_classes", 2, 100000, 1000)),
        "batch_sizes": c.take(lambda: tuple(batch_sizes(r, "batch_sizes"))),
        "fixed_input_size": c.take(lambda: r.get("fixed_input_size", bool, "true or false", False)),
        "notes": c.take(lambda: r.text("notes", "")),
        "same_as": c.take(lambda: _same_as(r)),
    }
    tolerance = c.take(lambda: r.table_("accuracy_tolerance", None))
    own = None if tolerance is None else c.take(
        lambda: accuracy_tolerance(source, f"models.{name}.accuracy_tolerance", tolerance))
    c.take(r.finish)
    c.check()
    spec = ModelSpec(name=name, arch=arch, weights=weights, preprocess=pre, preprocess_variants=variants,
                     published=published, **values)
    return spec if own is None else replace(spec, accuracy_tolerance=own)


def _same_as(r: Reader) -> str | None:
    """``same_as``: a library name (``tv:NAME[.WEIGHTS]``, ``timm:ARCH[.TAG]``), checked for form
    only here; tests/specs/test_library_models.py checks that it exists and its figures agree."""
    value: str | None = r.text("same_as", None)
    if value is not None:
        prefix, _, rest = value.partition(":")
        if prefix not in LIBRARY_PREFIXES or not rest or any(c in rest for c in "*?[ "):
            raise r.fail("same_as", "a library model name like 'tv:resnext50_32x4d.IMAGENET1K_V1' or "
                         "'timm:resnest50d.in1k' (python -m harness models lists them)", value)
    return value


def load_models(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate the model registry (``fixtures/models.toml`` by default)."""
    path = Path(path) if path else FIXTURES_DIR / "models.toml"
    data = load_toml(path)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpecError(f"{path}: expected one or more [models.<name>] tables, found none")
    extra = sorted(set(data) - {"models"})
    if extra:
        raise SpecError(f"{path}: unknown top-level table(s) {extra}; only [models.<name>] is allowed")
    out, errors = {}, []
    for name, table in models.items():
        try:
            check_name(str(path), "model", name)
            out[name] = _model(str(path), name, table)
        except SpecError as error:
            errors.append(error)
    _raise_all(str(path), errors)
    return out


def _raise_all(source: str, errors: list[SpecError]) -> None:
    """Every broken entry of a file at once (each entry's first problem), as one SpecError."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        lines = "".join(f"\n  {str(e).removeprefix(source + ': ')}" for e in errors)
        error = SpecError(f"{source}: {len(errors)} entries have problems:{lines}")
        error.problems = tuple(p for e in errors for p in e.problems)
        raise error


# --------------------------------------------------------------------------------------------
# fixtures/chips.toml


def load_chips(path: Path | None = None) -> dict[str, ChipSpec]:
    """Read and validate ``fixtures/chips.toml``."""
    path = Path(path) if path else FIXTURES_DIR / "chips.toml"
    data = load_toml(path)
    chips = data.get("chips")
    if not isinstance(chips, dict) or not chips:
        raise SpecError(f"{path}: expected one or more [chips.<name>] tables, found none")
    out: dict[str, ChipSpec] = {}
    errors: list[SpecError] = []
    for name, table in chips.items():
        try:
            out[name] = _chip(str(path), name, table)
        except SpecError as error:
            errors.append(error)
    _raise_all(str(path), errors)
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


def _chip(source: str, name: str, table: object) -> ChipSpec:
    check_name(source, "chip", name)
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [chips.{name}]: expected a table, found {table!r}")
    r = Reader(source, f"chips.{name}", table)
    c = _Collector(source, f"chips.{name}")

    def aliases() -> tuple[str, ...]:
        found = r.get("aliases", list, "a list of strings", [])
        if not all(isinstance(a, str) and a for a in found):
            raise r.fail("aliases", "a list of strings", found)
        return tuple(found)

    def options() -> dict[str, str]:
        found = r.get("backend_options", dict, "a table of strings", {})
        if not all(isinstance(v, str) for v in found.values()):
            raise r.fail("backend_options", "a table of strings", found)
        return dict(found)

    values: dict[str, Any] = {
        "backend": c.take(lambda: r.text("backend")),
        "aliases": c.take(aliases),
        "devices_per_card": c.take(lambda: r.integer("devices_per_card", 1, 64, 1)),
        "precision": c.take(lambda: r.text("precision", "fp32", PRECISIONS)),
        "description": c.take(lambda: r.text("description", "")),
        "backend_options": c.take(options),
        "rules": c.take(lambda: _rules(source, name, r.get("rules", list, "a list of {baseline, min_ratio} tables",
                                                            []))),
    }
    c.take(r.finish)
    c.check()
    return ChipSpec(name=name, **values)


def _rules(source: str, chip: str, raw: list[Any]) -> tuple[PerfRule, ...]:
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SpecError(f"{source}: [chips.{chip}] rules[{i}]: expected a table {{baseline, min_ratio}}, "
                            f"found {item!r}")
        r = Reader(source, f"chips.{chip}.rules[{i}]", item)
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


# --------------------------------------------------------------------------------------------
# fixtures/policy.toml


def load_policy(path: Path | None = None) -> Policy:
    """Read ``fixtures/policy.toml``: tolerances and seeds the gates use. Checked against the
    declarations of harness/specs/policy.py; every problem of the file is one SpecError."""
    path = Path(path) if path else FIXTURES_DIR / "policy.toml"
    return read_tables(Policy, str(path), load_toml(path))


def accuracy_tolerance(source: str, entry: str, table: Mapping[str, Any]) -> AccuracyTolerance:
    """A per-model ``accuracy_tolerance = { rule = ..., points | fraction = ... }`` table.

    ``rule`` is required; ``points`` goes with ``absolute`` and ``fraction`` with ``relative``,
    and the other one is refused (it would be silently ignored).
    """
    r = Reader(source, entry, table)
    rule = r.text("rule", choices=TOLERANCE_RULES)
    # The ranges of [accuracy] tolerance_points and tolerance_fraction in fixtures/policy.toml.
    if rule == "absolute":
        points = read_declared(r, "points", AccuracyPolicy, "tolerance_points")
        assert isinstance(points, float)
        tolerance = AccuracyTolerance(rule=rule, points=points)
        wrong = "fraction"
    else:
        fraction = read_declared(r, "fraction", AccuracyPolicy, "tolerance_fraction")
        assert isinstance(fraction, float)
        tolerance = AccuracyTolerance(rule=rule, fraction=fraction)
        wrong = "points"
    if wrong in table:
        raise r.fail(wrong, f"no {wrong!r} with rule = {rule!r} (it applies to the other rule only)",
                     table[wrong])
    r.finish()
    return tolerance


# --------------------------------------------------------------------------------------------


def as_dict(obj: Any) -> Any:
    """A JSON-ready view of a spec dataclass (for manifests and result records)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: as_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj
