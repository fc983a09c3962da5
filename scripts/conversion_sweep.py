"""Conversion sweep: export every model a pattern names to ONNX and check parity with torch.

    nice -n 10 .venv/bin/python scripts/conversion_sweep.py --models 'tv:*' --out docs/conversion-opset11.md

Each architecture (one per distinct architecture, keywords and input size: the weights of one
builder share one export) runs in its own process, with a time limit, through the suite's own
path, as ``acceptance/test_conversion.py`` does: seeded random weights with BatchNorm statistics
calibrated on the embedded images (``Workbench.model``), ``Workbench.onnx`` (TorchScript exporter
at the asked opset, onnxslim, full ONNX check, opset read back from the file), ONNX Runtime vs the
torch module on the same images, judged by ``conversion_gates`` of fixtures/policy.toml. Writes a
Markdown table (model, export, parity, reason) and, with ``--jsonl``, one JSON line per model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARITY_BATCH = 8
SWEEP_IMAGES = 16  # embedded images: BatchNorm calibration (policy: 16) and the parity comparison


def _group_key(spec: Any) -> str:
    return json.dumps(
        [spec.arch.source, spec.arch.name, dict(spec.arch.kwargs), list(spec.input_shape)], sort_keys=True
    )


def _groups(patterns: list[str]) -> list[list[Any]]:
    from harness.specs import load_models, resolve_models

    groups: dict[str, list[Any]] = {}
    for spec in resolve_models(patterns, load_models()).values():
        groups.setdefault(_group_key(spec), []).append(spec)
    # The library names first: a curated twin joins its architecture's group.
    return [sorted(g, key=lambda s: (s.library is None, s.name)) for g in groups.values()]


# --------------------------------------------------------------------------------------------
# One model, in a child process: phases are written to the status file as they finish.


def _write(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def run_one(name: str, opset: int, cache_dir: Path, status_path: Path, keep_onnx: bool) -> None:
    import numpy as np
    import onnx

    from harness.backends.onnxruntime import OnnxRuntimeBackend
    from harness.backends.torch_ref import TorchSession
    from harness.judge.gates import conversion_gates, failures
    from harness.judge.metrics import parity
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import CompileTarget, load_models, load_policy, resolve_models

    status: dict[str, Any] = {"model": name, "phase": "build", "seconds": {}}
    _write(status_path, status)
    spec = next(iter(resolve_models([name], load_models()).values()))
    policy = load_policy()
    cfg = RunConfig(cache_dir=cache_dir, weights="random", opset=opset, allow_download=False,
                    embedded_images=SWEEP_IMAGES)
    bench = Workbench(cfg, policy)
    started = time.perf_counter()
    loaded = bench.model(spec, weights="random", calibration_source="embedded")
    status["seconds"]["build"] = round(time.perf_counter() - started, 1)
    status["params"] = int(sum(p.numel() for p in loaded.module.parameters()))
    status["phase"] = "export"
    _write(status_path, status)
    started = time.perf_counter()
    onnx_path = bench.onnx(loaded)
    status["seconds"]["export"] = round(time.perf_counter() - started, 1)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    status["onnx"] = {
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "nodes": len(proto.graph.node),
        "mb": round(onnx_path.stat().st_size / 2**20, 1),
        "ops": sorted({n.op_type for n in proto.graph.node}),
    }
    del proto
    status["phase"] = "parity"
    _write(status_path, status)
    started = time.perf_counter()
    prepared = bench.dataset(spec, "embedded")
    target = CompileTarget(chip="cpu", batch_size=PARITY_BATCH, input_shape=spec.input_shape,
                           input_name=spec.input_name)
    with OnnxRuntimeBackend().open(onnx_path, target, num_classes=spec.num_classes) as session:
        onnx_logits = bench.run(session, prepared, PARITY_BATCH, f"{spec.name} onnx")
    torch_session = TorchSession(loaded.module, PARITY_BATCH, spec.input_shape, spec.num_classes)
    torch_logits = bench.run(torch_session, prepared, PARITY_BATCH, f"{spec.name} torch")
    report = parity(torch_logits, onnx_logits)
    problems = failures(conversion_gates(report, policy))
    status["seconds"]["parity"] = round(time.perf_counter() - started, 1)
    status["parity"] = {
        "images": report.count, "max_abs_diff": report.max_abs_diff, "max_rel_diff": report.max_rel_diff,
        "min_cosine": report.min_cosine, "top1_agreement": report.top1_agreement,
        "finite": bool(np.isfinite(torch_logits).all() and np.isfinite(onnx_logits).all()),
        "ok": not problems, "problems": str(problems) if problems else "",
    }
    status["phase"] = "done"
    _write(status_path, status)
    if not keep_onnx:
        shutil.rmtree(onnx_path.parent, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The sweep: one child per group, a time limit each, a table at the end.

_REASONS = [
    (re.compile(r"Exporting the operator '([^']+)' to ONNX opset version (\d+) is not supported"),
     "operator {0} has no ONNX opset {1} export"),
    (re.compile(r"Unsupported: ONNX export of ([^.]+?) in opset (\d+)"), "{0}: not exportable at opset {1}"),
    (re.compile(r"(2GiB|2 ?GB|larger than 2|Failed to serialize proto)"),
     "larger than 2 GB: a single-file ONNX cannot hold it (protobuf's limit; ATC takes one file)"),
    (re.compile(r"onnxslim [^ ]+ failed to simplify [^:]+: (.*)"), "onnxslim failed: {0}"),
    (re.compile(r"fails the ONNX checker: (.*)"), "ONNX checker: {0}"),
]


def _reason(text: str) -> str:
    for pattern, template in _REASONS:
        found = pattern.search(text)
        if found:
            return template.format(*found.groups())[:240]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Warning)\b", ln)]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:240]


def _sweep_one(group: list[Any], args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    name = group[0].name
    with tempfile.TemporaryDirectory() as tmp:
        status_path = Path(tmp) / "status.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--opset", str(args.opset),
                   "--cache-dir", str(cache_dir), "--status", str(status_path)]
        started = time.perf_counter()
        env = {**os.environ, "MZC_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
            output, timed_out = proc.stderr + proc.stdout, False
        except subprocess.TimeoutExpired as exc:
            output, timed_out = f"{exc.stderr or ''}", True
        status = json.loads(status_path.read_text()) if status_path.exists() else {"phase": "start", "seconds": {}}
    status.update(model=name, names=[s.name for s in group], input=list(group[0].input_shape),
                  wall=round(time.perf_counter() - started, 1))
    if timed_out:
        status["reason"] = f"skipped: {status['phase']} did not finish within {args.timeout:g} s"
    elif status["phase"] != "done":
        text = output if isinstance(output, str) else output.decode(errors="replace")
        status["reason"], status["log"] = _reason(text), text[-3000:]
    else:
        status["reason"] = status["parity"]["problems"]
    return status


def _fmt_names(names: list[str]) -> str:
    base = names[0].split(".")[0] if names[0].startswith(("tv:", "timm:")) else names[0]
    tags = [n[len(base) + 1:] if n.startswith(base + ".") else n for n in names]
    return f"`{base}` ({', '.join(tags)})" if tags != [names[0]] else f"`{names[0]}`"


def _row(r: dict[str, Any]) -> str:
    exported = r["phase"] in ("parity", "done")
    sec = r.get("seconds", {})
    export = (
        f"yes ({sec.get('export', '?')} s, {r['onnx']['nodes']} nodes, {r['onnx']['mb']} MB)" if exported else "**no**"
    )
    if r["phase"] == "done":
        p = r["parity"]
        parity = ("ok" if p["ok"] else "**fail**") + (f": {p['max_rel_diff']:.1e}, {1 - p['min_cosine']:.0e}, "
                                                      f"{p['top1_agreement']:.0f}%")
    else:
        parity = "not run"
    params = f"{r['params'] / 1e6:.1f} M" if "params" in r else ""
    reason = r["reason"].replace("|", "\\|").replace("\n", " ")
    shape = "x".join(map(str, r["input"][1:]))
    return f"| {_fmt_names(r['names'])} | {shape} | {params} | {export} | {parity} | {reason} |"


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace, total: float) -> str:
    from harness.model.export import tool_versions

    for r in results:  # reasons again, from the kept log: the rules above may have learnt more since
        if r["phase"] != "done" and not r["reason"].startswith("skipped"):
            r["reason"] = _reason(r.get("log") or r["reason"])
    ok = [r for r in results if r["phase"] == "done" and r["parity"]["ok"]]
    exported = [r for r in results if r["phase"] in ("parity", "done")]
    skipped = [r for r in results if r["reason"].startswith("skipped")]
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    lines = [
        f"# Conversion sweep at opset {args.opset}: {' '.join(args.models)}",
        "",
        f"Made by `nice -n 10 python scripts/conversion_sweep.py --models {' '.join(repr(m) for m in args.models)} "
        f"--opset {args.opset} --timeout {args.timeout:g} --out docs/conversion-opset11.md` on "
        f"{datetime.date.today().isoformat()} ({platform.machine()}, {os.cpu_count()} cores, {versions}; "
        f"onnxruntime for parity). One row per architecture and input size (the weights tags that "
        f"share it in brackets); seeded random weights with BatchNorm statistics calibrated on "
        f"{SWEEP_IMAGES} embedded images, parity on the same images against the gates of "
        f"fixtures/policy.toml ([conversion]); a time limit of {args.timeout:g} s per model "
        f"(building, calibrating, exporting and comparing).",
        "",
        f"**{len(results)} architecture and input-size pairs** ({len({r['model'].split('.')[0] for r in results})} "
        f"builders, {sum(len(r['names']) for r in results)} names): "
        f"**{len(exported)} export** at opset {args.opset}, **{len(ok)} pass parity**, "
        f"{len(results) - len(exported) - len(skipped)} fail to export, {len(skipped)} skipped for time; "
        f"total {total / 60:.0f} min.",
        "",
        "| model | input | params | export (time, nodes, size) "
        "| parity (max rel diff, 1 - min cosine, top-1 agreement) | reason |",
        "|---|---|---|---|---|---|",
        *(_row(r) for r in sorted(results, key=lambda r: r["model"])),
        "",
    ]
    failed: dict[str, list[str]] = {}
    for r in results:
        if r["reason"]:
            failed.setdefault(r["reason"], []).append(
                f"{r['model'].split('.')[0]} ({'x'.join(map(str, r['input'][1:]))})"
            )
    if failed:
        lines += ["## Failures by reason", ""]
        lines += [f"- {reason}: {', '.join(f'`{m}`' for m in models)}" for reason, models in sorted(failed.items())]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tv:*"], help="names or glob patterns (default: tv:*)")
    parser.add_argument("--opset", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model (default 600)")
    parser.add_argument("--out", type=Path, help="Markdown table to write (default: print it)")
    parser.add_argument("--jsonl", type=Path, help="also write one JSON line per model here")
    parser.add_argument("--cache-dir", type=Path, help="the suite's cache for this sweep (default: a temporary one)")
    parser.add_argument("--keep-onnx", action="store_true", help="keep the exported files in the cache")
    parser.add_argument("--render", type=Path, metavar="JSONL",
                        help="write the table from an earlier run's --jsonl file instead of running models")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--status", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args.one, args.opset, args.cache_dir, args.status, args.keep_onnx)
        return 0
    if args.render:
        results = [json.loads(line) for line in args.render.read_text().splitlines() if line.strip()]
        text = _markdown(results, args, sum(r["wall"] for r in results))
        args.out.write_text(text) if args.out else print(text)
        return 0
    groups = _groups(args.models)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="conversion-sweep-"))
    results, started = [], time.perf_counter()
    try:
        for i, group in enumerate(groups, 1):
            result = _sweep_one(group, args, cache_dir)
            results.append(result)
            print(
                f"[{i}/{len(groups)}] {result['model']}: {result['phase']} {result['wall']} s {result['reason'][:100]}",
                flush=True,
            )
            if args.jsonl:
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps(result) + "\n")
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    text = _markdown(results, args, time.perf_counter() - started)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
