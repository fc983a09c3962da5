"""TEST DOUBLE of ais_bench's command line (``python -m ais_bench``), run as ``python -m fake_ais_bench``
with tests/doubles on PYTHONPATH (tests/data/vendor/README.md).

Reproduces, from ais_bench's own source (github.com/Ascend/tools ``ais-bench_workload/tool/ais_bench``
at 9d6da90; github.com/Ascend/msit ``ait/components/benchmark/ais_bench`` at 42a9c80): the option
names it parses (argparse: an unknown option exits 2), the batch read from the model's input shape,
one warm-up, the ``[INFO]`` summary lines (``--display_all_summary`` adds H2D / D2H) and the C++
runtime's ``[INFO]`` lines (printed last here: C stdio is block-buffered into a pipe). The model is a
fake .om (tests/doubles/fake_om.py); nothing runs: compute times are made up.

Environment: ``FAKE_AIS_BENCH_COMPUTE_MS`` (mean NPU compute ms, default 2.0),
``FAKE_AIS_BENCH_EXIT`` (print an error and exit with this status), ``FAKE_AIS_BENCH_SLEEP``
(seconds to hang first, with a child process; ``FAKE_AIS_BENCH_PIDS`` names a file for both pids),
``FAKE_AIS_BENCH_LOG`` (a file each invocation appends its argv to, as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__version__ = "0.0.2+double"


def _bool(value: str) -> bool:
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid positive int value")
    return number


def _device(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 255:
        raise argparse.ArgumentTypeError(f"device:{number} is invalid. valid value range is [0, 255]")
    return number


def main(argv: list[str]) -> int:
    if log := os.environ.get("FAKE_AIS_BENCH_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps(argv) + "\n")
    parser = argparse.ArgumentParser(prog="ais_bench")
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--loop", "-l", type=_positive, default=1)
    parser.add_argument("--device", "-d", type=_device, default=0)
    parser.add_argument("--batchsize", type=_positive, default=None)
    parser.add_argument("--warmup_count", type=int, default=1)
    parser.add_argument("--display_all_summary", type=_bool, default=False)
    parser.add_argument("--pure_data_type", choices=["zero", "random"], default="zero")
    parser.add_argument("--output", "-o", default=None)
    args = parser.parse_args(argv)

    if seconds := os.environ.get("FAKE_AIS_BENCH_SLEEP"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("[INFO] acl init success", flush=True)
        if pids := os.environ.get("FAKE_AIS_BENCH_PIDS"):  # once it has its child and has printed: hung
            Path(pids + ".tmp").write_text(f"{os.getpid()} {child.pid}\n")
            os.replace(pids + ".tmp", pids)
        time.sleep(float(seconds))

    model = Path(args.model)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_om

    try:
        header, _ = fake_om.read(model)
    except (OSError, RuntimeError) as exc:
        print(f"[ERROR] load model failed: {exc}")
        print("[ERROR] acl open model failed, ret=145000", file=sys.stderr)
        return 1
    if code := os.environ.get("FAKE_AIS_BENCH_EXIT"):
        print("[INFO] try get model batchsize:1")
        print(f"[ERROR] the device {args.device} is busy (fake failure)", file=sys.stderr)
        return int(code)

    batch = args.batchsize or int(header["input_shape"][0])
    mean = float(os.environ.get("FAKE_AIS_BENCH_COMPUTE_MS", "2.0"))
    # A deterministic spread around the mean whose mean is exactly ``mean``.
    times = [mean + 0.01 * ((i % 5) - 2) for i in range(args.loop)]
    times = [t - (sum(times) / len(times) - mean) for t in times]

    def stats(values: list[float]) -> str:
        ordered = sorted(values)
        n = len(ordered)
        median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        p99 = ordered[min(n - 1, round(0.99 * (n - 1)))]
        return (f"min = {ordered[0]}, max = {ordered[-1]}, mean = {sum(ordered) / n}, median = {median}, "
                f"percentile(99%) = {p99}")

    mean_ms = sum(times) / len(times)
    print(f"[INFO] try get model batchsize:{batch}")
    print(f"[INFO] warm up {args.warmup_count} done")
    print("Inference array Processing: 100%|##########| 1/1 [00:00<00:00, 10.00it/s]")
    print("[INFO] -----------------Performance Summary------------------")
    if args.display_all_summary:
        print(f"[INFO] H2D_latency (ms): {stats([0.5])}")
    print(f"[INFO] NPU_compute_time (ms): {stats(times)}")
    if args.display_all_summary:
        print(f"[INFO] D2H_latency (ms): {stats([0.05])}")
    print(f"[INFO] throughput 1000*batchsize.mean({batch})/NPU_compute_time.mean({mean_ms}): {1000 * batch / mean_ms}")
    print("[INFO] ------------------------------------------------------")
    print("[INFO] acl init success")
    print(f"[INFO] open device {args.device} success")
    print(f"[INFO] load model {model} success")
    print("[INFO] unload model success, model Id is 1")
    print(f"[INFO] end to reset device is {args.device}")
    print("[INFO] end to finalize acl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
