"""TensorRT INT8 on the T4 (harness.backends.onnxruntime.trt_int8): the calibration is real, the rest a contract.

The calibration table is computed here for real, with ONNX Runtime on the CPU, on a small seeded
ONNX with named nodes: its files must parse as their consumers read them (ORT's flatbuffers table as
the TensorRT EP's ReadDynamicRange does, TensorRT's text cache with its header and one hex float32
scale per tensor) and agree with activations measured independently. There is no GPU and no
TensorRT here: what the T4 session is created with is checked through a simulated GPU build (as in
tests/test_ort_providers.py), and trtexec's int8 build through its test double
(tests/doubles/fake_trtexec.py), which uses a ``--calib`` cache only when TensorRT would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_ort_providers import SimulatedGpuSession, fake_gpus, simulated_gpu  # noqa: F401 (fixtures)

from harness.backends.base import BackendUnavailable
from harness.backends.onnxruntime import CPU, CUDA, TENSORRT, OnnxRuntimeBackend, provider_list
from harness.backends.onnxruntime.providers import INT8_CALIBRATION_TABLE
from harness.backends.onnxruntime.quantize import OrtQuantizer
from harness.backends.onnxruntime.trt_int8 import (
    NATIVE_CACHE,
    ORT_JSON,
    ORT_TABLE,
    ORT_TEXT,
    TensorRtQuantizer,
    calibration_tables,
    entropy_amax,
    native_cache_text,
    parse_native_cache,
    with_version,
)
from harness.backends.quantization import QuantizationError, QuantizationSettings
from harness.benchmark_tools import Trtexec, VendorUsageError
from harness.benchmark_tools.trtexec import encode_version
from harness.cache import ArtifactCache, file_sha256
from harness.run import int8
from harness.specs import CompileTarget, load_policy

DOUBLES = Path(__file__).resolve().parent / "doubles"
SHAPE = (3, 16, 16)
T4 = "TensorrtExecutionProvider,CUDAExecutionProvider"
TENSORS = ("input", "conv_out", "relu_out", "pool_out", "flat_out")  # every float activation but the logits


def target(precision: str = "int8", batch_size: int = 4) -> CompileTarget:
    return CompileTarget(chip="T4", batch_size=batch_size, input_shape=SHAPE, input_name="input", precision=precision)


def small_onnx(path: Path) -> Path:
    """Conv 3x3 (3 -> 8) + ReLU + pool + Gemm to 10 classes, seeded weights, every node named."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.3, (10, 8)).astype(np.float32), "fc_w"),
               numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu_out"], ["pool_out"], name="pool"),
             helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat_out", "fc_w", "fc_b"], ["logits"], name="classifier", transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", *SHAPE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def batches(seed: int = 1, count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (4, *SHAPE)).astype(np.float32) for _ in range(count)]


def calibrate(tmp_path: Path, method: str = "minmax", seed: int = 1, name: str = "q",
              settings: QuantizationSettings | None = None) -> Path:
    out = tmp_path / name
    out.mkdir()
    settings = dataclasses.replace(settings or QuantizationSettings(), tensorrt_calibration=method)
    artifact, _info = TensorRtQuantizer().quantize(small_onnx(tmp_path / "small.onnx"), batches(seed), settings, out)
    return artifact


def ort_table(path: Path) -> dict[str, float]:
    """ORT's flatbuffers table read as the TensorRT EP's ReadDynamicRange reads it (std::stof of each value)."""
    from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable

    table = TrtTable.GetRootAsTrtTable(path.read_bytes(), 0)
    return {table.Dict(i).Key().decode(): float(table.Dict(i).Value().decode()) for i in range(table.DictLength())}


