"""Conversion: every registered architecture exports to ONNX at the requested opset and matches torch.

Seeded random weights with BatchNorm statistics calibrated on images (DESIGN.md: random-weight
parity can lie both ways otherwise), so this runs anywhere, with no checkpoints and no ImageNet.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.backends.torch_ref import TorchSession
from harness.judge.gates import certify, conversion_gates
from harness.judge.metrics import parity
from harness.pytest.fixtures import RecordWriter
from harness.records.parts import (
    MEASURED,
    Configuration,
    Judgement,
    ParityFigures,
    Setup,
)
from harness.records.schema import ConversionRecord
from harness.run.workbench import Workbench
from harness.specs import CompileTarget, ModelSpec, Policy

pytestmark = [pytest.mark.conversion, pytest.mark.slow]

PARITY_BATCH = 8


def test_export_parity(workbench: Workbench, policy: Policy, model_spec: ModelSpec, record: RecordWriter) -> None:
    import onnx  # here, not at the top: collecting the suite for a run that converts nothing loads no onnx

    from harness.backends.onnxruntime import OnnxRuntimeBackend

    opset = workbench.cfg.opset
    record.start(ConversionRecord(config=Configuration(model=model_spec.name, source=MEASURED), opset=opset))
    loaded = workbench.model(model_spec, weights="random", calibration_source="embedded")
    onnx_path = workbench.onnx(loaded)

    proto = onnx.load(str(onnx_path), load_external_data=False)
    file_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert file_opset == opset, f"asked for opset {opset}, the file declares {file_opset}"
    assert [i.name for i in proto.graph.input] == [model_spec.input_name]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, f"batch dimension is fixed at {batch_dim.dim_value}, expected dynamic"

    prepared = workbench.dataset(model_spec, "embedded")
    target = CompileTarget(chip="cpu", batch_size=PARITY_BATCH, input_shape=model_spec.input_shape,
                           input_name=model_spec.input_name)
    torch_session = TorchSession(loaded.module, PARITY_BATCH, model_spec.input_shape, model_spec.num_classes)
    with OnnxRuntimeBackend().open(onnx_path, target, num_classes=model_spec.num_classes) as ort_session:
        onnx_logits = workbench.infer_dataset(ort_session, prepared, PARITY_BATCH, f"{model_spec.name} onnx")
    torch_logits = workbench.infer_dataset(torch_session, prepared, PARITY_BATCH, f"{model_spec.name} torch")
    assert np.isfinite(torch_logits).all()

    report = parity(torch_logits, onnx_logits)
    gates = conversion_gates(report, policy)
    record.update(setup=Setup(weights=loaded.weights.kind, weights_source=loaded.weights.source), images=report.count,
                  onnx_sha256_prefix=onnx_path.parent.name[:12],
                  parity=ParityFigures(count=report.count, max_abs_diff=report.max_abs_diff,
                                       mean_abs_diff=report.mean_abs_diff, max_rel_diff=report.max_rel_diff,
                                       min_cosine=report.min_cosine, top1_agreement=report.top1_agreement),
                  judgement=Judgement.of(gates))
    certify(gates, f"{model_spec.name}: the ONNX export (opset {opset}) vs torch, seeded random weights",
            f"{report.count} images (embedded)")
