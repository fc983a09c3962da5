"""Library models by name: every ImageNet-1k classifier of the installed torchvision and timm as
a :class:`ModelSpec`, with the library's own published accuracy and preprocessing recipe.

Names (docs/models.md has the full story):

- ``tv:<builder>.<WEIGHTS>``: one member of the builder's weights enum (``tv:resnet50.IMAGENET1K_V2``);
  ``tv:<builder>`` and ``tv:<builder>.DEFAULT`` name the builder's DEFAULT weights and resolve to
  the full name. Figures, recipe, URL and checksum come from the installed wheel, offline.
- ``timm:<arch>.<tag>``: one row of timm's results table (``fixtures/timm-results-imagenet.csv``),
  the row at the tag's ``pretrained_cfg`` input size; ``timm:<arch>.<tag>@<size>`` the same
  weights measured at another test size (the table's second row for that tag); ``timm:<arch>``
  timm's default tag of the architecture.
- Globs (``*``, ``?``, ``[...]``) match full names: ``tv:*``, ``timm:resnext*``; without a prefix,
  curated names (fixtures/models.toml) only. A curated entry's ``same_as`` twin resolves to it.

torchvision and timm are imported only when a ``tv:``/``timm:`` name is asked: resolving curated
names stays instant (the pytest plugin does it at start-up)."""

from __future__ import annotations

import csv
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

from harness.specs.load import FIXTURES_DIR
from harness.specs.model import (
    INTERPOLATIONS,
    LIBRARY_PREFIXES,
    AccuracyRef,
    ArchSpec,
    LibraryRef,
    ModelSpec,
    PreprocessSpec,
    WeightsSpec,
)
from harness.specs.reader import SpecError

TIMM_RESULTS = FIXTURES_DIR / "timm-results-imagenet.csv"
INPUT_NAME, OUTPUT_NAME = "input", "output"
BATCH_SIZES = (1, 4, 8, 16, 32, 64)
SIZE_MARK = "@"
GLOB_CHARS = "*?["
_SEED = "none: a library entry (harness.specs.library)"
# torch.hub's HASH_REGEX: the file name of a hub checkpoint carries the start of its SHA-256.
_HUB_HASH = re.compile(r"-([a-f0-9]{6,64})\.")
_LISTING = "python -m harness models --source {prefix} [PATTERN]"


@dataclass(frozen=True)
class Catalogue:
    """Every certifiable name of one library: full names, and the short names that resolve to them."""

    prefix: str
    specs: dict[str, ModelSpec]
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical(self, name: str) -> str | None:
        """The full name ``name`` means (exact, an alias, or case-insensitively unique), or None."""
        if name in self.specs:
            return name
        if name in self.aliases:
            return self.aliases[name]
        folded = [n for n in (*self.specs, *self.aliases) if n.lower() == name.lower()]
        return self.canonical(folded[0]) if len(folded) == 1 else None


# --------------------------------------------------------------------------------------------
# torchvision: the weights enums of the installed wheel