def measured_amax(model: Path) -> dict[str, float]:
    """max |x| of every activation over the calibration batches, from a plain ORT session of the model
    with each tensor made a graph output (independent of the quantizer's calibrator)."""
    m = onnx.load(str(model))
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in TENSORS[1:])
    session = ort.InferenceSession(m.SerializeToString(), providers=[CPU])
    amax = dict.fromkeys(TENSORS, 0.0)
    for batch in batches():
        amax["input"] = max(amax["input"], float(np.abs(batch).max()))
        for name, out in zip(TENSORS[1:], session.run(None, {"input": batch}), strict=True):
            amax[name] = max(amax[name], float(np.abs(out).max()))
    return amax


# --------------------------------------------------------------------------------------------
# The calibration, computed for real


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_calibration_writes_tables_that_parse_and_agree(tmp_path: Path, method: str) -> None:
    artifact = calibrate(tmp_path, method)
    header, scales = parse_native_cache((artifact.parent / NATIVE_CACHE).read_text())
    assert header == "TRT-8601-EntropyCalibration2" and set(scales) == set(TENSORS)  # logits left out
    assert all(np.isfinite(s) and s > 0 for s in scales.values())
    table = ort_table(artifact.parent / ORT_TABLE)
    assert set(table) == set(TENSORS)
    for name, scale in scales.items():  # the EP's range from either file: flatbuffers value == scale * 127
        assert scale * 127 == pytest.approx(table[name], rel=1e-6)
    assert set(json.loads((artifact.parent / ORT_JSON).read_text())["data"]) == set(TENSORS)
    assert len((artifact.parent / ORT_TEXT).read_text().splitlines()) == len(TENSORS)
    measured = measured_amax(artifact)
    if method == "minmax":
        assert table == pytest.approx(measured, rel=1e-5)
    else:  # a clipping method never widens the range; the all-positive input keeps most of it
        assert all(table[t] <= measured[t] * (1 + 1e-5) for t in TENSORS)
        assert table["input"] > 0.5 * measured["input"]


def test_the_record_says_what_was_done(tmp_path: Path) -> None:
    out = tmp_path / "q"
    out.mkdir()
    _artifact, info = TensorRtQuantizer().quantize(small_onnx(tmp_path / "s.onnx"), batches(),
                                                    QuantizationSettings(tensorrt_calibration="entropy"), out)
    assert (info.tool, info.scheme, info.activation_type, info.weight_type) == ("tensorrt-calibrator", "entropy",
                                                                                "int8", "int8")
    assert info.version == ort.__version__ and info.per_channel and info.excluded_nodes == ("classifier",)


def test_quantized_logits_are_calibrated_and_keep_float_is_refused(tmp_path: Path) -> None:
    artifact = calibrate(tmp_path, settings=QuantizationSettings(logits="quantized"))
    assert "logits" in parse_native_cache((artifact.parent / NATIVE_CACHE).read_text())[1]
    with pytest.raises(QuantizationError, match="--keep-float conv is not supported for TensorRT"):
        calibrate(tmp_path, name="kept", settings=QuantizationSettings(keep_float=("conv",)))
    with pytest.raises(QuantizationError, match="tensorrt_calibration must be one of entropy, percentile, minmax"):
        TensorRtQuantizer().fields(QuantizationSettings(tensorrt_calibration="kl"))


def test_entropy_clips_a_long_tail_and_keeps_a_uniform_range() -> None:
    edges = np.linspace(0, 2048, 2049)
    assert entropy_amax(np.full(2048, 100), edges) == 2048  # nothing to gain by clipping
    tail = np.abs(np.random.default_rng(0).laplace(0, 1, 200_000))
    hist, edges = np.histogram(tail, bins=2048)
    assert 3 < entropy_amax(hist, edges) < 0.8 * tail.max()
    # A ReLU6 output, 75% exact zeros: without NVIDIA's zero-bin rule the narrowest cut (6 * 128/2048) won.
    relu6 = np.clip(np.random.default_rng(0).normal(-1, 1.5, 300_000), 0, 6)
    hist, edges = np.histogram(relu6, bins=2048, range=(0, 6))
    assert entropy_amax(hist, edges) > 4


