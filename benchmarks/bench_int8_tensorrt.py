"""TensorRT INT8 calibration tables per method, and a CPU emulation of what they do (NOT a T4 measurement).

    .venv/bin/python benchmarks/bench_int8_tensorrt.py [--models efficientnet_lite0]
        [--methods percentile,minmax,entropy] [--imagenet DIR]

For each method of ``[int8] tensorrt_calibration``: the wall time of the table
(harness.backends.onnxruntime.trt_int8 on the run's calibration images: the same split as every int8
run), how its ranges compare with max |x| (minmax), and the top-1 of an emulation on the scored images,
paired against the float ONNX on the same images: each table turned into an ONNX Runtime QDQ model
with every activation a symmetric int8 of the table's range (``quantize_static`` reading the table's
``calibration.json`` as its calibration cache, ``ActivationSymmetric``), symmetric per-channel int8
weights and the logits in float. TensorRT fuses convolution, bias and activation, so it quantizes fewer
tensors than this emulation; nothing here says what a T4 scores. docs/int8.md has the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenet-val-1300"


def predictions(model_path: Path, images: np.ndarray, mean, std, threads: int) -> np.ndarray:
    import onnxruntime as ort

    from harness import data as data_mod

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: data_mod.normalize(images[i:i + 32], mean, std)})[0]
           for i in range(0, len(images), 32)]
    return np.concatenate(out).argmax(axis=1)


def emulated(table_dir: Path, source13: Path, logits_node: str, work: Path) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out = work / f"{table_dir.name}.qdq.onnx"
    quantize_static(str(source13), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=[logits_node],
                    calibrate_method=CalibrationMethod.MinMax,
                    calibration_cache_path=str(table_dir / "calibration.json"),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return out


def main() -> None:
    import onnx

    from harness.backends.onnxruntime.quantize import at_opset13, logits_node
    from harness.backends.onnxruntime.trt_int8 import NATIVE_CACHE, TensorRtQuantizer, parse_native_cache
    from harness.backends.quantization import QuantizationSettings
    from harness.run import int8
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_models, load_policy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="efficientnet_lite0")
    ap.add_argument("--methods", default="percentile,minmax,entropy")
    ap.add_argument("--imagenet", type=Path, default=DEFAULT_IMAGENET)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench = Workbench(RunConfig(imagenet=args.imagenet, workers=1), load_policy())
    for name in args.models.split(","):
        spec = load_models()[name]
        onnx_path = bench.onnx(bench.model(spec, None, calibration_source="imagenet"))
        found = int8.calibration_split(bench, "imagenet")
        calibration = int8.prepared_listing(bench, spec, found.calibration)
        scored = int8.scored_dataset(bench, spec, "imagenet")
        images, labels, pre = np.asarray(scored.images), np.asarray(scored.labels), scored.spec
        work = Path(tempfile.mkdtemp(prefix="bench-int8-tensorrt-"))
        model13 = at_opset13(onnx.load(str(onnx_path)))
        source13 = work / "source.opset13.onnx"
        onnx.save(model13, str(source13))
        float_pred = predictions(onnx_path, images, pre.mean, pre.std, args.threads)
        float_ok = float_pred == labels
        print(f"{name}: {len(found.calibration)} calibration / {len(labels)} scored images; float ONNX top-1 "
              f"{float_ok.mean() * 100:.2f}")
        amax: dict[str, dict[str, float]] = {}
        for method in args.methods.split(","):
            tables = work / method
            tables.mkdir()
            started = time.perf_counter()
            TensorRtQuantizer().quantize(onnx_path, int8.calibration_batches(calibration, False),
                                         QuantizationSettings(tensorrt_calibration=method), tables)
            seconds = time.perf_counter() - started
            amax[method] = {k: v * 127 for k, v in parse_native_cache((tables / NATIVE_CACHE).read_text())[1].items()}
            pred = predictions(emulated(tables, source13, logits_node(model13), work), images, pre.mean, pre.std,
                               args.threads)
            diff = float_ok.astype(float) - (pred == labels)
            half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
            print(f"  {method}: table {seconds:.0f} s, {len(amax[method])} tensors; emulated top-1 "
                  f"{(pred == labels).mean() * 100:.2f}, drop {diff.mean() * 100:+.2f} "
                  f"[{(diff.mean() - half) * 100:+.2f}, {(diff.mean() + half) * 100:+.2f}], agreement "
                  f"{(pred == float_pred).mean() * 100:.1f}%")
        if "minmax" in amax:
            for method, table in amax.items():
                ratio = np.array([table[k] / amax["minmax"][k] for k in table])
                print(f"  {method} amax / minmax's: median {np.median(ratio):.3f}, min {ratio.min():.3f}")


if __name__ == "__main__":
    main()