def _tv_kwargs(builder: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What torchvision's builder sets itself when given these weights, before loading them:
    with ``weights=None`` plus these keywords it builds the module the checkpoint fits."""
    if builder in ("googlenet", "inception_v3"):
        # transform_input re-normalizes the input inside the model: part of the published model.
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    if builder.startswith("vit_"):
        return {"image_size": int(meta["min_size"][0])}
    if builder.startswith("maxvit_"):
        return {"input_size": [int(s) for s in meta["min_size"]]}
    return {}


def _triple(values: Sequence[Any]) -> tuple[float, float, float]:
    red, green, blue = values  # a per-channel mean or std: exactly three values, else a ValueError
    return float(red), float(green), float(blue)


def _tv_spec(builder: str, weights: Any, version: str, default: bool) -> ModelSpec | None:
    meta = weights.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K")
    # VGG16's IMAGENET1K_FEATURES, e.g., has no classifier: no categories, NaN figures.
    if not metrics or len(meta.get("categories") or ()) != 1000 or not math.isfinite(metrics["acc@1"]):
        return None
    t = weights.transforms()  # torchvision's ImageClassification: Resize(short side), CenterCrop, Normalize
    resize, crop = list(getattr(t, "resize_size", ())), list(getattr(t, "crop_size", ()))
    if len(resize) != 1 or len(crop) != 1:
        return None
    enum_name = f"{type(weights).__name__}.{weights.name}"
    filename = weights.url.rsplit("/", 1)[-1]
    found = _HUB_HASH.search(filename)
    kwargs = _tv_kwargs(builder, meta)
    return ModelSpec(
        name=f"tv:{builder}.{weights.name}",
        title=f"{builder} {weights.name} (torchvision)",
        seed=_SEED,
        arch=ArchSpec(source="torchvision", name=builder, kwargs=kwargs),
        weights=WeightsSpec(filename=filename, url=weights.url, sha256_prefix=found.group(1) if found else None),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        num_classes=1000,
        preprocess=PreprocessSpec(
            resize=int(resize[0]), crop=int(crop[0]), interpolation=t.interpolation.value, method="resize_crop",
            mean=_triple(t.mean), std=_triple(t.std),
        ),
        preprocess_variants={},
        published=AccuracyRef(
            top1=float(metrics["acc@1"]), top5=float(metrics["acc@5"]),
            source=f"torchvision {version} {enum_name}.meta['_metrics']['ImageNet-1K']",
        ),
        batch_sizes=BATCH_SIZES,
        fixed_input_size=bool(kwargs.keys() & {"image_size", "input_size"}),
        notes=f"training recipe: {meta.get('recipe', 'not given')}",
        library=LibraryRef(library="torchvision", version=version, weights=enum_name, default=default,
                           num_params=int(meta["num_params"]) if "num_params" in meta else None),
    )


def _tv_catalogue() -> Catalogue:
    import torchvision
    from torchvision.models import get_model_weights, list_models

    version = torchvision.__version__
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    # module=torchvision.models: the classifiers only (not detection, video, quantization...).
    for builder in list_models(module=torchvision.models):
        enum = get_model_weights(builder)
        default = getattr(enum, "DEFAULT", None)
        for weights in enum:
            spec = _tv_spec(builder, weights, version, weights is default)
            if spec is not None:
                specs[spec.name] = spec
        if default is not None and f"tv:{builder}.{default.name}" in specs:
            aliases[f"tv:{builder}"] = aliases[f"tv:{builder}.DEFAULT"] = f"tv:{builder}.{default.name}"
    return Catalogue("tv", specs, aliases)


# --------------------------------------------------------------------------------------------
# timm: architectures and pretrained_cfg from the package, figures from its results table


@dataclass(frozen=True)
class TimmRow:
    """One row of timm's results table: a tag's figures at one test size, with that size's recipe."""

    model: str
    img_size: int
    top1: float
    top5: float
    param_count: float  # millions
    crop_pct: float
    interpolation: str
    line: int


def read_timm_results(path: Path = TIMM_RESULTS) -> list[TimmRow]:
    """The rows of timm's results table (``fixtures/timm-results-imagenet.csv``), validated."""
    try:
        with Path(path).open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"model", "img_size", "top1", "top5", "param_count", "crop_pct", "interpolation"} - set(
                reader.fieldnames or ())
            if missing:
                raise SpecError(f"{path}: expected timm's results-imagenet.csv columns, missing {sorted(missing)}")
            raw_rows = list(reader)
    except OSError as exc:
        raise SpecError(f"cannot read timm's results table {path}: {exc.strerror or exc}") from None
    rows = []
    for line, raw in enumerate(raw_rows, start=2):
        try:
            row = TimmRow(model=raw["model"], img_size=int(raw["img_size"]), top1=float(raw["top1"]),
                          top5=float(raw["top5"]), param_count=float(raw["param_count"].replace(",", "")),
                          crop_pct=float(raw["crop_pct"]), interpolation=raw["interpolation"], line=line)
        except (TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"{path}:{line}: malformed row {raw}: {exc}") from None
        if row.interpolation not in INTERPOLATIONS or not 0 < row.crop_pct <= 2 or row.img_size <= 0:
            raise SpecError(f"{path}:{line}: expected an interpolation of {INTERPOLATIONS}, a crop_pct in (0, 2] "
                            f"and a positive img_size, found {raw}")
        rows.append(row)
    return rows


def _crop_pct(row: TimmRow, cfg: Mapping[str, Any]) -> float:
    """The row's crop_pct, or the pretrained_cfg's unrounded value the table rounded to 3 decimals."""
    for candidate in (cfg.get("crop_pct"), cfg.get("test_crop_pct")):
        if candidate and abs(candidate - row.crop_pct) < 5e-4:
            return float(candidate)
    return row.crop_pct


def _recipe_note(row: TimmRow, crop_pct: float, cfg: Mapping[str, Any]) -> str:
    size, cfg_crop, cfg_interp = cfg["input_size"][-1], cfg.get("crop_pct") or 0.875, cfg.get("interpolation")
    if (row.img_size, row.interpolation) == (size, cfg_interp) and abs(crop_pct - cfg_crop) < 5e-4:
        return ""
    test = cfg.get("test_input_size")
    which = " (its test_input_size)" if test and test[-1] == row.img_size else ""
    return (f"published figure measured at img_size {row.img_size}{which}, crop_pct {crop_pct:g}, "
            f"{row.interpolation}; timm's pretrained_cfg default is img_size {size}, crop_pct {cfg_crop:g}, "
            f"{cfg_interp}")