def test_the_cache_key_changes_with_the_method_and_the_calibration_images(tmp_path: Path) -> None:
    settings = QuantizationSettings()
    fields = TensorRtQuantizer().fields
    assert fields(dataclasses.replace(settings, tensorrt_calibration="entropy")) != fields(
        dataclasses.replace(settings, tensorrt_calibration="minmax"))
    same = [file_sha256(calibrate(tmp_path, seed=1, name=n)) for n in ("a", "b")]
    other = file_sha256(calibrate(tmp_path, seed=2, name="c"))
    method = file_sha256(calibrate(tmp_path, "percentile", seed=1, name="d"))
    # The artifact carries its tables' digest: the compiled model's key (its ONNX's SHA-256) follows them.
    assert same[0] == same[1] and len({same[0], other, method}) == 3


def test_tables_that_are_not_the_calibrated_ones_are_refused(tmp_path: Path) -> None:
    artifact = calibrate(tmp_path)
    assert [p.name for p in calibration_tables(artifact)] == [ORT_TABLE, ORT_JSON, ORT_TEXT, NATIVE_CACHE]
    cache = artifact.parent / NATIVE_CACHE
    cache.write_text(cache.read_text().replace("relu_out:", "relu_out2:"))
    with pytest.raises(QuantizationError, match="not the ones it was calibrated with"):
        calibration_tables(artifact)
    with pytest.raises(QuantizationError, match="is not a TensorRT calibration artifact"):
        calibration_tables(tmp_path / "small.onnx")


def test_native_cache_format_and_version_header() -> None:
    text = native_cache_text({"data_0": 2.008338})
    assert text.splitlines()[0] == "TRT-8601-EntropyCalibration2"
    name, hexa = text.splitlines()[1].split(": ")
    (scale,) = struct.unpack(">f", struct.pack(">I", int(hexa, 16)))
    assert name == "data_0" and scale == pytest.approx(2.008338 / 127, rel=1e-6)
    assert with_version(text, 101600).splitlines() == ["TRT-101600-EntropyCalibration2", f"data_0: {hexa}"]
    assert encode_version("10.16.0") == 101600 and encode_version("8.6.1") == 8601 and encode_version("x") is None
    with pytest.raises(QuantizationError, match="starts with a 'TRT-<version>-<calibrator>' line"):
        parse_native_cache("data_0 2.0\n")
    with pytest.raises(QuantizationError, match="line 2 .* expected '<tensor>: <float32 scale in hex>'"):
        parse_native_cache("TRT-8601-EntropyCalibration2\ndata_0 2.0\n")


# --------------------------------------------------------------------------------------------
# The T4 session's options (no GPU: the provider list, and a simulated GPU build)


def test_t4_int8_session_options_name_the_table_in_the_engine_cache_path(tmp_path: Path) -> None:
    engines = tmp_path / "trt_engines"
    trt = dict(provider_list((TENSORRT, CUDA), target(), engine_dir=engines))[TENSORRT]
    assert trt["trt_int8_enable"] == "True" and trt["trt_fp16_enable"] == "False"
    assert trt["trt_int8_calibration_table_name"] == INT8_CALIBRATION_TABLE == ORT_TABLE
    assert trt["trt_int8_use_native_calibration_table"] == "False" and trt["trt_engine_cache_path"] == str(engines)
    assert "trt_int8_enable" not in dict(provider_list((TENSORRT, CUDA), target("fp16")))[TENSORRT]


def test_quantizer_per_provider() -> None:
    assert isinstance(OnnxRuntimeBackend().quantizer(), OrtQuantizer)
    trt = OnnxRuntimeBackend(providers=T4).quantizer()
    assert isinstance(trt, TensorRtQuantizer)
    policy = load_policy()
    assert trt.method(int8.settings_of(policy)) == policy.int8.tensorrt_calibration  # the run's policy decides
    with pytest.raises(BackendUnavailable, match="not for the CUDA provider; put TensorrtExecutionProvider first"):
        OnnxRuntimeBackend(providers=CUDA).quantizer()
    with pytest.raises(BackendUnavailable, match="not for the CUDA provider"):
        provider_list((CUDA, TENSORRT), target())


