"""``python -m harness localize``: which node of a converted model first diverges from the reference.

    python -m harness localize --reference REF.onnx --candidate CAND.onnx --model NAME \\
        (--imagenet DIR [--limit N] | --embedded) --out DIR
    python -m harness localize --reference REF.onnx --backend openvino --precision bf16 ...

The reference runs on ONNX Runtime, CPU, fp32; the candidate is another ONNX file (run on ONNX
Runtime) or the reference compiled for ``--backend`` at ``--precision``. ``--model`` gives the
preprocessing recipe (fixtures/models.toml). Writes DIR/layers.csv and DIR/summary.json (see
docs/localize.md); the last line printed is ``first divergent node: <name> (<op>)``.

Exit status: 0 localised (whether or not a node is over threshold: the last line says); 2 bad
input (one ``error:`` line, no traceback); 3 the backend or precision cannot run here (one
``unavailable:`` line saying what is missing).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from harness import options
from harness.errors import NotApplicable, UsageError
from harness.options import path, positive_int
from harness.safe_names import printable
from harness.specs.policy_doc import describe

NAME = "localize"
EXIT_OK, EXIT_UNAVAILABLE = 0, 3


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        NAME, help="layer-by-layer localisation of an accuracy loss: the first node that diverges",
        description="Compare a candidate with the reference ONNX (ONNX Runtime, CPU, fp32) tensor by tensor on the "
        "images whose outputs differ most; write DIR/layers.csv and DIR/summary.json.",
    )
    p.add_argument("--reference", type=path, required=True, metavar="REF.onnx", help="the reference ONNX model")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--candidate", type=path, metavar="CAND.onnx",
                       help="a candidate ONNX with the reference's tensor names (run on ONNX Runtime, CPU)")
    options.BACKEND.add_to(which, help="compile the reference for this backend instead (with --precision)")
    options.PRECISION.add_to(p, default="fp32", help="the backend's precision (default fp32; onnxruntime fp16 = "
                             "onnxconverter-common float16)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a backend option as in fixtures/chips.toml backend_options (e.g. soc_version=Ascend310P3)")
    p.add_argument("--model", required=True, metavar="NAME", help="registered model whose preprocessing recipe to use")
    data = p.add_mutually_exclusive_group(required=True)
    options.IMAGENET.add_to(data)
    data.add_argument("--embedded", action="store_true", help="the suite's embedded synthetic images")
    options.IMAGENET_LABELS.add_to(p)
    options.LIMIT.add_to(p, help="with --imagenet: the first pass looks at a deterministic subset of N images")
    p.add_argument("--images", type=positive_int("images", 16), metavar="K", help="compare layers on the K most "
                   "divergent images (default: " + describe("localize.images") + ")")
    p.add_argument("--method", choices=("auto", "expose", "bisect"), default="auto",
                   help="auto (default): expose every tensor unless that changes the candidate's numbers, then bisect")
    p.add_argument("--exhaustive", action="store_true", help="with bisect: probe every tensor (one compile per node)")
    p.add_argument("--batch", type=positive_int("images per run", 8), default=8, metavar="B",
                   help="images per run (default 8)")
    p.add_argument("--out", type=path, required=True, metavar="DIR", help="where layers.csv and summary.json go")
    p.set_defaults(main=main)


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--backend-option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def _images(args: argparse.Namespace) -> Any:
    """The preprocessed images of --imagenet / --embedded with --model's recipe."""
    from harness import data
    from harness.cache import ArtifactCache, default_cache_root
    from harness.localize import Images
    from harness.run.workbench import EMBEDDED_IMAGES, EMBEDDED_SEED
    from harness.specs import load_models, load_policy

    models = load_models()
    if args.model not in models:
        raise UsageError(f"unknown model {args.model!r}; registered: {', '.join(models)} (fixtures/models.toml)")
    spec = models[args.model]
    if args.limit is not None and args.embedded:  # two options (a positive N was checked at parse time)
        raise UsageError("--limit goes with --imagenet, not --embedded")
    if args.imagenet_labels is not None and args.embedded:
        raise UsageError("--imagenet-labels goes with --imagenet, not --embedded")
    cache = ArtifactCache(default_cache_root())
    if args.embedded:
        listing = data.list_dataset(data.synthetic_dataset(cache, EMBEDDED_IMAGES, seed=EMBEDDED_SEED))
    else:
        listing = data.list_dataset(args.imagenet, args.imagenet_labels, limit=args.limit)
    budget = load_policy().data.decode_memory_mb
    return Images.from_prepared(data.prepare_dataset(listing, spec.preprocess, cache, decode_memory_mb=budget))


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6f}"


def main(args: argparse.Namespace) -> int:
    from harness.localize import backend_target, graph, localize
    from harness.localize.targets import OrtTarget, Target

    if args.backend is not None:
        from harness.backends.base import known_backends

        if args.backend not in known_backends():
            raise UsageError(f"unknown --backend {args.backend!r}; known backends: {', '.join(known_backends())}")
    reference = graph.load(args.reference)
    images = _images(args)
    try:
        target: Target
        if args.candidate is not None:
            target = OrtTarget(graph.load(args.candidate), f"{args.candidate} on onnxruntime CPU", level="all")
        else:
            target = backend_target(reference, args.backend, args.precision, images.input_shape,
                                    _options(args.backend_option))
        try:
            summary = localize(reference, target, images, count=args.images, method=args.method, out_dir=args.out,
                               batch=args.batch, exhaustive=args.exhaustive, reference_label=str(args.reference))
        finally:
            target.close()
    except NotApplicable as exc:
        print(f"python -m harness {NAME}: unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"reference: {printable(str(summary.reference))} (onnxruntime CPU fp32)")
    print(f"candidate: {printable(str(summary.candidate))}")
    print(f"images: {len(summary.images)} most divergent of {summary.images_considered} "
          f"({summary.top1_disagreements} with another top-1); final output cosine {_fmt(summary.final_cosine)}")
    print(f"method: {summary.method} ({summary.method_reason})")
    print(f"tensors compared: {summary.tensors_compared} of {summary.nodes} nodes; "
          f"classification: {summary.classification}")
    print("worst nodes (lowest cosine):")
    for row in summary.worst_nodes:
        m = row.metrics
        if m is not None:
            print(f"  #{row.index:<4} {printable(row.node)} ({printable(row.op)}) cosine {_fmt(m.cosine)} "
                  f"max|diff| {m.max_abs_diff:.4g} "
                  f"rmse {m.rmse:.4g}{'  OVER' if row.over else ''}")
    print(f"written: {summary.layers_csv}, {summary.summary_json} ({summary.seconds:.1f} s)")
    print(printable(summary.last_line()))
    return EXIT_OK
