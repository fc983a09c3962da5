"""A child process for the reliability tests: one real harness operation in a process of its own,
so that a test can kill it with SIGKILL at a known point, or race several of them on one cache.

    python tests/reliability/_child.py COMMAND '{"json": "arguments"}'

prints one JSON line saying what it did. With ``RELIABILITY_STALL=<point>`` and
``RELIABILITY_FLAG=<file>`` in its environment, the run writes ``<file>`` when it reaches
``<point>`` and then sleeps until it is killed:

    preprocess  after the 2nd image a process decoded, in the first process (pool worker or
                main) to get there; the others carry on, as they would in real life
    export      after torch.onnx.export wrote the raw graph into the unpublished entry
    compile     after ONNX Runtime wrote the optimized model into the unpublished entry
    infer       after the first batch of ONNX Runtime inference (not cached: nothing to publish)
    reference   after the first batch of the cached torch reference inference

The tests also import this module for :func:`run_pipeline`; the hooks stay off unless the
environment asks for them.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness import data
from harness.cache import ArtifactCache, Entry
from harness.data import prepared as prepared_mod
from harness.specs import PreprocessSpec

STALL = os.environ.get("RELIABILITY_STALL", "")
FLAG = os.environ.get("RELIABILITY_FLAG", "")
STALL_AFTER_IMAGES = 2

# The tiny pipeline: real JPEGs, a 32x32 crop, a conv + linear model with 10 classes.
PIPELINE_PREPROCESS = PreprocessSpec(resize=36, crop=32)
PIPELINE_CLASSES = 10
PIPELINE_BATCH = 4
# What each stall point leaves unpublished (None: the stage is not cached).
STAGE_KIND = {
    "preprocess": "dataset",
    "export": "onnx",
    "compile": "compiled-onnxruntime",
    "infer": None,
    "reference": "reference-logits",
}


def stall_here() -> None:
    """Tell the test this point was reached (the flag appears whole: its content is the pid of a
    stalled process), then wait for its SIGKILL."""
    partial = Path(f"{FLAG}.{os.getpid()}.partial")
    partial.write_text(str(os.getpid()))
    os.replace(partial, FLAG)
    while True:
        time.sleep(3600)


def sha256(data_bytes: bytes) -> str:
    return hashlib.sha256(data_bytes).hexdigest()


def file_sha(path: Path) -> str:
    return sha256(path.read_bytes())


def _claim_stall() -> bool:
    """True in the one process that stalls. Stalling every pool worker would also be unrealistic
    in a way that hangs CPython 3.11's ProcessPoolExecutor: it notices a dead worker only when
    another event wakes its manager thread, and stalled workers send none."""
    try:
        os.close(os.open(f"{FLAG}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


if STALL == "preprocess":
    # Installed at import, so that it is also active in pool workers: the forkserver imports this
    # main module before forking them.
    _preprocess = prepared_mod.preprocess_image
    _decoded = 0

    def _stalling_preprocess(path: Path, spec: PreprocessSpec, *args: Any, **kwargs: Any) -> np.ndarray:
        global _decoded
        out = _preprocess(path, spec, *args, **kwargs)
        _decoded += 1
        if _decoded == STALL_AFTER_IMAGES and _claim_stall():
            stall_here()
        return out

    prepared_mod.preprocess_image = _stalling_preprocess  # type: ignore[assignment]


class RecordingCache(ArtifactCache):
    """An ArtifactCache that remembers, per kind, whether its last entry was built or reused."""

    def __init__(self, root: Path, hold: Callable[[], None] | None = None):
        super().__init__(root)
        self.built: dict[str, bool] = {}
        self.hold = hold  # called at the start of every build

    def get_or_build(
        self,
        kind: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        lock_timeout: float = -1,
    ) -> Entry:
        hold = self.hold
        if hold is not None:
            inner = build

            def build(tmp: Path) -> Mapping[str, Any] | None:
                hold()
                return inner(tmp)

        entry = super().get_or_build(kind, inputs, build, lock_timeout)
        self.built[kind] = entry.built_here
        return entry


def _install_torch_side_hooks() -> None:
    """Stall hooks for the stages after preprocessing (main process only: they import torch)."""
    if STALL == "export":
        from harness.model import export

        def stalling_simplify(model: Any, spec: Any) -> Any:
            stall_here()

        export._simplify = stalling_simplify  # type: ignore[assignment]
    elif STALL == "compile":
        from harness.backends.onnxruntime import OnnxRuntimeBackend

        compile_ = OnnxRuntimeBackend.compile

        def stalling_compile(self: Any, onnx_path: Path, target: Any, out_dir: Path) -> Path:
            compile_(self, onnx_path, target, out_dir)
            stall_here()
            raise AssertionError("unreachable")

        OnnxRuntimeBackend.compile = stalling_compile  # type: ignore[method-assign]
    elif STALL == "reference":
        from harness.backends.torch_ref import TorchSession

        infer = TorchSession.infer

        def stalling_infer(self: Any, batch: np.ndarray) -> np.ndarray:
            infer(self, batch)
            stall_here()
            raise AssertionError("unreachable")

        TorchSession.infer = stalling_infer  # type: ignore[method-assign]


class _StallAfterFirstBatch:
    def __init__(self, session: Any):
        self._session = session
        self.batch_size = session.batch_size
        self.input_dtype = session.input_dtype

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._session.infer(batch)
        stall_here()
        raise AssertionError("unreachable")


def tiny_module() -> Any:
    """A deterministic 3x3 conv + linear classifier (seeded: the same weights in every process)."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.fc = nn.Linear(8, PIPELINE_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return Tiny().eval()


