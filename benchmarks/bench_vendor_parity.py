"""The suite's throughput against OpenVINO's ``benchmark_app`` on the same IR: does the suite's
figure agree with the tool customers trust (target: within 3%)?

    .venv/bin/python benchmarks/bench_vendor_parity.py [--model efficientnet_lite0] [--pairs 5] \
        [--seconds 10] [--batch-size 1] [--scenario single-stream|offline] [--threads N]

Not part of the test suite (no test functions: ``pytest benchmarks/`` collects nothing here).
One OpenVINO IR is compiled through the suite (``Workbench.compile``, random weights by default),
then, per scenario, the two measurements alternate in pairs (suite, tool, suite, tool, ...), so a
disturbance from other work on the machine hits both sides of a pair:

- the suite: ``compiled.open(0, scenario=...)`` and ``harness.run.timing.measure`` on the ring of
  embedded images (real pixels, normalized), ``min_seconds = --seconds``;
- the tool: ``vendor_tool_for("openvino", {}).measure(...)``, i.e. ``benchmark_app -hint latency -api
  sync`` / ``-hint throughput -api async`` for ``-t --seconds`` on random inputs.

Printed per scenario: each pair's figures and ratio, the median over pairs of suite / tool images/s
with the verdict against 3%, and what each side ran (streams, requests, threads, precision, hint,
pinning). Both sides are wall-clock figures here (OpenVINO reports no device clock).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from harness.benchmark_tools import vendor_tool_for
from harness.run.sweep import ring_batches
from harness.run.timing import measure
from harness.run.workbench import RunConfig, Workbench
from harness.specs import SCENARIOS, load_chips, load_models, load_policy, resolve_chip

TARGET = 0.03  # the suite within 3% of the vendor tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="efficientnet_lite0", help="a model of fixtures/models.toml")
    p.add_argument("--pairs", type=int, default=5, help="alternating suite/tool pairs per scenario (default 5)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds each side measures per run (default 10)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--scenario", choices=SCENARIOS, action="append",
                   help="measure only this scenario (repeatable; default: both)")
    p.add_argument("--threads", type=int, default=None, help="host threads for both sides (default: OpenVINO's)")
    p.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or fp16")
    p.add_argument("--weights", default="random", help="random (default) or pretrained")
    p.add_argument("--ring-images", type=int, default=None,
                   help="images the suite cycles (default: fixtures/policy.toml's ring, 128); 1 feeds one "
                   "cache-resident input, as benchmark_app's pre-filled tensor")
    return p.parse_args(argv)


def suite_side(session: Any, batch_size: int) -> str:
    info = getattr(session, "info", {})
    return (f"suite: {session.streams} stream(s), {session.requests} request(s) in flight, "
            f"{info.get('inference_num_threads')} threads, precision {info.get('inference_precision')}, "
            f"hint {info.get('performance_hint')}, pinning {info.get('cpu_pinning')}, bs{batch_size}, real images")


def tool_side(figure: Any) -> str:
    return (
        f"{figure.tool}: {figure.streams} stream(s), {figure.requests} request(s) in flight, "
        f"{figure.setting('INFERENCE_NUM_THREADS')} threads, precision {figure.setting('INFERENCE_PRECISION_HINT')}, "
        f"hint {figure.setting('PERFORMANCE_HINT')}, pinning {figure.setting('ENABLE_CPU_PINNING')}, "
        f"input {figure.setting('input')}, random inputs\n    command: {figure.command_line()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MZC_PROGRESS", "0")
    policy = load_policy()
    options = {"threads": str(args.threads)} if args.threads else {}
    chip = replace(resolve_chip(load_chips(), "cpu"), backend="openvino", backend_options=options,
                   precision=args.precision)
    bench = Workbench(RunConfig(weights=args.weights, threads=args.threads), policy)
    spec = load_models()[args.model]
    compiled = bench.compile(spec, chip, args.batch_size, "embedded", weights=args.weights)
    tool = vendor_tool_for("openvino", options)
    reason = tool.unavailable_reason()
    if reason:
        print(f"cannot compare: {reason}", file=sys.stderr)
        return 2
    timing = replace(policy.perf, min_seconds=args.seconds, max_seconds=max(policy.perf.max_seconds, 3 * args.seconds),
                     ring_images=args.ring_images or policy.perf.ring_images)
    prepared = bench.dataset(spec, "embedded")
    print(f"{args.model} bs{args.batch_size} {args.precision}, IR {compiled.artifact}")
    print(f"OpenVINO {compiled.backend.version()}; benchmark_app {tool.version()}; {args.pairs} pairs of "
          f"{args.seconds:g} s per scenario; target: suite within {100 * TARGET:g}% of the tool\n")
    verdicts = []
    for scenario in args.scenario or SCENARIOS:
        ratios, suite_note, tool_note = [], "", ""
        print(f"== {scenario}")
        for pair in range(1, args.pairs + 1):
            with compiled.open(0, scenario=scenario) as session:
                _, batches = ring_batches(prepared, session.batch_size, session.input_dtype, timing)
                suite = measure(session, batches, timing, scenario=scenario, every_span=False).measurement
                suite_note = suite_side(session, args.batch_size)
            figure = tool.measure(
                compiled.artifact, compiled.target, scenario, seconds=args.seconds, threads=args.threads
            )
            tool_note = tool_side(figure)
            ratio = suite.images_per_s / figure.images_per_s
            ratios.append(ratio)
            print(f"  pair {pair}: suite {suite.images_per_s:9.1f} images/s ({suite.clock}, {suite.runs} runs, "
                  f"{suite.seconds:.1f} s)  {figure.tool} {figure.images_per_s:9.1f} images/s ({figure.clock}, "
                  f"{figure.setting('iterations')} runs, {figure.duration_s or 0:.1f} s)  ratio {ratio:.3f}")
        median = statistics.median(ratios)
        met = abs(median - 1.0) <= TARGET
        verdicts.append(met)
        print(f"  median suite/tool over {len(ratios)} pairs: {median:.3f} ({100 * (median - 1):+.1f}%), "
              f"spread {min(ratios):.3f}..{max(ratios):.3f}: within {100 * TARGET:g}%: {'met' if met else 'MISSED'}")
        print(f"  {suite_note}\n  {tool_note}\n")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