def test_t4_int8_compile_puts_the_tables_where_the_ep_and_trtexec_read_them(
        simulated_gpu: type[SimulatedGpuSession], tmp_path: Path) -> None:  # noqa: F811 (fixture)
    artifact = calibrate(tmp_path)
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    backend = OnnxRuntimeBackend(providers=T4, io_binding="false")
    compiled = backend.compile(artifact, target(), out_dir)
    ((providers, options),) = simulated_gpu.created
    trt = options[0]
    assert providers == [TENSORRT, CUDA, CPU] and trt["trt_int8_enable"] == "True"
    # ORT's GetCachePath(trt_engine_cache_path, trt_int8_calibration_table_name): the file the EP opens.
    table = Path(trt["trt_engine_cache_path"]) / trt["trt_int8_calibration_table_name"]
    assert ort_table(table) == ort_table(artifact.parent / ORT_TABLE)
    assert (compiled.parent / NATIVE_CACHE).read_text() == (artifact.parent / NATIVE_CACHE).read_text()
    with pytest.raises(QuantizationError, match="not a TensorRT calibration artifact"):
        backend.compile(tmp_path / "small.onnx", target(), tmp_path)


# --------------------------------------------------------------------------------------------
# trtexec's int8 engine build, through its test double


@pytest.fixture
def trtexec_double(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PATH", f"{DOUBLES / 'vendor_bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_VENDOR_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(tmp_path / "trtexec.log"))
    return tmp_path / "trtexec.log"


@pytest.mark.parametrize("version, header", [("101600", "TRT-101600-EntropyCalibration2"),
                                             ("8601", "TRT-8601-EntropyCalibration2")])
def test_trtexec_int8_build_passes_the_cache_with_its_own_version(
        trtexec_double: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, header: str) -> None:
    monkeypatch.setenv("FAKE_TRTEXEC_VERSION", version)
    artifact = calibrate(tmp_path)
    tool = Trtexec(cache=ArtifactCache(tmp_path / "cache"))
    tool.prepare(artifact, target())
    (argv,) = [json.loads(line) for line in trtexec_double.read_text().splitlines() if "--help" not in line]
    calib_arg = next(a for a in argv if a.startswith("--calib="))
    assert "--int8" in argv and "--fp16" not in argv and Path(calib_arg.split("=", 1)[1]).name == NATIVE_CACHE
    engine = tool.engine_for(artifact, target())  # the build directory, now the cache entry, keeps the cache used
    calib = (engine.parent / NATIVE_CACHE).read_text()
    assert calib.splitlines()[0] == header
    assert parse_native_cache(calib)[1] == parse_native_cache((artifact.parent / NATIVE_CACHE).read_text())[1]
    assert json.loads(engine.read_text())["calibration"] == "cache"  # TensorRT would use it, not random data


def test_trtexec_double_calibrates_randomly_on_a_cache_of_another_version(trtexec_double: Path,
                                                                           tmp_path: Path) -> None:
    artifact = calibrate(tmp_path)  # its cache says TRT-8601; the double is TensorRT 10.16
    engine = tmp_path / "e.engine"
    done = subprocess.run([str(DOUBLES / "vendor_bin" / "trtexec"), f"--onnx={artifact}", f"--saveEngine={engine}",
                           "--int8", f"--calib={artifact.parent / NATIVE_CACHE}", "--skipInference"],
                          capture_output=True, text=True, check=True)
    assert json.loads(engine.read_text())["calibration"].startswith("random: header 'TRT-8601")
    assert "calibrating with random data" in done.stderr


def test_trtexec_int8_build_without_a_cache_is_refused(trtexec_double: Path, tmp_path: Path) -> None:
    with pytest.raises(VendorUsageError, match="no calibration cache .*calibration.tensorrt.cache"):
        Trtexec().build_command(small_onnx(tmp_path / "s.onnx"), target(), tmp_path / "e.engine")
