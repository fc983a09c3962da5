"""``python -m harness models [--source curated|tv|timm] [PATTERN...]``: the models ``--models`` takes.

One line per model, starting with its name (curated names of fixtures/models.toml, ``tv:...``,
``timm:...``), then the published top-1/top-5 and the preprocessing recipe the certification
uses, then in brackets what else a reader should know: the short name that means these weights
(``= tv:resnet50``), a curated entry's library twin, a timm figure measured with another recipe
than the ``pretrained_cfg``'s. Exit status 0; 2 when a PATTERN matches nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from harness.specs import ModelSpec, SpecError

NAME = "models"
SOURCES = ("curated", "tv", "timm")


def add_parser(commands: Any) -> None:
    models = commands.add_parser(
        NAME, help="list the certifiable models: curated, torchvision (tv:...) and timm (timm:...)",
        description="List the models --models takes, one line each: name, published top-1/top-5, "
        "preprocessing recipe (method resize/crop interpolation mean std), notes. docs/models.md explains the names.",
    )
    models.add_argument("--source", choices=SOURCES, action="append",
                        help="only these (repeatable; default: all three; tv and timm import their library)")
    models.add_argument("patterns", nargs="*", metavar="PATTERN",
                        help="a glob on the name, with or without its tv:/timm: prefix ('tv:resnet*', 'resnext*'), "
                        "or a part of the name ('resnet50'); default: every model")
    models.set_defaults(main=main)


def _numbers(values: Iterable[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def recipe(spec: ModelSpec) -> str:
    """The preprocessing of ``spec`` in one token group: ``resize_crop 232/224 bilinear mean ... std ...``."""
    pre = spec.preprocess
    return (f"{pre.method} {pre.resize}/{pre.crop} {pre.interpolation} "
            f"mean {_numbers(pre.mean)} std {_numbers(pre.std)}")


def describe(spec: ModelSpec, short_names: Iterable[str] = ()) -> str:
    """One listing line: name, top-1/top-5, recipe, [notes]."""
    top5 = f"{spec.published.top5:.3f}" if spec.published.top5 is not None else "-"
    notes = [f"= {', '.join(short_names)}"] if short_names else []
    if spec.same_as:
        notes.append(f"same as {spec.same_as}")
    if spec.library is not None and spec.library.recipe_note:
        notes.append(spec.library.recipe_note)
    tail = f"  [{'; '.join(notes)}]" if notes else ""
    return f"{spec.name}  {spec.published.top1:.3f}/{top5}  {recipe(spec)}{tail}"


def _matches(name: str, pattern: str) -> bool:
    bare = name.split(":", 1)[1] if ":" in name else name
    if any(c in pattern for c in "*?["):
        return fnmatchcase(name, pattern) or fnmatchcase(bare, pattern)
    return pattern.lower() in name.lower()


def _short_names(source: str) -> dict[str, list[str]]:
    from harness.specs.library import SIZE_MARK, aliases

    out: dict[str, list[str]] = {}
    for alias, full in aliases(source).items():
        if SIZE_MARK not in alias:
            out.setdefault(full, []).append(alias)
    return out


def main(args: argparse.Namespace) -> int:
    from harness.specs import catalogue, load_models

    sources = [s for s in SOURCES if s in (args.source or SOURCES)]
    lines = []
    for source in sources:
        specs = load_models() if source == "curated" else catalogue(source)
        short = {} if source == "curated" else _short_names(source)
        for name in sorted(specs):
            if not args.patterns or any(_matches(name, p) for p in args.patterns):
                lines.append(describe(specs[name], short.get(name, ())))
    if not lines:
        raise SpecError(f"no {'/'.join(sources)} model matches {' '.join(args.patterns)!r}; "
                        "run 'python -m harness models' without a pattern to list them all")
    print("\n".join(lines))
    return 0
