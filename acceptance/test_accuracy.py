"""Accuracy certification: the compiled model's top-1/top-5 on ImageNet val vs the published figures.

`pytest -m accuracy --imagenet DIR [--chip 310P3] [--models a,b] [--limit N]`. Each test compiles
the model for the chip at one batch size, scores it, scores the torch reference on the same
images, and checks the policy's gates (fixtures/policy.toml). Its record (harness.records.schema)
carries the figures and the gates' verdict. When a gate's verdict is fail, ``--localize-on-fail``
(the default) localises the loss layer by layer (docs/localize.md, "In the suite").
"""

from __future__ import annotations

import pytest

from acceptance._records import configuration, evaluation_parts, published
from harness.errors import NotApplicable, NotCertified
from harness.judge.gates import (
    Gate,
    agreement_gate,
    agreement_verdict_gate,
    certify,
    paired_accuracy_gates,
    published_gates,
    tolerance_for,
    verdict_fields,
)
from harness.judge.reference_check import likely_cause, reference_gates
from harness.pytest.fixtures import RecordWriter
from harness.pytest.plugin import localize_dir
from harness.pytest.state import session_state
from harness.records.parts import Judgement, Setup, Verdicts
from harness.records.schema import AccuracyRecord, AgreementRecord, Localization
from harness.run.workbench import Evaluation, Workbench
from harness.specs import ChipSpec, ModelSpec, Policy

pytestmark = pytest.mark.slow
EMBEDDED = "embedded synthetic images"


def certify_or_localize(gates: list[Gate], what: str, request: pytest.FixtureRequest, workbench: Workbench,
                        chip: ChipSpec, ev: Evaluation, record: RecordWriter, scope: str = "") -> None:
    """:func:`certify`; when a gate's verdict is fail (not inconclusive: too few images is no loss
    to localise) and ``--localize-on-fail`` is on, localise the loss first on the run's own logits.
    The failure stays the gates' message (its first line the verdict, harness.judge.gates.certify;
    ``scope``: the images judged), plus the summary's last line, or one line saying why
    localisation did not run: localisation never hides or replaces the verdict."""
    try:
        certify(gates, what, scope)
    except NotCertified as exc:
        if not session_state(request.config).localize or all(g.verdict != "fail" for g in gates):
            raise
        if any(g.verdict == "fail" for g in gates if g.name.startswith("reference_")):
            raise NotCertified(f"{exc}\nlocalisation did not run: the torch reference failed its own gate, so "
                               "comparing the compiled model with it layer by layer would localise nothing") from None
        raise NotCertified(f"{exc}\n{localize_loss(request, workbench, chip, ev, record)}") from None


def localize_loss(request: pytest.FixtureRequest, workbench: Workbench, chip: ChipSpec, ev: Evaluation,
                  record: RecordWriter) -> str:
    """Localise, record the summary (a :class:`Localization` part) and return its last line."""
    try:
        from harness.localize import localize_failure

        summary = localize_failure(
            ev.onnx_path, chip.backend, chip.precision, ev.prepared, localize_dir(request.config, request.node.name),
            backend_options=chip.backend_options, threads=workbench.cfg.threads,
            thresholds=workbench.policy.localize, outputs=(ev.reference_logits, ev.logits))
    except Exception as exc:  # whatever stops localisation, the verdict stands
        why = exc.reason() if isinstance(exc, NotApplicable) else f"{type(exc).__name__}: {exc}"
        why = " ".join(why.split())
        record.update(localization=Localization(localization=f"not run: {why}"))
        return f"localisation did not run: {why}"
    record.update(localization=Localization.of(summary))
    return summary.last_line()


def skip_random_weights(workbench: Workbench, what: str) -> None:
    """``--weights random`` never certifies accuracy or agreement: a skip that says why (a failure
    under --strict-certification). Conversion parity and throughput need no real weights."""
    if workbench.cfg.weights == "random":
        pytest.skip(f"--weights random: an {what} verdict needs the pretrained weights the published figure was "
                    "measured with; pass --weights pretrained (the default). Random weights certify conversion, "
                    "pytest -m conversion, and throughput, pytest -m perf")


def reference_cause(ev: Evaluation) -> str:
    """harness.judge.reference_check.likely_cause on the run's reference logits and labels."""
    if ev.reference_logits is None or ev.prepared is None:
        return ""
    return likely_cause(ev.reference_logits, ev.prepared.labels)


@pytest.mark.accuracy
def test_accuracy(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec, batch_size: int,
    record: RecordWriter, request: pytest.FixtureRequest,
) -> None:
    config = configuration(workbench, model_spec, chip_spec, batch_size)
    record.start(AccuracyRecord(config=config, published=published(model_spec)))
    if workbench.cfg.imagenet is None:
        pytest.skip("no ImageNet given; pass --imagenet DIR "
                    "(DIR/val/*.JPEG with DIR/val_label.txt, or an ImageFolder tree DIR/val/<wnid>/*.JPEG)")
    skip_random_weights(workbench, "accuracy")
    ev = workbench.evaluate(model_spec, chip_spec, batch_size, "imagenet")
    record.update(**evaluation_parts(ev, config))
    policy = policy.for_precision(ev.precision)  # int8: [int8] agreement_min_top1
    tolerance = tolerance_for(policy, model_spec)
    gates = reference_gates(ev.reference, model_spec.published, ev.coverage, tolerance, policy.reference,
                            policy.accuracy.confidence, cause=reference_cause(ev))
    gates += paired_accuracy_gates(ev.reference_correct, ev.compiled_correct, policy, tolerance)
    gates += published_gates(ev.accuracy, model_spec.published, ev.coverage, tolerance, policy.accuracy.confidence)
    gates.append(agreement_verdict_gate(ev.agreement, policy, "torch"))
    not_checked = {} if model_spec.published.top5 is not None else {
        "published_top5": "not checked: no published top-5 in " + model_spec.published.source}
    record.update(judgement=Judgement.of(gates, not_checked),
                  verdicts=Verdicts.of(verdict_fields(gates), ev.coverage.as_record()))
    certify_or_localize(gates, f"{model_spec.name} on {chip_spec.name} bs{batch_size} ({ev.coverage.describe()})",
                        request, workbench, chip_spec, ev, record, scope=ev.coverage.short())


@pytest.mark.agreement
def test_agreement(
    workbench: Workbench, policy: Policy, model_spec: ModelSpec, chip_spec: ChipSpec, batch_size: int,
    record: RecordWriter, request: pytest.FixtureRequest,
) -> None:
    """Compiled model vs torch reference on the images the project makes (runs with no ImageNet)."""
    config = configuration(workbench, model_spec, chip_spec, batch_size)
    record.start(AgreementRecord(config=config, setup=Setup(dataset_name=EMBEDDED)))
    skip_random_weights(workbench, "agreement")
    ev = workbench.evaluate(model_spec, chip_spec, batch_size, "embedded")
    record.update(**evaluation_parts(ev, config, dataset_name=EMBEDDED))
    gate = agreement_gate(ev.agreement, policy.for_precision(ev.precision), "torch")
    record.update(judgement=Judgement.of([gate]))
    certify_or_localize([gate], f"{model_spec.name} on {chip_spec.name} bs{batch_size} ({EMBEDDED})",
                        request, workbench, chip_spec, ev, record, scope=EMBEDDED)