def run_pipeline(root: Path, image_dir: Path, workers: int) -> dict[str, Any]:
    """The certification data flow on a tiny model, every step through the shared cache.

    Returns which cached kinds were built here (vs reused) and the SHA-256 of every product:
    the uint8 dataset, the ONNX file, the compiled artifact, ONNX Runtime's and torch's logits.
    """
    import dataclasses

    from harness.model.weights import WeightsInfo
    from harness.run.workbench import LoadedModel, RunConfig, Workbench
    from harness.specs import ChipSpec, load_models, load_policy

    _install_torch_side_hooks()
    cache = RecordingCache(root)
    wb = Workbench(RunConfig(imagenet=image_dir, cache_dir=root, workers=workers, threads=1), load_policy())
    wb.cache = cache
    spec = dataclasses.replace(
        load_models()["efficientnet_lite0"], name="tiny", num_classes=PIPELINE_CLASSES,
        preprocess=PIPELINE_PREPROCESS, preprocess_variants={},
    )
    prepared = wb.dataset(spec, "imagenet")
    loaded = LoadedModel(spec=spec, weights=WeightsInfo(kind="random", source="reliability tests", sha256=None, seed=0),
                         build=tiny_module)
    onnx_path = wb.onnx(loaded)
    chip = ChipSpec(name="cpu", backend="onnxruntime")
    backend = wb.backend(chip)
    target = wb.target(spec, chip, PIPELINE_BATCH)
    artifact = wb.compiled(backend, onnx_path, target)
    with backend.open(artifact, target, device_id=0, num_classes=spec.num_classes) as session:
        runner = _StallAfterFirstBatch(session) if STALL == "infer" else session
        logits = wb.infer_dataset(runner, prepared, PIPELINE_BATCH, "tiny on cpu")  # type: ignore[arg-type]
    reference = wb.reference(loaded, prepared)[0]
    return {
        "built": dict(cache.built),
        "sha256": {
            "dataset": file_sha(prepared.path / "images.u8"),
            "onnx": file_sha(onnx_path),
            "compiled": file_sha(artifact),
            "logits": sha256(np.ascontiguousarray(logits).tobytes()),
            "reference_logits": sha256(np.ascontiguousarray(reference).tobytes()),
        },
    }


def _wait_for(go: str) -> None:
    """Say this process is ready (``<go>.<pid>.ready``), then wait for the start flag ``go``."""
    Path(f"{go}.{os.getpid()}.ready").touch()
    deadline = time.monotonic() + 60
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"start flag {go} never appeared")
        time.sleep(0.002)


def _entered(go: str) -> float:
    """Say this racer is about to enter the cache (``<go>.<pid>.entered``); the time it did."""
    entered = time.time()
    Path(f"{go}.{os.getpid()}.entered").touch()
    return entered


def _until_all_entered(go: str, racers: int) -> None:
    """Hold a build until all ``racers`` are inside: a loaded machine may start them seconds apart,
    and a race the first one finished alone would be no race."""
    flag = Path(go)
    deadline = time.monotonic() + 120
    while len(list(flag.parent.glob(f"{flag.name}.*.entered"))) < racers:
        if time.monotonic() > deadline:
            raise SystemExit(f"not all {racers} racers entered within 120 s")
        time.sleep(0.002)


