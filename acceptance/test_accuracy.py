"""Accuracy certification: the compiled model's top-1/top-5 on ImageNet val vs the published figures.

`pytest -m accuracy --imagenet DIR [--chip 310P3] [--models a,b] [--limit N]`. Each test compiles
the model for the chip at one batch size, scores it, scores the torch reference on the same
images, and checks the policy's gates (fixtures/policy.toml).
"""

from __future__ import annotations

from typing import Callable

import pytest

from acceptance._records import evaluation_properties
from harness.backends.base import BackendUnavailable
from harness.judge.gates import accuracy_gates, agreement_gate, failures
from harness.model.weights import WeightsNotFound
from harness.run.workbench import Workbench
from harness.specs import ChipSpec, ModelSpec, Policy

pytestmark = pytest.mark.slow


def _evaluate(workbench: Workbench, spec: ModelSpec, chip: ChipSpec, batch_size: int, source: str):
    try:
        return workbench.evaluate(spec, chip, batch_size, source)
    except BackendUnavailable as exc:
        pytest.skip(f"{chip.name} backend unavailable: {exc}")


@pytest.mark.accuracy
def test_accuracy(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec, batch_size: int,
    record: Callable[..., None],
) -> None:
    record(kind="accuracy", model=model_spec.name, chip=chip_spec.name, batch_size=batch_size,
           published_top1=model_spec.published.top1, published_top5=model_spec.published.top5,
           published_source=model_spec.published.source)
    if workbench.cfg.imagenet is None:
        pytest.skip("accuracy not certified: no ImageNet given; pass --imagenet DIR "
                    "(DIR/val/*.JPEG with DIR/val_label.txt, or an ImageFolder tree DIR/val/<wnid>/*.JPEG)")
    ev = _evaluate(workbench, model_spec, chip_spec, batch_size, "imagenet")
    record(**evaluation_properties(ev))
    gates = accuracy_gates(ev.accuracy, model_spec.published, policy)
    gates.append(agreement_gate(ev.agreement, policy, "torch"))
    record(**{f"gate_{g.name}": "pass" if g.passed else "fail" for g in gates})
    if model_spec.published.top5 is None:
        record(gate_top5="not checked: no published top-5 in " + model_spec.published.source)
    problems = failures(gates)
    assert not problems, f"{model_spec.name} on {chip_spec.name} bs{batch_size} is not certified:\n{problems}"


@pytest.mark.agreement
def test_agreement(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec, batch_size: int,
    record: Callable[..., None],
) -> None:
    """Compiled model vs torch reference on the images the project makes (runs with no ImageNet)."""
    record(kind="agreement", model=model_spec.name, chip=chip_spec.name, batch_size=batch_size,
           dataset_name="embedded synthetic images")
    try:
        ev = _evaluate(workbench, model_spec, chip_spec, batch_size, "embedded")
    except WeightsNotFound as exc:
        pytest.skip(f"pretrained weights not available: {exc.short}")
    record(**evaluation_properties(ev))
    gate = agreement_gate(ev.agreement, policy, "torch")
    record(gate_top1_agreement="pass" if gate.passed else "fail")
    assert gate.passed, gate.line()
