"""harness.benchmark_tools: the vendors' own benchmark tools on the suite's artifacts.

benchmark_app runs for real here (OpenVINO's wheel ships it) on a tiny IR; its parser is also
checked on output captured here (tests/data/vendor/). ais_bench and trtexec cannot run here: their
command lines and parsers are checked against their documented formats (samples reconstructed from
their source, tests/data/vendor/README.md), and ``run()`` end to end against test doubles
(tests/doubles/fake_ais_bench.py, tests/doubles/vendor_bin/trtexec) that print those formats.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.backends.ascend_tools.tools import ToolError
from harness.backends.options import BackendOptionError
from harness.benchmark_tools import (
    AisBench,
    BenchmarkApp,
    NoVendorTool,
    Trtexec,
    VendorFigure,
    VendorOutputError,
    VendorToolUnavailable,
    VendorUsageError,
    vendor_tool_for,
)
from harness.benchmark_tools.benchmark_app import ir_input_type
from harness.benchmark_tools.trtexec import decode_version
from harness.cache import ArtifactCache
from harness.clocks import DEVICE_COMPUTE, WALL
from harness.errors import NotApplicable
from harness.specs import OFFLINE, SINGLE_STREAM, CompileTarget
from tests.waiting import HANG_S, time_limits_start_when, wait_for

DATA = Path(__file__).resolve().parent / "data" / "vendor"
DOUBLES = Path(__file__).resolve().parent / "doubles"
BS8 = CompileTarget(chip="x", batch_size=8, input_shape=(3, 224, 224), input_name="input")
TINY = CompileTarget(chip="cpu", batch_size=4, input_shape=(3, 32, 32), input_name="input")


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def tiny_onnx(path: Path, batch: int | str = "N") -> Path:
    """Conv 8x8/8 (3 -> 8) + ReLU + pool + MatMul to 10 classes on 32x32 images."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 8, 8)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.1, (8, 10)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1), helper.make_node("MatMul", ["f", "fc"], ["output"])]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino", reason="benchmark_app ships with the openvino wheel")
    from harness.backends.base import get_backend

    out = tmp_path_factory.mktemp("tiny-ir")
    return get_backend("openvino").compile(tiny_onnx(out / "tiny.onnx"), TINY, out)


