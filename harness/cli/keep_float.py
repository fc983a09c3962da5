"""``python -m harness keep-float``: the fewest layers to keep in float for a failing INT8 model to pass.

    python -m harness keep-float --model efficientnet_lite0 --imagenet DIR [--backend onnxruntime|openvino|ascend]
        [--scheme qdq-per-tensor] [--calibration CALDIR] [--keep-float N,...] [--threads N] [--batch-sizes 8]

ONNX Runtime: the measured search of harness.localize.keep_float (each candidate layer, and groups,
tried on the most divergent scored images; greedy by measured gain; pruned). OpenVINO: NNCF's
``quantize_with_accuracy_control``, then the layers it reverted reproduced as a ``--keep-float``
setting. Ascend: AMCT's ``accuracy_based_auto_calibration``, then the layers it rolled back reproduced
the same way; every Ascend model judged as its fake-quant ONNX on ONNX Runtime (no ATC or NPU here),
its speed not measured. Prints a table of the trials, the speed of fp32, the INT8 model and the setting found
(the suite's timing loop, one run), and as its last line the setting: ``--keep-float NODE,...``.

Exit status: 0 a setting was found (or the model passes as quantized); 1 none within
``[int8] keep_float_max`` layers; 2 bad input (one ``error:`` line); 3 the backend, NNCF or AMCT cannot
run here (one ``unavailable:`` line).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import options
from harness.errors import NotApplicable, UsageError
from harness.options import batch_sizes, positive_int
from harness.safe_names import printable
from harness.specs.policy_doc import describe

NAME = "keep-float"
EXIT_FOUND, EXIT_NOT_FOUND, EXIT_UNAVAILABLE = 0, 1, 3
SCHEMES = ("qdq-per-channel", "qdq-per-tensor")
HEADER = ("stage", "change", "float", "images", "top-1", "top-5", "drop top-1 (<= high 95%)", "agreement", "verdict")


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        NAME, help="the way back to float: the fewest layers to keep in float for an INT8 model to pass",
        description="Quantize --model (calibrated apart from the scored images), judge it with the paired gates "
        "against the fp32 torch reference and, when it fails, find the fewest layers to keep in float that make it "
        "pass; print every trial, the speed it costs and the --keep-float setting.",
    )
    p.add_argument("--model", required=True, metavar="NAME", help="a model of fixtures/models.toml")
    options.IMAGENET.add_to(p, required=True)
    options.IMAGENET_LABELS.add_to(p)
    options.LIMIT.add_to(p)
    options.BACKEND.add_to(p, default="onnxruntime", help="onnxruntime (the measured search, default), openvino "
                           "(NNCF's accuracy control) or ascend (AMCT's accuracy-based auto calibration, judged as "
                           "its fake-quant ONNX on ONNX Runtime)")
    p.add_argument("--scheme", choices=SCHEMES, help="override [int8] scheme: qdq-per-tensor quantizes weights "
                   "per tensor (the deliberately bad quantization; on openvino: NNCF's per-tensor weights)")
    options.CALIBRATION.add_to(p)
    options.KEEP_FLOAT.add_to(p, help="start from these ONNX nodes kept in float")
    options.THREADS.add_to(p)
    options.WORKERS.add_to(p)
    options.CACHE_DIR.add_to(p)
    p.add_argument("--batch-sizes", type=batch_sizes, default=(8,), metavar="B[,B]",
                   help="time fp32, int8 and the setting found at these batch sizes (default 8)")
    p.add_argument("--no-speed", action="store_true", help="do not time the models")
    p.add_argument("--max-layers", type=positive_int("layers", 24), metavar="N",
                   help="give up after keeping N layers in float (default: " + describe("int8.keep_float_max") + ")")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="openvino: NNCF's max_drop, ascend: AMCT's accepted top-1 drop, in points (default: the "
                   "policy's tolerance; the paired gate also needs the interval's upper bound under it)")
    p.set_defaults(main=main)


def _check(args: argparse.Namespace) -> Any:
    """The model's spec, after checking what can be checked before anything heavy runs."""
    from harness.localize.keep_float_run import BACKENDS
    from harness.specs import load_models

    models = load_models()
    if args.model not in models:
        raise UsageError(f"unknown model {args.model!r}; expected one of fixtures/models.toml: {', '.join(models)}")
    if not args.imagenet.is_dir():
        raise UsageError(f"--imagenet {args.imagenet}: no such directory; expected ImageNet val images "
                         "(DIR/val/*.JPEG + DIR/val_label.txt)")
    if args.backend not in BACKENDS:
        raise UsageError(f"--backend {args.backend!r}: the way back to float runs on {', '.join(BACKENDS[:-1])} or "
                         f"{BACKENDS[-1]}")
    return models[args.model]