def _flag_lock_waits(flag: Path) -> None:
    """Write ``flag`` (this pid) when this process first finds a cache build lock held by another
    and starts waiting for it: the event a test waits for instead of sleeping and hoping."""
    import filelock

    from harness import cache as cache_module

    base = cache_module.FileLock

    class ObservedLock(base):  # type: ignore[misc, valid-type]
        def acquire(self, timeout: float | None = None, poll_interval: float | None = None, **kw: Any) -> Any:
            if not self.is_locked:
                try:
                    return super().acquire(blocking=False)
                except filelock.Timeout:
                    Path(f"{flag}.tmp").write_text(str(os.getpid()))
                    os.replace(f"{flag}.tmp", flag)
            return super().acquire(timeout, poll_interval, **kw)

    cache_module.FileLock = ObservedLock  # type: ignore[misc]


def build(args: Mapping[str, Any]) -> dict[str, Any]:
    """Race get_or_build: the build logs itself to a counter, writes half a payload, holds, finishes."""
    counter = Path(args["counter"])

    def build_entry(tmp: Path) -> dict[str, Any]:
        if args.get("racers"):
            _until_all_entered(args["go"], int(args["racers"]))
        with counter.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        payload = os.urandom(1 << 16)
        (tmp / "payload.bin").write_bytes(payload[: len(payload) // 2])
        time.sleep(float(args["hold"]))
        with (tmp / "payload.bin").open("ab") as fh:
            fh.write(payload[len(payload) // 2 :])
        return {"builder": os.getpid(), "payload_sha256": sha256(payload), "finished": time.time()}

    _wait_for(args["go"])
    if args.get("waiting"):
        _flag_lock_waits(Path(args["waiting"]))
    entered = _entered(args["go"])
    entry = ArtifactCache(Path(args["root"])).get_or_build(args["kind"], args["inputs"], build_entry, lock_timeout=60)
    return {
        "built_here": entry.built_here,
        "path": str(entry.path),
        "sha256": file_sha(entry.path / "payload.bin"),
        "builder": entry.manifest["builder"],
        "entered": entered,
        "finished": entry.manifest["finished"],
    }


def watch(args: Mapping[str, Any]) -> dict[str, Any]:
    """Poll lookup() until told to stop; check every entry it returns is complete."""
    cache = ArtifactCache(Path(args["root"]))
    polls = incomplete = complete = 0
    stop = Path(args["stop"])
    while not stop.exists():
        polls += 1
        entry = cache.lookup(args["kind"], args["inputs"])
        if entry is not None:
            payload = entry.path / "payload.bin"
            whole = all((entry.path / f).is_file() for f in entry.manifest["files"]) and (
                payload.is_file() and file_sha(payload) == entry.manifest["payload_sha256"]
            )
            complete += whole
            incomplete += not whole
        time.sleep(0.001)
    return {"polls": polls, "incomplete": incomplete, "complete": complete}


def prepare(args: Mapping[str, Any]) -> dict[str, Any]:
    """prepare_dataset on a real-image directory, optionally after a start flag."""
    if args.get("go"):
        _wait_for(args["go"])
    racers, go = int(args.get("racers", 0)), str(args.get("go", ""))
    cache = RecordingCache(Path(args["root"]), hold=(lambda: _until_all_entered(go, racers)) if racers else None)
    listing = data.list_dataset(Path(args["image_dir"]))
    entered = _entered(go) if go else time.time()
    prepared = data.prepare_dataset(
        listing, PreprocessSpec(resize=int(args["resize"]), crop=int(args["crop"])), cache, workers=int(args["workers"])
    )
    left = time.time()
    return {
        "built_here": cache.built["dataset"],
        "key": prepared.key,
        "sha256": sha256(np.ascontiguousarray(prepared.images).tobytes()),
        "entered": entered,
        "left": left,
    }


def pipeline(args: Mapping[str, Any]) -> dict[str, Any]:
    return run_pipeline(Path(args["root"]), Path(args["image_dir"]), int(args["workers"]))


COMMANDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "build": build,
    "watch": watch,
    "prepare": prepare,
    "pipeline": pipeline,
}

if __name__ == "__main__":
    # A test that finds this process hung can ask for every thread's stack (on stderr).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    result = COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)
