"""TensorRT INT8 for the T4: a calibration table computed here, for TensorRT's implicit quantization.

The T4 runs ONNX Runtime's TensorRT execution provider (fixtures/chips.toml), and trtexec builds its
engine from the same ONNX. Both quantize a *float* ONNX implicitly: TensorRT is given one dynamic
range per activation tensor (``[-amax, amax]``, scale ``amax / 127``) and picks the layers it runs in
int8 itself, computing the weights' scales on its own. This module computes those ranges for real,
on ONNX Runtime's CPU provider over the calibration images kept apart (harness.run.int8), and writes
them in the two formats the consumers read. Nothing here runs TensorRT: that the EP and trtexec take
the files is checked against their documented contracts only (tests/test_int8_tensorrt.py).

Contracts, read from source (nothing copied; December 2026):

- ONNX Runtime's TensorRT EP, provider options ``trt_int8_enable``, ``trt_int8_calibration_table_name``,
  ``trt_int8_use_native_calibration_table`` (onnxruntime.ai/docs/execution-providers/TensorRT-
  ExecutionProvider.html; the C API's ``OrtTensorRTProviderOptions``). Where and how the table is read:
  github.com/microsoft/onnxruntime ``onnxruntime/core/providers/tensorrt/tensorrt_execution_provider.cc``
  (``GetCachePath(cache_path_, int8_calibration_cache_name_)``: the name inside ``trt_engine_cache_path``,
  or relative to the working directory without one; a missing file fails the session with "Failed to
  read INT8 calibration table") and ``tensorrt_execution_provider_utils.h`` ``ReadDynamicRange``: ORT's
  own table is a flatbuffers ``TrtTable`` of (tensor name, ``str(amax)``) pairs; the native one a text
  file whose first line contains ``TRT-`` followed by ``name: <hex of the float32 scale>`` lines, range
  = scale * 127. ``SetDynamicRange`` applies a range to the network input and to every layer output of
  that name; constant (weight) layers get their max |w|.
- ORT 1.32.0 (installed) ``onnxruntime/quantization/calibrate.py`` (``create_calibrator``, the
  MinMax/Percentile calibrators, ``TensorsData``) and ``quant_utils.py`` ``write_calibration_table``: it
  writes ``calibration.json``, ``calibration.flatbuffers`` (value ``str(max(highest, lowest))``: with
  asymmetric ranges a negative-heavy tensor would be clipped, so only symmetric ranges are given to it)
  and ``calibration.cache``, which is *not* TensorRT's native format (``name value`` lines, no header):
  the native cache is written here (:func:`native_cache_text`).
- TensorRT's native cache: header ``TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2``, then ``name: hex``
  (the example in ORT's ReadDynamicRange comment, ``TRT-7103-EntropyCalibration2`` / ``data_0:
  4000889d``; NVIDIA TAO's ``calibration_cache_from_dict``: scale = amax / 127 as float32 bits). TensorRT
  skips a cache whose header does not match its version or calibrator ("trt will skip the file if it is
  incompatible", NVIDIA/TensorRT issue 1378): trtexec calibrates with ``IInt8EntropyCalibrator2`` (its
  ``RndInt8Calibrator``, ``samples/common/sampleEngines.cpp``) on *random* inputs when it skips the file,
  so the header always names EntropyCalibration2 and harness.benchmark_tools.trtexec rewrites the
  version to the trtexec it runs (:func:`with_version`). For 10.x the number is the one trtexec prints
  (``[TensorRT v101600]``), by analogy with 8.x (``v8601`` / ``TRT-8601``): not verified on a 10.x.
- Ranges (policy ``[int8] tensorrt_calibration``, ``percentile`` by a CPU emulation: fixtures/policy.toml):
  ``entropy``, TensorRT's default calibrator for CNNs
  (EntropyCalibrator2 is what trtexec and NVIDIA's CNN samples use; MinMax is its advice for NLP), as
  NVIDIA published it (Migacz, "8-bit Inference with TensorRT", GTC 2017): a 2048-bin histogram of |x|,
  the threshold among bins 128..N whose 128-level quantization loses the least KL divergence
  (:func:`entropy_amax`, with the zero-bin rule of NVIDIA's pytorch-quantization, github.com/NVIDIA/TensorRT
  ``tools/pytorch-quantization``; EntropyCalibrator2's own refinements are unpublished); ``percentile`` (99.999%
  of |x|, ORT's Percentile calibrator, like TensorRT's legacy quantile calibrator); ``minmax`` (max |x|,
  TensorRT's IInt8MinMaxCalibrator). ORT's own Entropy calibrator is not used: with its defaults (128
  bins, 128 levels) it has one candidate threshold, max |x|, and it searches a signed histogram.

Weights: TensorRT chooses their scales at engine build (per output channel for convolutions, the scheme
MQBench documents for TensorRT; NVIDIA's guide says "per-tensor, per-channel or block-wise depending on
the layer"): ``per_channel`` is recorded as TensorRT's, not computed or verified here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.quantization import QuantizationError, QuantizationInfo, QuantizationSettings, Quantizer

TOOL = "tensorrt-calibrator"
METHODS = ("entropy", "percentile", "minmax")
ARTIFACT_NAME = "model.onnx"
ORT_TABLE = "calibration.flatbuffers"  # the EP's table (trt_int8_use_native_calibration_table = False)
ORT_JSON = "calibration.json"
ORT_TEXT = "calibration.cache"  # ORT's plain "name amax" listing (not TensorRT's format)
NATIVE_CACHE = "calibration.tensorrt.cache"  # TensorRT's own format, for trtexec --calib
TABLES = (ORT_TABLE, ORT_JSON, ORT_TEXT, NATIVE_CACHE)
METADATA_KEY = "harness.tensorrt_int8_calibration"  # the tables' digest, in the artifact (the compile key)
CALIBRATOR = "EntropyCalibration2"
HEADER_VERSION = 8601  # until trtexec rewrites it (with_version); the EP reads only "TRT-"
HISTOGRAM_BINS = 2048  # TensorRT's histogram (GTC 2017)
LEVELS = 128  # int8's positive levels
PERCENTILE = 99.999
MIN_AMAX = 1e-6  # a tensor that is 0 on every calibration image still gets a positive scale


class _Reader:
    """ORT's CalibrationDataReader protocol: one batch per ``collect_data`` call (bounded memory)."""

    def __init__(self, input_name: str, batch: np.ndarray):
        self._feed: dict[str, np.ndarray] | None = {input_name: np.ascontiguousarray(batch)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self._feed = self._feed, None
        return feed


def entropy_amax(hist: np.ndarray, edges: np.ndarray, levels: int = LEVELS) -> float:
    """The |x| threshold whose ``levels``-level quantization keeps the most information (least
    KL(P || Q)) of a histogram of |x|: P is the histogram cut at the candidate bin with the outliers
    added to its last bin, Q the cut histogram merged into ``levels`` groups and spread back evenly
    over each group's non-empty bins; the largest such cut among equals. As NVIDIA's
    pytorch-quantization does (``calib/histogram.py`` ``_compute_amax_entropy``), the first bin counts
    as much as the second: the spike of exact zeros a ReLU writes would otherwise make the narrowest
    cut win (measured here: 12 ReLU6 outputs of efficientnet_lite0 cut to 6/16, emulated top-1 0%)."""
    counts = np.asarray(hist, dtype=np.float64).copy()
    if counts.size > 1:
        counts[0] = counts[1]
    n = counts.size
    if n <= levels or counts.sum() == 0:
        return float(edges[-1])
    tails = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tails[i] = counts[i:].sum()
    best, best_i = np.inf, n
    for i in range(levels, n + 1):
        p = counts[:i].copy()
        p[-1] += tails[i]
        group = np.minimum(np.arange(i) * levels // i, levels - 1)  # bin -> quantization level
        nonzero = (counts[:i] > 0).astype(np.float64)
        per_level = np.bincount(group, weights=counts[:i], minlength=levels)
        filled = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, per_level[group] / np.maximum(filled[group], 1.0), 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        mask = p > 0
        if np.any(q[mask] == 0):  # an outlier-only last bin Q cannot represent
            continue
        divergence = float(np.sum(p[mask] / p_sum * np.log((p[mask] / p_sum) / (q[mask] / q_sum))))
        if divergence <= best:
            best, best_i = divergence, i
    return float(edges[best_i])


def _collected(method: str, model_path: Path, batches: Iterable[np.ndarray], work: Path) -> Iterator[tuple[str, float]]:
    """(tensor, amax) for every float tensor of the model, from ORT's calibrators on the CPU provider."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    kind = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
    options = {"symmetric": True, "num_bins": HISTOGRAM_BINS, "percentile": PERCENTILE}
    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print per batch
        calibrator = create_calibrator(model_path, None, augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=kind, providers=["CPUExecutionProvider"],
                                       extra_options=options)
        seen = 0
        for batch in batches:
            calibrator.collect_data(_Reader(input_name, batch))
            seen += 1
        if not seen:
            raise QuantizationError("the TensorRT calibration was given no calibration images; expected at least "
                                    "one batch ([int8] calibration_images, or --calibration DIR)")
        if method == "entropy":
            histograms = calibrator.collector.histogram_dict  # name -> (|x| counts, edges, min, max)
            for name, (hist, edges, low, high) in histograms.items():
                observed = float(np.max(np.abs(np.asarray([low, high], dtype=np.float64))))
                yield name, min(entropy_amax(hist, edges), observed)
        else:
            for name, data in calibrator.compute_data().items():
                yield name, float(np.max(np.abs(np.asarray(data.range_value, dtype=np.float64))))


def native_cache_text(amax: Mapping[str, float], version: int = HEADER_VERSION) -> str:
    """TensorRT's calibration cache: the header, then ``name: <float32 bits of amax/127 in hex>``."""
    lines = [f"TRT-{version}-{CALIBRATOR}"]
    for name in sorted(amax):
        (bits,) = struct.unpack(">I", struct.pack(">f", np.float32(amax[name] / 127.0)))
        lines.append(f"{name}: {bits:x}")
    return "\n".join(lines) + "\n"


def parse_native_cache(text: str) -> tuple[str, dict[str, float]]:
    """The header and the scales of a TensorRT calibration cache (as ORT's ReadDynamicRange reads it);
    raises QuantizationError for anything else."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        raise QuantizationError("a TensorRT calibration cache starts with a 'TRT-<version>-<calibrator>' line; "
                                f"found {lines[0][:60] if lines else 'an empty file'!r}")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        try:
            (scale,) = struct.unpack(">f", struct.pack(">I", int(value, 16)))
        except (ValueError, struct.error):
            sep = ""
        if not sep or not name:
            raise QuantizationError(f"line {number} of a TensorRT calibration cache is {line[:60]!r}; expected "
                                    "'<tensor>: <float32 scale in hex>'")
        scales[name] = scale
    return lines[0], scales


def with_version(text: str, version: int) -> str:
    """A native cache whose header names TensorRT ``version`` (the number trtexec prints)."""
    header, _scales = parse_native_cache(text)
    calibrator = header.split("-", 2)[-1]
    return f"TRT-{version}-{calibrator}\n" + text.split("\n", 1)[1]


def tables_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in TABLES:
        digest.update(name.encode() + b"\0" + (Path(directory) / name).read_bytes())
    return digest.hexdigest()


def write_tables(amax: Mapping[str, float], out_dir: Path) -> None:
    """ORT's tables (``write_calibration_table``: flatbuffers, JSON, its text listing) and TensorRT's
    native cache, all from the same symmetric ranges."""
    from onnxruntime.quantization import CalibrationMethod, write_calibration_table
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    data = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(-value, np.float32), highest=np.array(value, np.float32))
        for name, value in amax.items()})
    write_calibration_table(data, dir=str(out_dir))
    (Path(out_dir) / NATIVE_CACHE).write_text(native_cache_text(amax))


class TensorRtQuantizer(Quantizer):
    """The calibration table of a float ONNX for TensorRT's implicit INT8 (ORT's TensorRT EP, trtexec).

    The artifact is the float ONNX, marked with the tables' digest (so that a compiled model's cache
    key changes with them), beside the tables. ``logits = "float"`` leaves the graph output out of
    the tables: TensorRT falls back to a non-int8 implementation for a layer producing a tensor
    without a range ("Missing scale and zero-point for tensor ..."). ``--keep-float`` is refused:
    removing a range also moves the layers consuming the tensor out of int8, which is not what the
    ONNX Runtime search measured."""

    tool = TOOL

    @staticmethod
    def method(settings: QuantizationSettings) -> str:
        """How the ranges are chosen: ``[int8] tensorrt_calibration`` (fixtures/policy.toml)."""
        if settings.tensorrt_calibration not in METHODS:
            raise QuantizationError(f"[int8] tensorrt_calibration must be one of {', '.join(METHODS)}, "
                                    f"not {settings.tensorrt_calibration!r}")
        return settings.tensorrt_calibration

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def fields(self, settings: QuantizationSettings) -> dict[str, Any]:
        method = self.method(settings)
        fields: dict[str, Any] = {"format": "tensorrt-calibration-table", "method": method,
                                  "logits": settings.logits, "keep_float": sorted(settings.keep_float)}
        if method == "entropy":
            fields |= {"bins": HISTOGRAM_BINS, "levels": LEVELS}
        elif method == "percentile":
            fields |= {"bins": HISTOGRAM_BINS, "percentile": PERCENTILE}
        return fields

    def quantize(self, source: Path, calibration: Iterable[np.ndarray], settings: QuantizationSettings,
                 out_dir: Path) -> tuple[Path, QuantizationInfo]:
        if settings.keep_float:
            raise QuantizationError(f"--keep-float {','.join(settings.keep_float)} is not supported for TensorRT "
                                    "here (the way back to float is ONNX Runtime's); drop --keep-float")
        method = self.method(settings)
        started = time.perf_counter()
        out_dir = Path(out_dir)
        model = onnx.load(str(source))
        collected = _collected(method, Path(source), calibration, out_dir)
        amax = {name: max(value, MIN_AMAX) for name, value in collected}
        (out_dir / "augmented.onnx").unlink(missing_ok=True)
        outputs = {o.name for o in model.graph.output}
        excluded: tuple[str, ...] = ()
        if settings.logits == "float":
            amax = {name: value for name, value in amax.items() if name not in outputs}
            excluded = tuple(n.name for n in model.graph.node if outputs & set(n.output))
        bad = sorted(name for name, value in amax.items() if not np.isfinite(value))
        if bad:
            raise QuantizationError(f"the calibration gave non-finite ranges for {', '.join(bad[:5])}; expected "
                                    "finite activations on the calibration images (check their preprocessing)")
        write_tables(amax, out_dir)
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, f"{method}:{tables_digest(out_dir)}"
        artifact = out_dir / ARTIFACT_NAME
        onnx.save(model, str(artifact))
        info = QuantizationInfo(tool=self.tool, version=self.version(), scheme=method, activation_type="int8",
                                weight_type="int8", per_channel=True, excluded_nodes=excluded,
                                seconds=time.perf_counter() - started)
        return artifact, info


def calibration_tables(onnx_path: Path) -> list[Path]:
    """The tables beside a TensorRT quantizer's artifact, checked against the digest it carries;
    raises QuantizationError when they are missing or not the ones it was calibrated with."""
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    marked = {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)
    if marked is None:
        raise QuantizationError(f"{onnx_path} is not a TensorRT calibration artifact (no {METADATA_KEY}); "
                                "--precision int8 on TensorRT compiles what the backend's quantizer() writes")
    missing = [name for name in TABLES if not (onnx_path.parent / name).is_file()]
    if missing or marked.rsplit(":", 1)[-1] != tables_digest(onnx_path.parent):
        what = f"missing: {', '.join(missing)}" if missing else "not the ones it was calibrated with"
        raise QuantizationError(f"the calibration tables beside {onnx_path} are {what}; delete that cache entry "
                                "and quantize again")
    return [onnx_path.parent / name for name in TABLES]


def link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(Path(source).read_bytes())
