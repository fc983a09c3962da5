"""The data flow of one run, with every step cached by content.

registry -> weights -> ONNX -> compiled artifact -> preprocessed data -> logits. The pytest
fixtures hold one Workbench per session (per xdist worker); several workers and processes share
the on-disk cache, which builds each artifact once. Every step is charged to a stage of the
workbench's ``clock`` (harness.run.stages: listing, preprocessing, model, export, compile,
session, inference, reference, scoring), which the session writes to ``stages.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import data as data_mod
from harness.backends.base import (
    Backend,
    BackendUnavailable,
    Session,
    folds_uint8_input,
    get_backend,
)
from harness.backends.quantization import INT8
from harness.backends.torch_ref import TorchSession
from harness.cache import ArtifactCache, default_cache_root
from harness.data.coverage import coverage
from harness.judge.gates import topk_correct
from harness.judge.metrics import accuracy_of, check_scorable, parity
from harness.run import int8
from harness.run.evaluation import Evaluation
from harness.run.infer import run_all
from harness.run.reference import (
    CACHED,
    COMPUTED_HERE,
    IMPORTED,
    ReferenceCheck,
    cached_reference,
    check_reference,
    reference_origin,
    reference_without_weights,
    refuse,
)
from harness.run.stages import StageClock
from harness.specs import (
    SINGLE_STREAM,
    ChipSpec,
    CompileTarget,
    ModelSpec,
    Policy,
    PreprocessSpec,
)

EMBEDDED_IMAGES = 32
EMBEDDED_SEED = 20240101


def worker_index() -> int:
    """0 in a plain pytest run; N for pytest-xdist worker ``gwN``."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def worker_device(device_ids: tuple[int, ...]) -> int:
    return device_ids[worker_index() % len(device_ids)]


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for on the command line."""

    imagenet: Path | None = None
    imagenet_labels: Path | None = None
    limit: int | None = None
    weights: str = "pretrained"
    weights_dir: Path | None = None  # None: <cache_dir>/weights
    cache_dir: Path = field(default_factory=default_cache_root)  # $MZC_CACHE_DIR, else the user's cache
    verify_cache: bool = False  # --verify-cache: hash large cache files too on every read, not only their size
    allow_download: bool = True
    preprocess_variant: str | None = None
    opset: int = 11
    workers: int | None = None
    threads: int | None = None
    on_label_mismatch: str = "error"
    input_dtype: str = "float32"  # "uint8": normalization folded into the model (harness.model.uint8_input)
    decode: str = "exact"  # "draft": libjpeg DCT-domain downscaling, other pixels, cached apart
    embedded_images: int = EMBEDDED_IMAGES
    device_ids: tuple[int, ...] = (0,)  # --device-ids: pytest-xdist worker N takes device_ids[N % len]
    calibration: Path | None = None  # --calibration DIR: int8 calibration images (None: split off the data)
    keep_float: tuple[str, ...] = ()  # --keep-float: ONNX nodes an int8 model keeps in float

    def __post_init__(self) -> None:
        if self.weights_dir is None:
            object.__setattr__(self, "weights_dir", self.cache_dir / "weights")


class LoadedModel:
    """A model's weights, known (``weights``, a harness.model.weights.WeightsInfo: checkpoint verified,
    or seed and calibration hashed), and its torch module, built on first use: a run whose ONNX
    export and reference are cached never builds it (the checkpoint read into the architecture, or
    random initialisation and BatchNorm calibration: seconds a model, ~10 s for resnext101_32x8d)."""

    def __init__(self, spec: ModelSpec, weights: Any, build: Callable[[], Any]):
        self.spec = spec
        self.weights = weights
        self._build: Callable[[], Any] | None = build
        self._module: Any = None

    @property
    def module(self) -> Any:
        if self._build is not None:
            self._module, self._build = self._build(), None
        return self._module

    @property
    def provenance(self) -> dict[str, Any]:
        """What the weights are and where they came from: recorded, and keys the reference logits."""
        return self.weights.provenance()


@contextmanager
def on_chip(chip: str) -> Iterator[None]:
    """Name the chip in a backend's refusal (``<chip> backend unavailable: <why>``): the backend
    says what it lacks, the run says which chip of the command line that was."""
    try:
        yield
    except BackendUnavailable as exc:
        if str(exc).startswith(f"{chip} backend unavailable: "):
            raise
        raise BackendUnavailable(f"{chip} backend unavailable: {exc}") from exc


@dataclass(frozen=True)
class Compiled:
    """A model compiled for one chip and batch size, ready to open: the one way from the registry
    to a session (accuracy runs, the batch sweep and the benchmarks all come through here)."""

    loaded: LoadedModel
    backend: Backend
    artifact: Path
    target: CompileTarget
    quantization: Mapping[str, Any] | None = None  # int8: harness.run.int8.Quantized.record()

    @contextmanager
    def open(self, device_id: int = 0, scenario: str = SINGLE_STREAM) -> Iterator[Session]:
        """A session on ``device_id`` set up for ``scenario`` (harness.specs.SCENARIOS), closed on
        exit; a refusal while opening names the chip."""
        with ExitStack() as stack:
            with on_chip(self.target.chip):
                session = stack.enter_context(self.backend.open(
                    self.artifact, self.target, device_id=device_id, num_classes=self.loaded.spec.num_classes,
                    scenario=scenario))
            yield session

    @property
    def precision(self) -> str:
        """The precision the artifact computes in (e.g. ATC's precision mode), as recorded."""
        return self.backend.compiled_precision(self.target)


@dataclass
class Workbench:
    """Builds and memoizes models, ONNX files, compiled artifacts and datasets for one session."""

    cfg: RunConfig
    policy: Policy
    cache: ArtifactCache = field(init=False)
    _models: dict[tuple[str, str], LoadedModel] = field(default_factory=dict, init=False)
    _datasets: dict[tuple[str, PreprocessSpec], data_mod.PreparedDataset] = field(default_factory=dict, init=False)
    _listings: dict[str, data_mod.DatasetListing] = field(default_factory=dict, init=False)
    # harness.run.sweep's memo: one sweep (session_sweep) or card measurement (session_card) per session
    sweeps: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False)
    clock: StageClock = field(default_factory=StageClock, init=False)  # wall seconds per stage
    # Reference entries computed in this session, and the check of each one it did not compute.
    _computed: set[str] = field(default_factory=set, init=False)
    _checks: dict[str, ReferenceCheck] = field(default_factory=dict, init=False)
    int8_memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False)  # harness.run.int8's

    def __post_init__(self) -> None:
        self.cache = ArtifactCache(self.cfg.cache_dir, verify_all=self.cfg.verify_cache)

    # -- data ---------------------------------------------------------------------------------

    def listing(self, source: str) -> data_mod.DatasetListing:
        """``imagenet`` (the user's --imagenet) or ``embedded`` (images the project makes)."""
        if source not in self._listings:
            with self.clock.stage("listing"):
                self._listings[source] = self._list(source)
        return self._listings[source]

    def _list(self, source: str) -> data_mod.DatasetListing:
        if source == "imagenet":
            if self.cfg.imagenet is None:
                raise data_mod.DataError("no ImageNet given: pass --imagenet DIR (DIR/val/*.JPEG + DIR/val_label.txt, "
                                         "or DIR/val/<wnid>/*.JPEG)")
            return data_mod.list_dataset(self.cfg.imagenet, self.cfg.imagenet_labels, limit=self.cfg.limit,
                                         on_mismatch=self.cfg.on_label_mismatch)
        if source == "embedded":  # making the images counts as listing them
            root = data_mod.synthetic_dataset(self.cache, self.cfg.embedded_images, seed=EMBEDDED_SEED)
            return data_mod.list_dataset(root)
        raise ValueError(f"unknown data source {source!r}")

    def dataset(self, spec: ModelSpec, source: str) -> data_mod.PreparedDataset:
        pre = spec.preprocess_for(self.cfg.preprocess_variant)
        memo = (source, pre)
        if memo not in self._datasets:
            listing = self.listing(source)
            with self.clock.stage("preprocessing"):
                self._datasets[memo] = data_mod.prepare_dataset(
                    listing, pre, self.cache, workers=self.cfg.workers, decode=self.cfg.decode,
                    decode_memory_mb=self.policy.data.decode_memory_mb)
        return self._datasets[memo]

    def calibration(self, spec: ModelSpec, source: str) -> np.ndarray:
        """The first N normalized images of ``source``: BatchNorm calibration for random weights."""
        prepared = self.dataset(spec, source)
        n = min(self.policy.conversion.calibration_images, len(prepared))
        pre = prepared.spec
        with self.clock.stage("preprocessing"):
            return data_mod.normalize(np.asarray(prepared.images[:n]), pre.mean, pre.std)

    # -- model, ONNX, compiled artifact -------------------------------------------------------

    def model(self, spec: ModelSpec, weights: str | None = None, calibration_source: str = "embedded") -> LoadedModel:
        from harness.model import weights as weights_mod

        mode = weights or self.cfg.weights
        memo = (spec.name, mode)
        if memo not in self._models:
            calib = self.calibration(spec, calibration_source) if mode == "random" else None
            with self.clock.stage("model"):
                info, build = weights_mod.describe_model(
                    spec, mode, self.cfg.weights_dir or self.cfg.cache_dir / "weights",
                    seed=self.policy.conversion.seed, calibration=calib, allow_download=self.cfg.allow_download,
                )

            def timed_build() -> Any:
                with self.clock.stage("model"):
                    return build()

            self._models[memo] = LoadedModel(spec, info, timed_build)
        return self._models[memo]

    def onnx(self, loaded: LoadedModel, chip: ChipSpec | None = None) -> Path:
        """The exported model; with ``input_dtype == "uint8"`` its uint8-input version, unless the
        chip's backend compiles normalization in itself (Ascend AIPP, see :meth:`target`)."""
        with self.clock.stage("export"):
            from harness.model import export

            path = export.cached_onnx(self.cache, loaded.spec, lambda: loaded.module, loaded.weights,
                                      opset=self.cfg.opset)
            if self.cfg.input_dtype == "uint8" and not (chip is not None and folds_uint8_input(chip.backend)):
                from harness.model.uint8_input import cached_uint8_onnx

                pre = loaded.spec.preprocess_for(self.cfg.preprocess_variant)
                path = cached_uint8_onnx(self.cache, path, pre.mean, pre.std)
            return path

    def backend(self, chip: ChipSpec) -> Backend:
        with self.clock.stage("compile"):  # importing the runtime and probing it: backend set-up
            backend = get_backend(chip.backend, threads=self.cfg.threads, **chip.backend_options)
            reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"{chip.name} backend unavailable: {reason}")
        return backend

    def device_id(self) -> int:
        """This process's device: pytest-xdist worker ``gwN`` takes ``device_ids[N % len]``."""
        return worker_device(self.cfg.device_ids)

    def target(self, spec: ModelSpec, chip: ChipSpec, batch_size: int) -> CompileTarget:
        options: dict[str, str] = {}
        if self.cfg.input_dtype == "uint8" and folds_uint8_input(chip.backend):
            pre = spec.preprocess_for(self.cfg.preprocess_variant)
            options = {"aipp": "static", "mean": ",".join(map(repr, pre.mean)), "std": ",".join(map(repr, pre.std))}
        return CompileTarget(
            chip=chip.name, batch_size=batch_size, input_shape=spec.input_shape,
            input_name=spec.input_name, precision=chip.precision, options=options,
        )

    def compiled(self, backend: Backend, onnx_path: Path, target: CompileTarget) -> Path:
        with self.clock.stage("compile"):  # the key (the ONNX file's hash), the lookup, a build
            inputs: dict[str, Any] = {
                "onnx_sha256": int8.source_digest(onnx_path),  # an IR's .xml and .bin (int8 on openvino)
                "backend": backend.name,
                "backend_fields": dict(backend.compile_fields()),
                "target": target.cache_fields(),
            }
            compile_key = backend.compile_key(target)  # e.g. ATC's full command and AIPP config
            if compile_key:  # absent, not empty, where a backend has none: cache keys stay as they were
                inputs["compile_key"] = compile_key

            def build(tmp: Path) -> Mapping[str, Any]:
                artifact = backend.compile(onnx_path, target, tmp)
                return {"artifact": artifact.name, "backend_version": backend.version(),
                        **inputs.get("compile_key", {})}

            entry = self.cache.get_or_build(f"compiled-{backend.name}", inputs, build)
        return entry.path / str(entry.manifest["artifact"])

    def compile(self, spec: ModelSpec, chip: ChipSpec, batch_size: int, source: str,
                backend: Backend | None = None, weights: str | None = None) -> Compiled:
        """``spec`` compiled for ``chip`` at ``batch_size`` with ``weights`` (default: the run's
        ``--weights``; random weights calibrate on ``source``)."""
        backend = backend or self.backend(chip)
        loaded = self.model(spec, weights, calibration_source=source)
        target = self.target(spec, chip, batch_size)
        with on_chip(chip.name):
            onnx_path = self.onnx(loaded, chip)  # int8: the backend's quantizer's model of it, calibrated apart
            quantized = int8.quantize(self, backend, spec, onnx_path, source) if chip.precision == INT8 else None
            artifact = self.compiled(backend, quantized.path if quantized else onnx_path, target)
        return Compiled(loaded=loaded, backend=backend, artifact=artifact, target=target,
                        quantization=quantized.record() if quantized else None)

    # -- inference ----------------------------------------------------------------------------

    def infer_dataset(self, session: Session, prepared: data_mod.PreparedDataset, batch_size: int,
                      desc: str) -> np.ndarray:
        """Logits for every image of ``prepared``, in its order (labels are joined by name there);
        charged to ``inference``, or to ``reference`` for a torch session."""
        with self.clock.stage("reference" if isinstance(session, TorchSession) else "inference"):
            return run_all(session, prepared, batch_size, desc)

    def reference(self, loaded: LoadedModel, prepared: data_mod.PreparedDataset) -> tuple[np.ndarray, dict[str, Any]]:
        """The torch reference's logits on ``prepared``, cached by weights + pixels + normalization
        (harness.run.reference; imported from a file by ``python -m harness reference import``),
        and where they came from (``origin``: computed here, cached or imported).
        Logits this session did not compute are checked once per session against torch run here
        on a fresh random sample (harness.run.reference.check_reference) before they may judge."""
        with self.clock.stage("reference"):
            logits, entry = cached_reference(self.cache, loaded.spec, lambda: loaded.module, loaded.weights, prepared,
                                             self.policy.reference)
            origin = reference_origin(entry.manifest)
            if entry.built_here or entry.key in self._computed:
                self._computed.add(entry.key)
                return logits, {**origin, "origin": COMPUTED_HERE}
            if entry.key not in self._checks:
                check = check_reference(loaded.spec, loaded.module, prepared, logits, self.policy.reference)
                if not check.passed:
                    raise refuse(entry, check)
                self._checks[entry.key] = check
        kind = IMPORTED if origin.get("imported_from") else CACHED
        return logits, {**origin, "origin": kind, "check": self._checks[entry.key]}

    def unverified_reference(self, spec: ModelSpec,
                             prepared: data_mod.PreparedDataset) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Where ``spec``'s weights are absent: a cached or imported reference of its published
        weights on ``prepared`` (harness.run.reference.reference_without_weights), which nothing here
        can check (``origin["check"]`` is None); None when there is none."""
        with self.clock.stage("reference"):
            found = reference_without_weights(self.cache, spec, prepared)
        if found is None:
            return None
        logits, entry = found
        origin = reference_origin(entry.manifest)
        return logits, {**origin, "origin": IMPORTED if origin.get("imported_from") else CACHED, "check": None}

    def evaluate(self, spec: ModelSpec, chip: ChipSpec, batch_size: int, source: str) -> Evaluation:
        """Compile, run on ``source`` and compare with the torch reference on the same images (int8:
        ``source`` without its calibration images)."""
        int8_run = chip.precision == INT8
        prepared = int8.scored_dataset(self, spec, source) if int8_run else self.dataset(spec, source)
        compiled = self.compile(spec, chip, batch_size, source)
        backend, loaded = compiled.backend, compiled.loaded
        with ExitStack() as stack:
            with self.clock.stage("session"):
                session = stack.enter_context(compiled.open(self.device_id()))
            logits = self.infer_dataset(session, prepared, batch_size, f"{spec.name} on {chip.name} bs{batch_size}")
        environment = backend.describe()
        ref_logits, origin = self.reference(loaded, prepared)
        listing = prepared.listing
        with self.clock.stage("scoring"):
            check_scorable(logits, prepared.labels)
            check_scorable(ref_logits, prepared.labels)
            ref_correct, correct = topk_correct(ref_logits, prepared.labels), topk_correct(logits, prepared.labels)
            scored, ref_scored = accuracy_of(correct), accuracy_of(ref_correct)  # one ranking per logits array
            agreement = parity(ref_logits, logits)
            covered = coverage(listing, self.cfg.limit if source == "imagenet" else None)
        return Evaluation(
            model=spec.name,
            chip=chip.name,
            backend=backend.name,
            backend_version=backend.version(),
            precision=compiled.precision,
            input_dtype=self.cfg.input_dtype,
            decode=prepared.decode,
            environment=environment,
            batch_size=batch_size,
            dataset=str(listing.image_dir),
            dataset_key=prepared.key,
            label_source=listing.label_source,
            weights=loaded.provenance,
            preprocess=prepared.spec,
            accuracy=scored,
            reference=ref_scored,
            agreement=agreement,
            skipped_unlabeled=listing.skipped_unlabeled,
            skipped_missing=listing.skipped_missing,
            reference_correct=ref_correct,
            compiled_correct=correct,
            coverage=covered,
            logits=logits,
            reference_logits=ref_logits,
            onnx_path=self.onnx(loaded, chip),
            prepared=prepared,
            reference_origin=origin,
            quantization=({**compiled.quantization, "logit_ties": int8.logit_ties(logits)}
                          if compiled.quantization else None),
        )