@pytest.fixture
def doubles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH finds the fake trtexec, Python the fake ais_bench; returns the directory of their logs."""
    monkeypatch.setenv("PATH", f"{DOUBLES / 'vendor_bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", f"{DOUBLES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FAKE_VENDOR_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_AIS_BENCH_LOG", str(tmp_path / "ais_bench.log"))
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(tmp_path / "trtexec.log"))
    return tmp_path


def logged(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------
# Which tool, and the figure


def test_vendor_tool_for_maps_each_backend_to_its_vendor_tool() -> None:
    assert isinstance(vendor_tool_for("openvino", {}), BenchmarkApp)
    assert vendor_tool_for("openvino", {"device": "CPU", "threads": "1"}).backend.threads == 1
    assert isinstance(vendor_tool_for("ascend", {"soc_version": "Ascend310P3"}), AisBench)
    trt = {"providers": "TensorrtExecutionProvider,CUDAExecutionProvider"}
    assert isinstance(vendor_tool_for("onnxruntime", trt), Trtexec)


@pytest.mark.parametrize("backend, options, named", [
    ("onnxruntime", {}, "the onnxruntime CPU backend"),
    ("onnxruntime", {"providers": "CPUExecutionProvider"}, "providers CPUExecutionProvider"),
    ("onnxruntime", {"providers": "CUDAExecutionProvider"}, "providers CUDAExecutionProvider"),
    ("torch", {}, "the torch backend"),
])
def test_vendor_tool_for_refuses_a_backend_without_one_naming_what_exists(backend, options, named) -> None:
    with pytest.raises(NoVendorTool) as info:
        vendor_tool_for(backend, options)
    assert isinstance(info.value, NotApplicable)
    message = str(info.value)
    assert named in message and "no vendor benchmark tool" in message
    for known in ("openvino (benchmark_app)", "ascend (ais_bench)", "TensorRT provider (trtexec)"):
        assert known in message


def test_vendor_tool_for_openvino_reads_options_as_the_backend_does() -> None:
    with pytest.raises(BackendOptionError, match="no_such_option"):
        vendor_tool_for("openvino", {"no_such_option": "1"})


def test_figure_refuses_an_unknown_clock_scenario_or_a_non_positive_figure() -> None:
    good = dict(tool="t", tool_version="1", command=("t",), batch_size=1, scenario=SINGLE_STREAM, images_per_s=10.0,
                clock=WALL, streams=1, requests=1, latency_ms_median=None, latency_ms_mean=None, latency_ms_p90=None,
                duration_s=None, excerpt="")
    assert VendorFigure(**good).images_per_s == 10.0
    for bad in ({"clock": "cpu"}, {"scenario": "server"}, {"images_per_s": 0.0}, {"images_per_s": float("nan")}):
        with pytest.raises(ValueError):
            VendorFigure(**(good | bad))


# --------------------------------------------------------------------------------------------
# benchmark_app: parser on output captured here


def test_benchmark_app_parses_a_captured_single_stream_run() -> None:
    text = sample("benchmark_app-2026.4.1-efficientnet_lite0-bs8-single-stream.txt")
    figure = BenchmarkApp().parse(text, BS8, SINGLE_STREAM, ["benchmark_app", "-m", "model.xml"])
    assert (figure.images_per_s, figure.clock, figure.streams, figure.requests) == (30.69, WALL, 1, 1)
    assert (figure.latency_ms_median, figure.latency_ms_mean, figure.latency_ms_p90) == (232.97, 260.35, None)
    assert figure.duration_s == pytest.approx(3.12839)
    assert figure.tool_version == "2026.4.1-22982-e213a147257-releases/2026/4"
    assert figure.setting("PERFORMANCE_HINT") == "LATENCY" and figure.setting("input") == "f32 [8,3,224,224]"
    assert figure.setting("iterations") == "12"
    for line in (
        "Throughput:   30.69 FPS",
        "Median:        232.97 ms",
        "NUM_STREAMS: 1",
        "Start inference synchronously",
    ):
        assert line in figure.excerpt
    assert "Loading model files" not in figure.excerpt


def test_benchmark_app_parses_a_captured_offline_run() -> None:
    text = sample("benchmark_app-2026.4.1-efficientnet_lite0-bs8-offline.txt")
    figure = BenchmarkApp().parse(text, BS8, OFFLINE, ["benchmark_app"])
    assert (figure.images_per_s, figure.streams, figure.requests) == (40.18, 2, 2)
    assert figure.setting("PERFORMANCE_HINT") == "THROUGHPUT"
    assert "2 inference requests" in figure.excerpt


def test_benchmark_app_reads_microsecond_latencies_in_milliseconds() -> None:
    text = sample("benchmark_app-2026.4.1-tiny-bs4-offline-nthreads1.txt")
    figure = BenchmarkApp().parse(text, TINY, OFFLINE, ["benchmark_app"])
    assert "Median:        29.87 us" in text
    assert figure.latency_ms_median == pytest.approx(0.02987)
    assert figure.setting("INFERENCE_NUM_THREADS") == "1" and figure.streams == 1


@pytest.mark.parametrize("name, target, scenario, complaint", [
    ("benchmark_app-2026.4.1-efficientnet_lite0-bs8-single-stream.txt", BS8, OFFLINE, "ran synchronously"),
    ("benchmark_app-2026.4.1-efficientnet_lite0-bs8-offline.txt", BS8, SINGLE_STREAM, "ran asynchronously"),
    ("benchmark_app-2026.4.1-efficientnet_lite0-bs8-offline.txt", TINY, OFFLINE, "ran batch 8"),
])
def test_benchmark_app_refuses_output_of_another_run(name, target, scenario, complaint) -> None:
    with pytest.raises(VendorOutputError, match=complaint):
        BenchmarkApp().parse(sample(name), target, scenario, ["benchmark_app"])


def test_benchmark_app_refuses_output_without_the_figure_showing_command_and_tail() -> None:
    text = sample("benchmark_app-2026.4.1-efficientnet_lite0-bs8-offline.txt")
    cut = "\n".join(line for line in text.splitlines() if "Throughput" not in line)
    with pytest.raises(VendorOutputError) as info:
        BenchmarkApp().parse(cut, BS8, OFFLINE, ["benchmark_app", "-m", "my model.xml"])
    assert "no throughput" in str(info.value) and "'my model.xml'" in str(info.value)
    assert "Max:           791.54 ms" in str(info.value)  # the output's tail


# --------------------------------------------------------------------------------------------
# benchmark_app: command lines and real runs


def test_ir_input_type_reads_the_parameter_element_type(tmp_path: Path, tiny_ir: Path) -> None:
    assert ir_input_type(tiny_ir) == "f32"
    xml = tmp_path / "u8.xml"
    xml.write_text('<net><layers><layer id="0" name="x" type="Parameter"><data shape="1,3,8,8" element_type="u8"/>'
                   '</layer></layers></net>')
    assert ir_input_type(xml) == "u8"
    xml.write_text('<net><layers><layer id="0" name="x" type="Const"/></layers></net>')
    with pytest.raises(VendorOutputError, match="no Parameter"):
        ir_input_type(xml)


def test_benchmark_app_command_per_scenario(tiny_ir: Path) -> None:
    tool = BenchmarkApp()
    single = tool.command(tiny_ir, TINY, SINGLE_STREAM, seconds=2.5)
    assert single[1:] == ["-m", str(tiny_ir), "-d", "CPU", "-hint", "latency", "-api", "sync", "-t", "3",
                          "-infer_precision", "f32", "-ip", "f32"]
    offline = tool.command(tiny_ir, TINY, OFFLINE, seconds=0.2)
    assert offline[5:11] == ["-hint", "throughput", "-api", "async", "-t", "1"]
    bf16 = CompileTarget(chip="cpu", batch_size=4, input_shape=(3, 32, 32), input_name="input", precision="bf16")
    assert tool.command(tiny_ir, bf16, OFFLINE)[-3] == "bf16"
    pinned = BenchmarkApp({"performance_hint": "THROUGHPUT"}).command(tiny_ir, TINY, SINGLE_STREAM)
    assert pinned[5:9] == ["-hint", "throughput", "-api", "sync"]
    with pytest.raises(VendorToolUnavailable, match="one device"):
        tool.command(tiny_ir, TINY, SINGLE_STREAM, device_id=1)
    with pytest.raises(VendorUsageError, match="unknown scenario"):
        tool.command(tiny_ir, TINY, "server")


def test_benchmark_app_command_with_threads_moves_the_hint_to_a_config_file(tiny_ir: Path) -> None:
    argv = BenchmarkApp({"threads": "2"}).command(tiny_ir, TINY, OFFLINE, threads=1)
    i = argv.index("-hint")
    assert argv[i:i + 5] == ["-hint", "none", "-nthreads", "1", "-load_config"]
    assert json.loads(Path(argv[i + 5]).read_text()) == {"CPU": {"PERFORMANCE_HINT": "THROUGHPUT"}}
    from_option = BenchmarkApp({"threads": "2"}).command(tiny_ir, TINY, SINGLE_STREAM)
    assert from_option[from_option.index("-nthreads") + 1] == "2"


def test_benchmark_app_runs_both_scenarios_as_the_suites_session_runs_them(tiny_ir: Path) -> None:
    from harness.backends.base import get_backend

    tool = vendor_tool_for("openvino", {})
    assert tool.unavailable_reason() is None
    backend = get_backend("openvino")
    for scenario, hint in ((SINGLE_STREAM, "LATENCY"), (OFFLINE, "THROUGHPUT")):
        figure = tool.measure(tiny_ir, TINY, scenario, seconds=1)
        with backend.open(tiny_ir, TINY, num_classes=10, scenario=scenario) as session:
            suite = (session.streams, session.requests) if scenario == OFFLINE else (1, 1)
            threads = session.info["inference_num_threads"]
        assert figure.tool == "benchmark_app" and figure.scenario == scenario and figure.clock == WALL
        assert figure.images_per_s > 0 and figure.batch_size == 4 and figure.duration_s >= 1.0
        assert (figure.streams, figure.requests) == suite
        assert figure.setting("PERFORMANCE_HINT") == hint
        assert figure.setting("INFERENCE_NUM_THREADS") == str(threads)
        assert figure.setting("input") == "f32 [4,3,32,32]"  # not benchmark_app's default u8 image input
        assert figure.setting("INFERENCE_PRECISION_HINT") == "<Type: 'float32'>"
        assert figure.tool_version == tool.version()


def test_benchmark_app_run_with_one_thread_keeps_the_hint(tiny_ir: Path) -> None:
    figure = BenchmarkApp().measure(tiny_ir, TINY, OFFLINE, seconds=1, threads=1)
    assert figure.setting("INFERENCE_NUM_THREADS") == "1"
    assert figure.setting("PERFORMANCE_HINT") == "THROUGHPUT"
    assert "-nthreads" in figure.command


def test_benchmark_app_failure_names_the_command_and_the_output_tail(tiny_ir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model.xml"
    broken.write_text(tiny_ir.read_text())  # without its .bin
    with pytest.raises(ToolError) as info:
        BenchmarkApp().measure(broken, TINY, SINGLE_STREAM, seconds=1)
    message = str(info.value)
    assert "failed with exit status 1" in message and f"-m {broken}" in message
    assert "model.bin" in message  # OpenVINO's own complaint, from the output's tail


@pytest.mark.timing
def test_benchmark_app_is_killed_at_its_time_limit(tiny_ir: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 1 s and was killed"):
        BenchmarkApp().measure(tiny_ir, TINY, SINGLE_STREAM, seconds=60, timeout=1.0)
    assert time.monotonic() - start < HANG_S  # a hang detector: the tool would run for 60 s


def test_benchmark_app_missing_says_what_to_install(tiny_ir: Path) -> None:
    tool = BenchmarkApp(executable="/nonexistent/benchmark_app")
    assert "pip install openvino" in (tool.unavailable_reason() or "")
    with pytest.raises(VendorToolUnavailable, match="pip install openvino"):
        tool.measure(tiny_ir, TINY, SINGLE_STREAM, seconds=1)


# --------------------------------------------------------------------------------------------
# ais_bench


def test_ais_bench_command_and_its_offline_refusal(tmp_path: Path) -> None:
    om = tmp_path / "m.om"
    assert AisBench(loop=500).command(om, BS8, SINGLE_STREAM, device_id=3) == [
        sys.executable, "-m", "ais_bench", "--model", str(om), "--loop", "500", "--device", "3",
        "--display_all_summary", "true"]
    with pytest.raises(VendorToolUnavailable, match="no offline .throughput. mode") as info:
        AisBench().command(om, BS8, OFFLINE)
    assert isinstance(info.value, NotApplicable) and "--pipeline" in str(info.value)


def test_ais_bench_offline_run_is_a_skip_before_anything_runs(doubles: Path) -> None:
    with pytest.raises(VendorToolUnavailable, match="compare --scenario single-stream"):
        AisBench(module="fake_ais_bench").measure(fake_om(doubles / "m.om"), BS8, OFFLINE)
    assert logged(doubles / "ais_bench.log") == []


def test_ais_bench_parses_the_documented_summary() -> None:
    text = sample("ais_bench-tools-2023-resnext50-bs8-single-stream.txt")
    figure = AisBench().parse(text, BS8, SINGLE_STREAM, ["python", "-m", "ais_bench", "--loop", "1000"])
    assert figure.images_per_s == pytest.approx(3536.7873185661265) and figure.clock == DEVICE_COMPUTE
    assert figure.images_per_s == pytest.approx(1000 * 8 / figure.latency_ms_mean)
    assert (figure.latency_ms_median, figure.latency_ms_p90, figure.duration_s) == (2.2588, None, None)
    assert (figure.streams, figure.requests) == (1, 1)
    assert figure.setting("loop") == "1000" and figure.setting("npu_compute_ms_p99") == "2.4516"
    assert figure.setting("H2D_latency_ms_mean") == "0.5429983139038086"
    assert "throughput 1000*batchsize.mean(8)" in figure.excerpt and "acl init" not in figure.excerpt


BS16 = CompileTarget(chip="x", batch_size=16, input_shape=(3, 224, 224), input_name="input")


@pytest.mark.parametrize("edit, target, complaint", [
    (lambda t: t, BS16, "ran batch 8"),
    (lambda t: t.replace("): 3536.7873185661265", "): 3600.0"), BS8, "is not 1000"),
    (lambda t: "\n".join(x for x in t.splitlines() if "NPU_compute_time" not in x), BS8, "no NPU_compute_time"),
])
def test_ais_bench_refuses_an_inconsistent_summary(edit, target, complaint) -> None:
    text = edit(sample("ais_bench-tools-2023-resnext50-bs8-single-stream.txt"))
    with pytest.raises(VendorOutputError, match=complaint):
        AisBench().parse(text, target, SINGLE_STREAM, ["x"])


def test_ais_bench_refuses_a_pipeline_summary() -> None:
    with pytest.raises(VendorOutputError, match="--pipeline --threads summary"):
        AisBench().parse(sample("ais_bench-ait-2024-resnext50-bs8-pipeline-threads2.txt"), BS8, SINGLE_STREAM, ["x"])


def fake_om(path: Path, batch: int = 8) -> Path:
    sys.path.insert(0, str(DOUBLES))
    try:
        import fake_om as container
    finally:
        sys.path.remove(str(DOUBLES))
    container.write(path, {"input_name": "input", "input_shape": [batch, 3, 224, 224]}, b"")
    return path


def test_ais_bench_runs_end_to_end_with_a_calibrated_loop(doubles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AIS_BENCH_COMPUTE_MS", "4.0")
    om = fake_om(doubles / "resnext50_bs8.om")
    tool = AisBench(module="fake_ais_bench")
    assert tool.unavailable_reason() is None
    figure = tool.measure(om, BS8, SINGLE_STREAM, device_id=1, seconds=2)
    runs = logged(doubles / "ais_bench.log")
    assert [r[r.index("--loop") + 1] for r in runs] == ["20", "500"]  # calibration, then 2 s of 4 ms runs
    assert runs[-1][runs[-1].index("--device") + 1] == "1"
    assert figure.images_per_s == pytest.approx(2000.0) and figure.latency_ms_mean == pytest.approx(4.0)
    assert figure.tool_version == "fake_ais_bench 0.0.2+double" and figure.setting("loop") == "500"
    assert figure.command[1:3] == ("-m", "fake_ais_bench")


def test_ais_bench_failure_names_the_command_and_the_output_tail(
    doubles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AIS_BENCH_EXIT", "3")
    om = fake_om(doubles / "m.om")
    with pytest.raises(ToolError) as info:
        AisBench(module="fake_ais_bench", loop=100).measure(om, BS8, SINGLE_STREAM)
    message = str(info.value)
    assert "failed with exit status 3" in message and f"--model {om} --loop 100" in message
    assert "the device 0 is busy" in message and "try get model batchsize:1" in message


def test_ais_bench_missing_says_what_to_install(doubles: Path) -> None:
    tool = AisBench(module="no_such_ais_bench_module")
    reason = tool.unavailable_reason() or ""
    assert "no_such_ais_bench_module is not importable" in reason and "install ais_bench and aclruntime" in reason
    with pytest.raises(VendorToolUnavailable, match="pip install aclruntime"):
        tool.measure(doubles / "m.om", BS8, SINGLE_STREAM)
    assert "not on PATH" in (AisBench(python="/nonexistent/python3").unavailable_reason() or "")


@pytest.mark.timing
def test_ais_bench_timeout_kills_the_tool_and_its_children(doubles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AIS_BENCH_SLEEP", "300")
    monkeypatch.setenv("FAKE_AIS_BENCH_PIDS", str(doubles / "pids"))
    time_limits_start_when(monkeypatch, doubles / "pids")  # once the tool has its child and has printed
    start = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 4 s and was killed") as info:
        AisBench(module="fake_ais_bench", loop=10).measure(fake_om(doubles / "m.om"), BS8, SINGLE_STREAM, timeout=4.0)
    assert time.monotonic() - start < HANG_S  # a hang detector: the tool would sleep 300 s
    assert "acl init success" in str(info.value)  # what it printed before it hung
    tool_pid, child_pid = map(int, (doubles / "pids").read_text().split())
    wait_for(lambda: not alive(tool_pid) and not alive(child_pid), "the tool and its child ended")


# --------------------------------------------------------------------------------------------
# trtexec


@pytest.mark.parametrize("number, text", [(8601, "8.6.1"), (8503, "8.5.3"), (101600, "10.16.0"), (100300, "10.3.0")])
def test_trtexec_version_numbers_decode(number: int, text: str) -> None:
    assert decode_version(number) == text


def test_trtexec_parses_the_documented_single_stream_summary() -> None:
    text = sample("trtexec-10.16-resnext50-bs8-single-stream.txt")
    figure = Trtexec().parse(text, BS8, SINGLE_STREAM, ["trtexec"])
    assert figure.tool_version == "10.16.0" and figure.clock == DEVICE_COMPUTE
    assert figure.images_per_s == pytest.approx(1000 * 8 / 2.40351)
    assert (figure.latency_ms_median, figure.latency_ms_mean, figure.latency_ms_p90) == (2.74658, 2.75622, 2.79004)
    assert (figure.streams, figure.requests, figure.duration_s) == (1, 1, 10.0021)
    assert figure.setting("throughput_qps") == "361.924" and figure.setting("wall_images_per_s") == "2895.39"
    assert "GPU Compute Time: min = 2.38281 ms" in figure.excerpt and "Enqueue Time" not in figure.excerpt


@pytest.mark.parametrize("name, version, qps", [
    ("trtexec-10.16-resnext50-bs8-offline-infStreams2.txt", "10.16.0", 452.088),
    ("trtexec-8.5.3-resnext50-bs8-offline-streams2.txt", "8.5.3", 438.964),
])
def test_trtexec_parses_the_documented_offline_summary(name: str, version: str, qps: float) -> None:
    figure = Trtexec().parse(sample(name), BS8, OFFLINE, ["trtexec"])
    assert figure.tool_version == version and figure.clock == WALL
    assert figure.images_per_s == pytest.approx(qps * 8)
    assert (figure.streams, figure.requests) == (2, 4)


def test_trtexec_refuses_output_of_another_scenario_or_a_failed_run() -> None:
    with pytest.raises(VendorOutputError, match="not what the single-stream scenario runs"):
        Trtexec().parse(sample("trtexec-10.16-resnext50-bs8-offline-infStreams2.txt"), BS8, SINGLE_STREAM, ["t"])
    with pytest.raises(VendorOutputError, match="not what the offline scenario runs"):
        Trtexec().parse(sample("trtexec-10.16-resnext50-bs8-single-stream.txt"), BS8, OFFLINE, ["t"])
    failed = sample("trtexec-10.16-resnext50-bs8-single-stream.txt").replace("&&&& PASSED", "&&&& FAILED")
    with pytest.raises(VendorOutputError, match="FAILED"):
        Trtexec().parse(failed, BS8, SINGLE_STREAM, ["t"])


def test_trtexec_commands_per_scenario_and_version(
    doubles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = tmp_path / "m.engine"
    engine.write_text("{}")
    single = Trtexec().command(engine, BS8, SINGLE_STREAM, device_id=2, seconds=9.5)
    assert single == ["trtexec", f"--loadEngine={engine}", "--shapes=input:8x3x224x224", "--device=2",
                      "--duration=10", "--percentile=90", "--exposeDMA"]
    assert Trtexec(offline_streams=3).command(engine, BS8, OFFLINE)[-1] == "--infStreams=3"
    monkeypatch.setenv("FAKE_TRTEXEC_VERSION", "8503")
    assert Trtexec().command(engine, BS8, OFFLINE)[-1] == "--streams=2"
    with pytest.raises(VendorUsageError):
        Trtexec(offline_streams=0)


def test_trtexec_build_command_gives_the_suites_profile_only_to_a_dynamic_onnx(doubles: Path, tmp_path: Path) -> None:
    fp16 = CompileTarget(chip="T4", batch_size=4, input_shape=(3, 32, 32), input_name="input", precision="fp16")
    dynamic = Trtexec().build_command(tiny_onnx(tmp_path / "d.onnx"), fp16, tmp_path / "e.engine")
    assert dynamic[1:] == [f"--onnx={tmp_path / 'd.onnx'}", f"--saveEngine={tmp_path / 'e.engine'}", "--device=0",
                           "--skipInference", "--fp16", "--minShapes=input:1x3x32x32", "--optShapes=input:4x3x32x32",
                           "--maxShapes=input:4x3x32x32"]
    static = Trtexec().build_command(tiny_onnx(tmp_path / "s.onnx", batch=4), TINY, tmp_path / "e.engine")
    assert not any(a.startswith(("--fp16", "--minShapes", "--shapes")) for a in static)


def test_trtexec_runs_end_to_end_building_the_engine_once(
    doubles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRTEXEC_COMPUTE_MS", "2.5")
    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    tool = Trtexec(cache=ArtifactCache(tmp_path / "cache"))
    assert tool.unavailable_reason() is None and tool.version() == "10.16.0"
    single = tool.measure(onnx_path, TINY, SINGLE_STREAM, seconds=2)
    offline = tool.measure(onnx_path, TINY, OFFLINE, seconds=2)
    runs = [r for r in logged(doubles / "trtexec.log") if r != ["--help"]]
    assert [r[0].split("=")[0] for r in runs] == ["--onnx", "--loadEngine", "--loadEngine"]  # built once
    engine = Path(runs[1][0].split("=", 1)[1])
    assert runs[2][0] == runs[1][0] and engine.is_file() and (tmp_path / "cache" / "trtexec-engine") in engine.parents
    assert json.loads(engine.read_text())["max"] == "input:4x3x32x32"  # the suite's profile, from the dynamic ONNX
    assert single.images_per_s == pytest.approx(1000 * 4 / 2.5) and single.clock == DEVICE_COMPUTE
    assert offline.clock == WALL and (offline.streams, offline.requests) == (2, 4)
    assert offline.images_per_s == pytest.approx(float(offline.setting("throughput_qps")) * 4)


def test_trtexec_failure_names_the_command_and_the_output_tail(
    doubles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "Cuda failure: out of memory")
    engine = tmp_path / "m.engine"
    engine.write_text("{}")
    with pytest.raises(ToolError) as info:
        Trtexec().measure(engine, BS8, SINGLE_STREAM, seconds=1)
    message = str(info.value)
    assert "failed with exit status 1" in message and f"--loadEngine={engine}" in message
    assert "Cuda failure: out of memory" in message and "&&&& FAILED" in message


@pytest.mark.timing
def test_trtexec_missing_or_hung(doubles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Trtexec(executable="no-such-trtexec")
    assert "TensorRT" in (missing.unavailable_reason() or "") and "PATH" in missing.unavailable_reason()
    engine = tmp_path / "m.engine"
    engine.write_text("{}")
    with pytest.raises(VendorToolUnavailable, match="not found on PATH"):
        missing.measure(engine, BS8, SINGLE_STREAM)
    tool = Trtexec()
    tool.version()
    monkeypatch.setenv("FAKE_TRTEXEC_SLEEP", "300")
    start = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 1.5 s and was killed"):
        tool.measure(engine, BS8, SINGLE_STREAM, timeout=1.5)
    assert time.monotonic() - start < HANG_S  # a hang detector: the tool would sleep 300 s