def _timm_weights(tag_name: str, cfg: Mapping[str, Any]) -> tuple[WeightsSpec, str]:
    """Never downloaded: a hub checkpoint is looked up in the weights dir (harness.model.checkpoint)."""
    if cfg.get("hf_hub_id"):
        return WeightsSpec(filename=f"{tag_name}.safetensors", hub_id=str(cfg["hf_hub_id"])), ""
    url = str(cfg.get("url") or "")
    filename = url.rsplit("/", 1)[-1] or f"{tag_name}.pth"
    found = _HUB_HASH.search(filename)
    return (WeightsSpec(filename=filename, sha256_prefix=found.group(1) if found else None),
            f"; weights: {url} (put the file in --weights-dir)" if url else "")


def _timm_spec(name: str, row: TimmRow, cfg: Mapping[str, Any], version: str, default: bool) -> ModelSpec | None:
    chans, height, width = cfg["input_size"]
    crop_mode = cfg.get("crop_mode") or "center"
    if chans != 3 or height != width or crop_mode not in ("center", "squash"):
        return None
    if cfg.get("num_classes") != 1000 or cfg.get("label_offset"):
        return None
    crop_pct = _crop_pct(row, cfg)
    kwargs = {"img_size": row.img_size} if cfg.get("fixed_input_size") and row.img_size != height else {}
    weights, where = _timm_weights(row.model, cfg)
    return ModelSpec(
        name=name,
        title=f"{row.model} (timm)",
        seed=_SEED,
        # zero_init_last=False where the constructor takes it (else random-weight parity
        # passes trivially); harness.model.architectures drops it where the constructor does not.
        arch=ArchSpec(source="timm", name=str(cfg["architecture"]), kwargs=kwargs,
                      random_init_kwargs={"zero_init_last": False}),
        weights=weights,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        num_classes=1000,
        preprocess=PreprocessSpec(
            resize=math.floor(row.img_size / crop_pct), crop=row.img_size, interpolation=row.interpolation,
            method="squash_crop" if crop_mode == "squash" else "resize_crop",
            mean=_triple(cfg["mean"]), std=_triple(cfg["std"]),
        ),
        preprocess_variants={},
        published=AccuracyRef(
            top1=row.top1, top5=row.top5,
            source=(f"timm results-imagenet.csv (fixtures/timm-results-imagenet.csv line {row.line}): {row.model} "
                    f"at img_size {row.img_size}, crop_pct {row.crop_pct:.3f}, {row.interpolation}"),
        ),
        batch_sizes=BATCH_SIZES,
        fixed_input_size=bool(cfg.get("fixed_input_size")),
        notes=f"param_count {row.param_count:g} M (results table){where}",
        library=LibraryRef(library="timm", version=version, weights=row.model, default=default,
                           test_size=row.img_size, recipe_note=_recipe_note(row, crop_pct, cfg)),
    )


def _timm_catalogue() -> Catalogue:
    import timm
    from timm.models import get_pretrained_cfg, get_pretrained_cfg_value

    by_tag: dict[str, list[TimmRow]] = {}
    for row in read_timm_results():
        by_tag.setdefault(row.model, []).append(row)
    available = set(timm.list_pretrained())
    default_tags: dict[str, str | None] = {}
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for tag_name, rows in by_tag.items():
        if tag_name not in available:
            continue
        found = get_pretrained_cfg(tag_name, allow_unregistered=False)  # a listed tag: never None
        if found is None:
            continue
        cfg = found.to_dict()  # type: ignore[no-untyped-call]  # timm leaves to_dict unannotated
        arch = str(cfg["architecture"])
        if arch not in default_tags:  # the architecture's default tag: its cfg registered without one
            default_tags[arch] = get_pretrained_cfg_value(arch, "tag")
        plain = next((r for r in rows if r.img_size == cfg["input_size"][-1]), rows[0])
        for row in sorted(rows, key=lambda r: r.img_size):
            name = f"timm:{tag_name}" + ("" if row is plain else f"{SIZE_MARK}{row.img_size}")
            is_default = row is plain and f"{arch}.{default_tags[arch]}" == tag_name
            spec = _timm_spec(name, row, cfg, timm.__version__, is_default)
            if spec is not None:
                specs[name] = spec
                if row is plain:
                    aliases[f"{name}{SIZE_MARK}{row.img_size}"] = name
                if is_default:
                    aliases[f"timm:{arch}"] = name
    return Catalogue("timm", specs, aliases)


@cache
def _catalogue(prefix: str) -> Catalogue:
    return _tv_catalogue() if prefix == "tv" else _timm_catalogue()


