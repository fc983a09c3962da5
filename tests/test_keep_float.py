"""The way back to float (issue 26): the kept layers really run in float in the QDQ model, the
measured search finds the layer that a per-tensor quantization breaks, and the command's usage errors.

Real ONNX Runtime quantization and sessions on a small seeded-random ONNX model built here: a
convolution, a ReLU, a depthwise convolution whose weights span a large range in one channel (per-tensor
weight scales then flatten every other channel to a few levels: what per-tensor quantization does to
efficientnet_lite0's depthwise convolutions), pooling and a classifier. The run on efficientnet_lite0's
real weights is the ``keep-float`` command (docs/int8.md, Measured).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.__main__ import main as harness_main
from harness.backends.onnxruntime.float_inputs import activation_inputs_quantized
from harness.backends.onnxruntime.quantize import OrtQuantizer
from harness.backends.quantization import PER_TENSOR, QuantizationSettings
from harness.localize.images import Images
from harness.localize.keep_float import Trial, candidates, ort_logits, search
from harness.specs import load_policy

SIZE, CLASSES = 12, 10
DW = "/block/conv_dw/Conv"


def _model(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    dw = rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    w1[0] = 0.0  # channel 0 is zero at the depthwise conv's input: its output too, whatever its weights, so
    dw[0] *= 500.0  # the range of its weights harms only the weights: one scale per tensor crushes the other seven
    fc = rng.normal(0, 1.0, (CLASSES, 8)).astype(np.float32)
    fc[:, 0] = 0.0  # the classes depend on the seven channels that per-tensor scales crush
    arrays = {"w1": w1, "b1": np.zeros(8, np.float32), "wdw": dw, "bdw": np.zeros(8, np.float32), "fc": fc,
              "fcb": np.zeros(CLASSES, np.float32), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="/stem/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="/stem/act/Clip"),
        helper.make_node("Conv", ["a1", "wdw", "bdw"], ["c2"], name=DW, pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["a2"], name="/block/act/Relu"),
        helper.make_node("GlobalAveragePool", ["a2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="/classifier/Gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "keep_float_test",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("keep_float")
    source = _model(root / "model.onnx")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (240, 3, SIZE, SIZE), dtype=np.uint8)
    images = Images(pixels=pixels, names=tuple(f"img{i}" for i in range(len(pixels))))
    calibration = [images.batch(range(i, i + 16), np.dtype(np.float32)) for i in range(0, 64, 16)]
    scored = dataclasses.replace(images, pixels=pixels[64:], names=images.names[64:])
    reference = ort_logits(source, scored, threads=1)
    labels = reference.argmax(1)  # the float model is right on every image: any drop is the quantization's
    return source, calibration, scored, labels, reference, root


def _quantized(setup, keep: tuple[str, ...], name: str) -> onnx.ModelProto:
    source, calibration, _, _, _, root = setup
    out = root / name
    out.mkdir()
    path, info = OrtQuantizer().quantize(source, calibration, QuantizationSettings(scheme=PER_TENSOR,
                                                                                   keep_float=keep), out)
    assert set(keep) <= set(info.excluded_nodes)
    return onnx.load(str(path))


def test_a_kept_layer_reads_float_weights_and_float_activations(setup) -> None:
    plain = _quantized(setup, (), "plain")
    kept = _quantized(setup, (DW,), "kept")
    # quantized, the depthwise conv reads its input, weights and bias through DequantizeLinear
    assert len(activation_inputs_quantized(plain, [DW])[DW]) == 3
    # kept: neither; the ReLU6 that ORT folds into the stem's Q range is computed again, in float
    assert activation_inputs_quantized(kept, [DW]) == {DW: []}
    node = next(n for n in kept.graph.node if n.name == DW)
    made = {o: n for n in kept.graph.node for o in n.output}
    assert made[node.input[0]].op_type == "Clip" and node.input[1] in {i.name for i in kept.graph.initializer}
    # the stem stays quantized, and the classifier's logits layer stays float (logits = "float")
    assert activation_inputs_quantized(kept, ["/stem/Conv"])["/stem/Conv"]
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] == node.input[1] for n in kept.graph.node)
    # the kept model computes what the float model does up to the stem's quantization
    _, _, scored, labels, reference, root = setup
    onnx.save(kept, str(root / "kept.onnx"))
    logits = ort_logits(root / "kept.onnx", scored, threads=1)
    assert (logits.argmax(1) == labels).mean() > 0.9


def test_candidates_are_each_weighted_layer_and_the_depthwise_group(setup) -> None:
    model = onnx.load(str(setup[0]))
    found = {c.label: c.nodes for c in candidates(model, ["/classifier/Gemm"])}
    assert found["/stem/Conv"] == ("/stem/Conv",) and found[DW] == (DW,)
    assert "/classifier/Gemm" not in found and "block /block (2)" not in found  # one weighted layer per block
    assert not any(label.startswith("every depthwise") for label in found)  # a group of one is the layer


def test_the_search_measures_each_layer_and_keeps_the_one_that_restores_accuracy(setup) -> None:
    source, calibration, scored, labels, reference, root = setup
    policy = load_policy()
    policy = dataclasses.replace(policy, int8=dataclasses.replace(policy.int8, scheme=PER_TENSOR, keep_float_images=60,
                                                                  agreement_min_top1=80.0),
                                 accuracy=dataclasses.replace(policy.accuracy, tolerance_points=8.0))
    seen: list[Trial] = []
    result = search(source, QuantizationSettings(scheme=PER_TENSOR), lambda: iter(calibration), scored, labels,
                    reference, policy, threads=1, work_dir=root, on_trial=seen.append)
    start = result.trials[0]
    assert start.stage == "start" and not start.passed and start.images == len(labels)
    measured = {t.label: t for t in result.trials if t.stage == "candidate"}
    assert set(measured) == {"/stem/Conv", DW} and all(t.images == 60 for t in measured.values())
    assert measured[DW].gain[0] > measured["/stem/Conv"].gain[0]  # measured, not guessed
    assert result.found == (DW,) and result.final is not None and result.final.passed
    assert seen == list(result.trials)


def test_the_command_refuses_an_unknown_model_and_a_missing_imagenet_dir(tmp_path: Path, capsys) -> None:
    assert harness_main(["keep-float", "--model", "no_such_model", "--imagenet", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'no_such_model'" in err[0] and "efficientnet_lite0" in err[0]
    assert harness_main(["keep-float", "--model", "efficientnet_lite0", "--imagenet", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such directory" in err[0] and "val_label.txt" in err[0]
    assert harness_main(["keep-float", "--model", "efficientnet_lite0", "--imagenet", str(tmp_path),
                         "--backend", "tensorrt"]) == 2
    assert "onnxruntime, openvino or ascend" in capsys.readouterr().err


def test_nncf_accuracy_control_reverts_the_broken_layer_and_names_it_as_an_onnx_node(setup) -> None:
    pytest.importorskip("nncf", reason="OpenVINO INT8 needs NNCF: pip install -e '.[int8]'")
    import openvino as ov

    from harness.backends.openvino_quantize import NncfQuantizer, ignored_ops, onnx_nodes_of
    from harness.localize.keep_float_run import _top1_of

    source, calibration, scored, labels, _reference, root = setup
    validation = [(scored.batch([i], np.dtype(np.float32)), int(labels[i])) for i in range(len(labels))]
    settings = QuantizationSettings(scheme=PER_TENSOR)
    quantizer = NncfQuantizer()
    plain, _ = quantizer.quantize(source, calibration, settings, root / "ov_plain")
    compiled = ov.Core().compile_model(str(plain), "CPU")
    assert _top1_of(compiled, validation)[0] < 0.5  # per-tensor weights break the depthwise conv on OpenVINO too
    xml, info = quantizer.quantize_with_accuracy_control(source, calibration, validation, settings,
                                                         root / "ov_control", 1.0, _top1_of)
    assert info.scheme == "nncf-accuracy-control-performance" and not info.per_channel
    converted = ov.convert_model(str(source))
    logits = ignored_ops(converted, source, settings)  # the logits layer, float by policy (logits = "float")
    reverted = [op for op in info.excluded_nodes if op not in logits]
    assert onnx_nodes_of(converted, reverted, source) == [DW]
    assert _top1_of(ov.Core().compile_model(str(xml), "CPU"), validation)[0] >= 0.99 - 0.01
