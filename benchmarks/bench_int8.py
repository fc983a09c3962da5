"""INT8 vs fp32 on real weights and real images, in one run (issue 26's closing-note figures).

    .venv/bin/python benchmarks/bench_int8.py --backend onnxruntime [--models efficientnet_lite0]
        [--batch-sizes 1,8,32] [--scheme qdq-per-tensor] [--keep-float N1,N2] [--search]

For each model: the int8 model's accuracy on the scored images (the data minus the calibration
images) against fp32 on the same images, the paired drop with its interval, agreement with the torch
reference, tied top-1 logits, the verdict of the suite's paired gates, calibration + quantization
time; then both precisions' batch sweeps (the suite's timing loop) and the speed-up at each one's
best batch. ``--search`` runs the way back to float on a failing quantization (ONNX Runtime: the
measured search of harness.localize.keep_float; OpenVINO: NNCF's accuracy control), as
``python -m harness keep-float`` does, and times fp32, the INT8 model and the setting found.
Needs /work/shared/datasets/imagenet-val-1300 (or --imagenet) and the real weights' packages.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenet-val-1300"


def _policy(scheme: str | None):
    from harness.specs import load_policy

    policy = load_policy()
    return replace(policy, int8=replace(policy.int8, scheme=scheme)) if scheme else policy


def evaluate(bench, spec, chip, batch: int):
    from harness.judge.gates import paired_accuracy_gates

    ev = bench.evaluate(spec, chip, batch, "imagenet")
    policy = bench.policy.for_precision(chip.precision)
    gates = paired_accuracy_gates(ev.reference_correct, ev.compiled_correct, policy)
    v = gates[0].values
    q = ev.quantization or {}
    print(f"  {chip.precision:5} on {ev.accuracy.count} scored images: top-1 {ev.accuracy.top1:.2f} top-5 "
          f"{ev.accuracy.top5:.2f} (torch fp32 {ev.reference.top1:.2f}/{ev.reference.top5:.2f}); drop top-1 "
          f"{v['paired_drop_top1']:.2f} [{v['paired_drop_top1_low95']:.2f}, {v['paired_drop_top1_high95']:.2f}], "
          f"top-5 {gates[1].values['paired_drop_top5']:.2f}; agreement {ev.agreement.top1_agreement:.2f}% "
          f"(min {policy.accuracy.agreement_min_top1}%); ties {q.get('logit_ties', '-')}; verdict "
          f"{'/'.join(g.verdict for g in gates)}")
    if q:
        info = q["quantization"]
        print(f"        {info['tool']} {info['version']} {info['scheme']} act {info['activation_type']} weights "
              f"{info['weight_type']}, float: {','.join(info['excluded_nodes'])}; calibration "
              f"{q['calibration_images']} images, overlap {q['calibration_overlap']}, {info['seconds']:.1f} s")
    return ev


def best(bench, spec, chip, sizes):
    from harness.run.sweep import run_sweep

    sweep = run_sweep(bench, spec, chip, sizes, "imagenet")
    top = max(sweep.measurements, key=lambda m: m.images_per_s)
    per = ", ".join(f"bs{m.batch_size} {m.images_per_s:.0f}" for m in sweep.measurements)
    print(f"  {chip.precision:5} images/s: {per}; best bs{top.batch_size} {top.images_per_s:.1f}")
    return top.images_per_s


def main() -> None:
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--models", default="efficientnet_lite0")
    ap.add_argument("--imagenet", type=Path, default=SHARED)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--scheme", default=None, help="override [int8] scheme (qdq-per-tensor: the bad one)")
    ap.add_argument("--keep-float", default="")
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    keep = tuple(n for n in args.keep_float.split(",") if n)
    cfg = RunConfig(imagenet=args.imagenet, threads=args.threads, keep_float=keep,
                    **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    bench = Workbench(cfg, _policy(args.scheme))
    cpu = replace(load_chips()["cpu"], backend=args.backend, backend_options={})
    for name in args.models.split(","):
        spec = load_models()[name]
        print(f"{name} on {args.backend}")
        fp32, int8 = replace(cpu, precision="fp32"), replace(cpu, precision="int8")
        started = time.perf_counter()
        ev = evaluate(bench, spec, int8, 8)
        print(f"  int8 evaluation {time.perf_counter() - started:.0f} s (calibration and quantization included)")
        if args.search:
            search(bench, spec, sizes, args.backend)
        else:
            _fp32_score(bench, spec, fp32, ev)
            ratio = best(bench, spec, int8, sizes) / best(bench, spec, fp32, sizes)
            print(f"  int8 / fp32 at each one's best batch: {ratio:.2f}x")


def _fp32_score(bench, spec, chip, ev) -> None:
    """fp32 on the int8 run's scored images (the same images)."""
    from harness.backends.base import get_backend
    from harness.judge.gates import topk_correct
    from harness.run import int8
    from harness.run.infer import run_all

    compiled = bench.compile(spec, chip, 8, "imagenet", backend=get_backend(chip.backend, threads=bench.cfg.threads))
    prepared = int8.scored_dataset(bench, spec, "imagenet")
    with compiled.open() as session:
        logits = run_all(session, prepared, 8, "fp32")
    c = topk_correct(logits, prepared.labels)
    delta = (ev.compiled_correct["top1"].mean() - c["top1"].mean()) * 100
    print(f"  fp32  on the same {len(prepared)} images: top-1 {c['top1'].mean() * 100:.2f} top-5 "
          f"{c['top5'].mean() * 100:.2f}; int8 - fp32 top-1 {delta:+.2f}")


def search(bench, spec, sizes, backend: str) -> None:
    """The way back to float, as ``python -m harness keep-float`` runs it (harness.localize.keep_float_run)."""
    import tempfile

    from harness.cli.keep_float import table
    from harness.localize import keep_float_run as run
    from harness.localize.keep_float import KeepFloatResult, trial_rows

    if bench.cfg.threads is None:
        print("  (no --threads: the speeds below use every core)")
    if backend == run.ONNXRUNTIME:
        outcome = run.on_ort(bench.cfg, bench.policy, spec)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run.on_openvino(bench.cfg, bench.policy, spec, Path(tmp))
    rows = trial_rows(KeepFloatResult(trials=tuple(outcome.trials), found=outcome.found, subset=outcome.subset))
    measured = sorted((r for r in rows if r[0] == "candidate"), key=lambda r: -int(r[8].split()[1]))
    if measured:
        print(f"  {len(measured)} candidates on the {outcome.subset} most divergent images; the best 10:")
        for line in table(measured[:10])[1:]:
            print("    " + line)
    for line in table([r for r in rows if r[0] != "candidate"]):
        print("  " + line)
    for note in outcome.notes:
        print("  " + note)
    found = "none within keep_float_max" if outcome.found is None else (",".join(outcome.found) or "nothing to keep")
    print(f"  search {outcome.seconds:.0f} s; found: {found}")
    speed = run.speeds(bench.cfg, bench.policy, spec, backend, outcome.found, tuple(sizes))
    fp32 = speed["fp32"][1]
    for label, (batch, rate) in speed.items():
        print(f"  {label:18} best bs{batch} {rate:.1f} images/s ({rate / fp32:.2f}x fp32)")


if __name__ == "__main__":
    main()