def table(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text columns, the header first."""
    rows = [list(HEADER), *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def main(args: argparse.Namespace) -> int:
    spec = _check(args)
    from harness.localize import keep_float_run as run
    from harness.localize.keep_float import Trial, trial_rows
    from harness.run.workbench import RunConfig
    from harness.specs import load_policy

    policy = run.policy_with(load_policy(), args.scheme)
    if args.max_layers is not None:
        policy = replace(policy, int8=replace(policy.int8, keep_float_max=args.max_layers))
    cfg = RunConfig(imagenet=args.imagenet, imagenet_labels=args.imagenet_labels, limit=args.limit,
                    threads=args.threads, workers=args.workers, calibration=args.calibration,
                    keep_float=tuple(args.keep_float), **({"cache_dir": args.cache_dir} if args.cache_dir else {}))

    def shown(trial: Trial) -> None:
        if trial.stage != "candidate":
            print(printable(f"  {trial.stage}: {trial.label}: {len(trial.keep_float)} float, top-1 {trial.top1:.2f}, "
                            f"drop {trial.drop_top1:.2f} (<= {trial.drop_top1_high:.2f}), agreement "
                            f"{trial.top1_agreement:.2f}% -> {trial.verdict}"), flush=True)

    print(f"{args.model} on {args.backend}, scheme {policy.int8.scheme}: the way back to float", flush=True)
    try:
        if args.backend == run.ONNXRUNTIME:
            outcome = run.on_ort(cfg, policy, spec, shown)
        else:
            on_backend = run.on_ascend if args.backend == run.ASCEND else run.on_openvino
            with tempfile.TemporaryDirectory() as tmp:
                outcome = on_backend(cfg, policy, spec, Path(tmp), shown, args.max_drop)
        if not args.no_speed and args.backend != run.ASCEND:  # an Ascend speed needs an NPU
            outcome.speed = run.speeds(cfg, policy, spec, args.backend, outcome.found, tuple(args.batch_sizes))
    except NotApplicable as exc:
        print(f"python -m harness {NAME}: unavailable: {printable(str(exc))}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    from harness.localize.keep_float import KeepFloatResult

    rows = trial_rows(KeepFloatResult(trials=tuple(outcome.trials), found=outcome.found, subset=outcome.subset))
    candidates = [r for r in rows if r[0] == "candidate"]
    judged = [r for r in rows if r[0] != "candidate"]
    if candidates:
        best = sorted(candidates, key=lambda r: -int(r[8].split()[1]))[:10]
        print(f"candidates measured on the {outcome.subset} most divergent scored images: {len(candidates)}; "
              "the best:")
        for line in table(best)[1:]:
            print(printable("  " + line))
    print("trials judged on every scored image (paired drops and agreement against the fp32 torch reference):")
    for line in table(judged):
        print(printable("  " + line))
    for note in outcome.notes:
        print(printable(note))
    if outcome.speed:
        fp32 = outcome.speed.get("fp32", (0, 0.0))[1]
        for label, (batch, rate) in outcome.speed.items():
            ratio = f" ({rate / fp32:.2f}x fp32)" if fp32 else ""
            print(f"speed {label}: {rate:.1f} images/s at bs{batch}{ratio}")
    print(f"search: {outcome.seconds:.0f} s")
    if outcome.found is None:
        if outcome.backend == run.ASCEND:
            print("no setting found: the layers AMCT's auto calibration rolled back do not make the suite's gates "
                  "pass on the fake-quant model (a smaller --max-drop makes AMCT roll back more)")
        elif outcome.backend == run.OPENVINO:
            print("no setting found: the layers NNCF's accuracy control reverted do not make the suite's gates pass "
                  "(a smaller --max-drop makes NNCF revert more)")
        else:
            print(f"no setting found: keeping up to {policy.int8.keep_float_max} layers in float ([int8] "
                  "keep_float_max, --max-layers) did not make the suite's gates pass")
        return EXIT_NOT_FOUND
    final = outcome.final
    if final is not None:
        print(printable(f"result: top-1 {final.top1:.2f} top-5 {final.top5:.2f}, drop {final.drop_top1:.2f} "
                        f"(<= {final.drop_top1_high:.2f}), agreement {final.top1_agreement:.2f}% -> {final.verdict}"))
    print(printable("--keep-float " + ",".join(outcome.found)) if outcome.found else "--keep-float '' (none needed)")
    return EXIT_FOUND
