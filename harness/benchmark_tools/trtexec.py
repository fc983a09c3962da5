"""NVIDIA's ``trtexec --loadEngine=X.engine``, on the engine of the ONNX the suite's T4 runs.

Read from TensorRT's own source (github.com/NVIDIA/TensorRT ``samples/common/sampleOptions.cpp``,
``sampleReporting.cpp``, ``sampleInference.cpp``; tags 8.2.1 to v10.16).

The engine: the suite's T4 backend is ONNX Runtime's TensorRT execution provider, whose artifact
is an ONNX file (its engine cache holds ORT's own sub-graph engines, not one trtexec can load).
So for an ``.onnx`` artifact :meth:`Trtexec.prepare` builds an engine once with ``trtexec
--onnx=... --saveEngine=...`` (``--fp16`` for fp16; for a dynamic batch the optimization profile
the suite's provider options give: min batch 1, opt = max = the target batch) into the suite's
cache (``trtexec-engine/``, keyed by the ONNX bytes, the target and the TensorRT version);
an ``.engine`` / ``.plan`` artifact is used as it is. At ``int8`` the build adds ``--int8
--calib=<cache>`` (sampleOptions.cpp: "Enable int8 precision", "Read INT8 calibration cache file"):
the TensorRT-native calibration cache the onnxruntime backend's compile put beside the ONNX
(harness.backends.onnxruntime.trt_int8, computed on the calibration images), its header rewritten to
this trtexec's version, as TensorRT skips a cache of another version and trtexec would then calibrate
on random inputs; the cache's digest joins the engine's key. Layers TensorRT keeps out of int8 run in
fp32 (no ``--fp16``).

Scenarios, both with ``--shapes=<input>:BxCxHxW``, ``--duration`` (whole seconds), ``--device``
and ``--percentile=90`` (one value: accepted by every version; 8.6+ defaults to 90,95,99):

- ``single-stream``: ``--exposeDMA`` (copies serialized: one query at a time; by default trtexec
  double-buffers, enqueueing the next query while one runs); the figure is ``1000 * batch / mean
  GPU Compute Time`` (clock ``device_compute``, as the suite's T4 session times only the run and
  as fixtures/baselines define trtexec figures), latencies from the ``Latency:`` line (H2D +
  compute + D2H of one query).
- ``offline``: ``--infStreams=N`` (``--streams=N`` before TensorRT 8.6, deprecated after; N =
  ``offline_streams``, default 2: trtexec has no automatic count), each stream double-buffered,
  so 2N queries in flight; the figure is ``Throughput: Q qps`` x batch (clock ``wall``: queries
  over Total Host Walltime, the metric trtexec itself says to use with several streams).

Inputs are trtexec's random values; explicit-batch engines count one query per batch, so
images/s = qps x batch (an implicit-batch ``Batch: N`` engine already counts images).
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness.backends.ascend_tools.tools import ToolError
from harness.backends.onnxruntime.trt_int8 import NATIVE_CACHE, with_version
from harness.benchmark_tools.base import (
    NUMBER,
    Output,
    VendorFigure,
    VendorTool,
    VendorToolUnavailable,
    VendorUsageError,
    settings,
)
from harness.cache import ArtifactCache, content_key, default_cache_root, file_sha256
from harness.clocks import DEVICE_COMPUTE, WALL
from harness.specs import OFFLINE, CompileTarget

EXECUTABLE = "trtexec"
INSTALL_HINT = (
    "trtexec ships with TensorRT (TensorRT-<version>/bin in NVIDIA's tar packages, /usr/src/tensorrt/bin in "
    "its deb/rpm packages and NGC containers): put that directory on PATH"
)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ENGINE_KIND = "trtexec-engine"
BUILD_TIMEOUT = 3600.0
_LINE = r"\[I\] "
_STATS = (rf"min = ({NUMBER}) ms, max = ({NUMBER}) ms, mean = ({NUMBER}) ms, median = ({NUMBER}) ms"
          rf"(?:, percentile\(90%\) = ({NUMBER}) ms)?")


def decode_version(number: int) -> str:
    """``NV_TENSORRT_VERSION`` as trtexec prints it (``[TensorRT v8601]``, ``[TensorRT v101600]``)
    -> ``8.6.1`` / ``10.16.0``: major*1000 + minor*100 + patch before 10, major*10000 + ... since."""
    if number >= 100_000:
        return f"{number // 10_000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def encode_version(text: str) -> int | None:
    """``8.6.1`` -> 8601, ``10.16.0`` -> 101600 (the inverse of :func:`decode_version`); None when unknown."""
    parts = version_tuple(text)
    if len(parts) < 3:
        return None
    major, minor, patch = parts
    return major * 10_000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def calibration_cache_of(onnx_path: Path) -> Path:
    """The TensorRT-native calibration cache an int8 build reads: beside the ONNX (the onnxruntime
    backend's int8 compile writes it there)."""
    cache = Path(onnx_path).parent / NATIVE_CACHE
    if not cache.is_file():
        raise VendorUsageError(f"trtexec int8 build of {onnx_path}: no calibration cache {cache}; expected the "
                               "artifact of an int8 compile on the onnxruntime backend with TensorRT first "
                               "(its calibration table is computed on the calibration images)")
    return cache


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _dims(batch: int, shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in (batch, *shape))


def onnx_batch_is_dynamic(path: Path, input_name: str) -> bool:
    """Whether the ONNX input's first dimension is symbolic (trtexec refuses shapes for a static
    model); True when it cannot be told (onnx missing, input not found)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # any failure: let trtexec decide with the profile given
        return True
    for value in graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            return not dims or not dims[0].HasField("dim_value")
    return True


class Trtexec(VendorTool):
    """``trtexec`` for the onnxruntime backend with the TensorRT provider."""

    name = "trtexec"
    install_hint = INSTALL_HINT

    def __init__(self, executable: str = EXECUTABLE, offline_streams: int = 2, cache: ArtifactCache | None = None):
        if int(offline_streams) < 1:
            raise VendorUsageError(f"trtexec offline_streams must be at least 1, got {offline_streams}")
        self.executable = executable
        self.offline_streams = int(offline_streams)
        self.cache = cache
        self._version: str | None = None

    def unavailable_reason(self) -> str | None:
        if shutil.which(self.executable) is None:
            return f"{self.executable} not found on PATH; {INSTALL_HINT}"
        return None

    def version(self) -> str:
        """TensorRT's version from the line trtexec prints first (``&&&& RUNNING TensorRT.trtexec
        [TensorRT v8601] ...``), here of ``trtexec --help``."""
        if self._version is None:
            if self.unavailable_reason():
                raise VendorToolUnavailable(self.unavailable_reason() or INSTALL_HINT)
            argv = [self.executable, "--help"]
            try:
                stdout = self.execute(argv, 60.0, "trtexec --help").stdout
            except ToolError as exc:
                stdout = exc.stdout
            found = re.search(r"\[TensorRT v(\d+)\]", stdout)
            self._version = decode_version(int(found.group(1))) if found else "unknown"
        return self._version

    def _before_8_6(self) -> bool:
        known = version_tuple(self.version())
        return bool(known) and known < (8, 6)

    def _streams_flag(self) -> str:
        """``--infStreams`` since TensorRT 8.6 (``--streams`` still parsed, with a deprecation warning)."""
        return "--streams" if self._before_8_6() else "--infStreams"

    # -- the engine -----------------------------------------------------------------------------

    def engine_cache(self) -> ArtifactCache:
        if self.cache is None:
            self.cache = ArtifactCache(default_cache_root())
        return self.cache

    def build_command(self, onnx_path: Path, target: CompileTarget, engine: Path, device_id: int = 0,
                      calibration: Path | None = None) -> list[str]:
        """``calibration``: the int8 build's calibration cache (:meth:`prepare` writes it for this version)."""
        argv = [self.executable, f"--onnx={onnx_path}", f"--saveEngine={engine}", f"--device={device_id}"]
        if not self._before_8_6():
            argv.append("--skipInference")  # 8.6+; before, the build is followed by a 3 s run
        if target.precision == "fp16":
            argv.append("--fp16")
        elif target.precision == "bf16":
            argv.append("--bf16")
        elif target.precision == "int8":
            argv += ["--int8", f"--calib={calibration or calibration_cache_of(onnx_path)}"]
        if onnx_batch_is_dynamic(onnx_path, target.input_name):
            name, shape = target.input_name, target.input_shape
            argv += [f"--minShapes={name}:{_dims(1, shape)}", f"--optShapes={name}:{_dims(target.batch_size, shape)}",
                     f"--maxShapes={name}:{_dims(target.batch_size, shape)}"]
        return argv

    def _engine_inputs(self, onnx_path: Path, target: CompileTarget) -> dict[str, object]:
        inputs: dict[str, object] = {"onnx_sha256": file_sha256(onnx_path), "target": target.cache_fields(),
                                     "tensorrt": self.version()}
        if target.precision == "int8":
            inputs["calibration_sha256"] = file_sha256(calibration_cache_of(onnx_path))
        return inputs

    def _calibration_for_build(self, onnx_path: Path, target: CompileTarget, tmp: Path) -> Path | None:
        """The int8 build's cache, with the header of this trtexec's TensorRT version (as written when unknown)."""
        if target.precision != "int8":
            return None
        text = calibration_cache_of(onnx_path).read_text()
        number = encode_version(self.version())
        cache = tmp / NATIVE_CACHE
        cache.write_text(with_version(text, number) if number else text)
        return cache

    def engine_for(self, artifact: Path, target: CompileTarget) -> Path:
        """The engine the measuring command loads: ``artifact`` itself, or the cached build of it."""
        artifact = Path(artifact)
        if artifact.suffix in ENGINE_SUFFIXES:
            return artifact
        cache = self.engine_cache()
        found = cache.lookup(ENGINE_KIND, self._engine_inputs(artifact, target))
        if found is not None:
            return found.path / "model.engine"
        return cache.entry_dir(ENGINE_KIND, content_key(self._engine_inputs(artifact, target))) / "model.engine"

    def prepare(self, artifact: Path, target: CompileTarget, device_id: int = 0, timeout: float | None = None) -> None:
        """Build the engine of an ONNX artifact once (``trtexec --onnx --saveEngine``)."""
        artifact = Path(artifact)
        if artifact.suffix in ENGINE_SUFFIXES:
            if not artifact.is_file():
                raise VendorUsageError(f"trtexec: no engine file {artifact}")
            return

        def build(tmp: Path) -> dict[str, object]:
            calibration = self._calibration_for_build(artifact, target, tmp)
            argv = self.build_command(artifact, target, tmp / "model.engine", device_id, calibration)
            self.execute(
                argv,
                max(timeout or 0.0, BUILD_TIMEOUT),
                f"trtexec engine build of {artifact.name} bs{target.batch_size}",
            )
            if not (tmp / "model.engine").is_file():
                raise VendorUsageError(f"trtexec did not write the engine {tmp / 'model.engine'}")
            return {"build_command": argv[1:]}

        self.engine_cache().get_or_build(ENGINE_KIND, self._engine_inputs(artifact, target), build)

    # -- measuring ------------------------------------------------------------------------------

    def command(
        self, artifact: Path, target: CompileTarget, scenario: str, device_id: int = 0,
        seconds: float = 10.0, threads: int | None = None,
    ) -> list[str]:
        """``threads`` does not apply (trtexec drives the GPU from one thread per stream)."""
        self.check_scenario(scenario)
        argv = [self.executable, f"--loadEngine={self.engine_for(artifact, target)}",
                f"--shapes={target.input_name}:{_dims(target.batch_size, target.input_shape)}",
                f"--device={device_id}", f"--duration={max(1, math.ceil(seconds))}", "--percentile=90"]
        if scenario == OFFLINE:
            argv.append(f"{self._streams_flag()}={self.offline_streams}")
        else:
            argv.append("--exposeDMA")
        return argv

    def parse(self, output: str, target: CompileTarget, scenario: str, command: Sequence[str]) -> VendorFigure:
        self.check_scenario(scenario)
        out = Output(self.name, output, command)
        running = out.find(r"&&&& RUNNING TensorRT\.trtexec \[TensorRT v(\d+)\]")
        if out.find(r"&&&& FAILED TensorRT\.trtexec"):
            raise out.error("it reports FAILED")
        streams_line = out.find(_LINE + r"(?:Inference )?Streams: (\d+)")
        dma = out.find(_LINE + r"ExposeDMA: (Enabled|Disabled)")
        batch_line = out.find(_LINE + r"Batch: (\S+)")
        qps = out.need(_LINE + rf"Throughput: ({NUMBER}) qps", "Throughput line of the performance summary", last=True)
        latency = out.need(_LINE + r"Latency: " + _STATS, "Latency line of the performance summary", last=True)
        compute = out.need(_LINE + r"GPU Compute Time: " + _STATS, "GPU Compute Time line", last=True)
        walltime = out.find_last(_LINE + rf"Total Host Walltime: ({NUMBER}) s")
        streams = int(streams_line.group(1)) if streams_line else 1
        depth = 1 if dma and dma.group(1) == "Enabled" else 2
        if (scenario == OFFLINE) == (depth == 1 and streams == 1):
            raise out.error(f"it ran {streams} stream(s) with ExposeDMA {dma.group(1) if dma else 'unknown'}, "
                            f"not what the {scenario} scenario runs")
        implicit = batch_line is not None and batch_line.group(1).isdigit()
        per_query = 1 if implicit else target.batch_size  # implicit batch: trtexec counted images already
        wall_ips = float(qps.group(1)) * per_query
        compute_mean = float(compute.group(3))
        if scenario == OFFLINE:
            images_per_s, clock = wall_ips, WALL
        else:
            if compute_mean <= 0:
                raise out.error("GPU Compute Time mean is not positive")
            images_per_s, clock = 1000.0 * target.batch_size / compute_mean, DEVICE_COMPUTE
        version = decode_version(int(running.group(1))) if running else (self._version or "unknown")
        return VendorFigure(
            tool=self.name,
            tool_version=version,
            command=tuple(command),
            batch_size=target.batch_size,
            scenario=scenario,
            images_per_s=images_per_s,
            clock=clock,
            streams=streams,
            requests=streams * depth,
            latency_ms_median=float(latency.group(4)),
            latency_ms_mean=float(latency.group(3)),
            latency_ms_p90=float(latency.group(5)) if latency.group(5) else None,
            duration_s=float(walltime.group(1)) if walltime else None,
            excerpt=out.excerpt(),
            settings=settings({
                "throughput_qps": qps.group(1),
                "wall_images_per_s": f"{wall_ips:.6g}",
                "gpu_compute_ms_mean": compute.group(3),
                "gpu_compute_ms_median": compute.group(4),
                "device_images_per_s": f"{1000.0 * target.batch_size / compute_mean:.6g}" if compute_mean > 0 else None,
                "expose_dma": dma.group(1) if dma else None,
                "batch": batch_line.group(1) if batch_line else None,
            }),
        )