def catalogue(prefix: str) -> dict[str, ModelSpec]:
    """Every library entry of ``prefix`` (``tv`` or ``timm``), by full name (imports that library)."""
    if prefix not in LIBRARY_PREFIXES:
        raise SpecError(f"unknown model library {prefix!r}; expected one of {', '.join(LIBRARY_PREFIXES)}")
    return dict(_catalogue(prefix).specs)


def aliases(prefix: str) -> dict[str, str]:
    """The short names of ``prefix``'s entries (``tv:resnet50``, ``timm:resnest50d``) -> full names."""
    catalogue(prefix)  # refuses an unknown prefix
    return dict(_catalogue(prefix).aliases)


# --------------------------------------------------------------------------------------------
# Names and patterns


def _prefix(name: str) -> str | None:
    head, sep, _ = name.partition(":")
    if not sep:
        return None
    if head not in LIBRARY_PREFIXES:
        raise SpecError(f"unknown model library {head + ':'!r} in {name!r}; library models are named "
                        f"tv:NAME or timm:NAME, curated ones as in fixtures/models.toml")
    return head


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARS)


def _unknown(name: str, known: Sequence[str], where: str) -> SpecError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    return SpecError(f"unknown model {name!r} ({hint}); {where}")


def library_spec(name: str) -> ModelSpec:
    """The library entry ``name`` (``tv:...`` or ``timm:...``, full or short), without curated precedence."""
    prefix = _prefix(name)
    if prefix is None:
        raise SpecError(f"{name!r} is not a library model name; expected tv:NAME or timm:NAME")
    cat = _catalogue(prefix)
    found = cat.canonical(name)
    if found is not None:
        return cat.specs[found]
    where = f"list them: {_LISTING.format(prefix=prefix)}"
    if prefix == "timm":
        import timm

        if name[len("timm:"):].split(SIZE_MARK)[0] in timm.list_pretrained():
            where = (f"timm has these weights but its results table (fixtures/timm-results-imagenet.csv) gives "
                     f"no ImageNet-1k figure at that size to certify against; {where}")
    raise _unknown(name, [*cat.specs, *(a for a in cat.aliases if SIZE_MARK not in a)], where)


def _twins(registry: Mapping[str, ModelSpec], cat: Catalogue) -> dict[str, ModelSpec]:
    """Library full name -> the curated entry naming it as ``same_as`` (curated entries win)."""
    twins = {}
    for spec in registry.values():
        if spec.same_as and _prefix(spec.same_as) == cat.prefix:
            twins[cat.canonical(spec.same_as) or spec.same_as] = spec
    return twins


def _resolve_one(pattern: str, registry: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    prefix = _prefix(pattern)
    if prefix is None:
        if _is_glob(pattern):
            hits = [registry[n] for n in sorted(registry) if fnmatchcase(n, pattern)]
            if not hits:
                raise SpecError(f"--models pattern {pattern!r} matches none of fixtures/models.toml's models "
                                f"({', '.join(registry)}); library models match tv:PATTERN or timm:PATTERN")
            return hits
        if pattern in registry:
            return [registry[pattern]]
        raise _unknown(pattern, list(registry), "curated models are those of fixtures/models.toml; library "
                       "models are named tv:NAME or timm:NAME (python -m harness models lists them)")
    cat = _catalogue(prefix)
    if _is_glob(pattern):
        hits = [cat.specs[n] for n in sorted(cat.specs) if fnmatchcase(n, pattern)]
        if not hits:
            raise SpecError(f"--models pattern {pattern!r} matches none of the {len(cat.specs)} "
                            f"{LIBRARY_PREFIXES[prefix]} models; list them: {_LISTING.format(prefix=prefix)}")
    else:
        hits = [library_spec(pattern)]
    twins = _twins(registry, cat)
    return [twins.get(spec.name, spec) for spec in hits]


def resolve_models(patterns: Sequence[str], registry: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    """The models ``patterns`` select, by name, in the order asked, each once.

    ``patterns``: curated names (keys of ``registry``, i.e. fixtures/models.toml), library names
    (``tv:resnet50``, ``tv:resnet50.IMAGENET1K_V2``, ``timm:resnest50d.in1k``,
    ``timm:convnext_large.fb_in22k_ft_in1k@288``) and glob patterns of either (``tv:*``,
    ``timm:resnext*``, ``resnext*``). No pattern (or only blank ones): every curated model.
    A library name that is a curated entry's ``same_as`` gives that curated entry. An unknown
    name is a SpecError listing close matches, a glob matching nothing one too. torchvision /
    timm are imported only for ``tv:`` / ``timm:`` patterns."""
    selected: dict[str, ModelSpec] = {}
    asked = [p.strip() for p in patterns if p.strip()]
    if not asked:
        return dict(registry)
    for pattern in asked:
        for spec in _resolve_one(pattern, registry):
            selected.setdefault(spec.name, spec)
    return selected
