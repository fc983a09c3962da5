"""The torch reference's module made faster on a CPU, and the proof that it computes the same.

The reference logits are the eager fp32 module's (docs/reference-logits.md). On a CPU the same
computation runs several times faster when the weights and activations are channels-last
(oneDNN's native layout: no reorder around every convolution) and when the module is traced and
frozen (``torch.jit.trace`` + ``torch.jit.freeze``: BatchNorm folded into the convolution before
it, convolution + activation fused). Both stay fp32; folding and fusing change only the order of
the float operations, so the logits move by float rounding (~1e-6 of their scale on
efficientnet_lite0), never by a precision change (no bf16, no TF32, no fast-math).

The paths, fastest first (``[reference] fast_path``, fixtures/policy.toml):

- ``traced-channels-last``: channels-last weights, the input made channels-last inside the
  module, traced and frozen. ``torch.jit`` is deprecated since torch 2.10 (a FutureWarning,
  silenced here); where it is gone or a module cannot be traced the path is unavailable.
- ``channels-last``: channels-last weights and input, eager.
- ``eager``: the module as it is, the definition of the reference.

``torch.compile`` (inductor) is not a path: compiling efficientnet_lite0 took 68 s here on a
cold cache, longer than the eager reference of 1,300 images, to run about as fast as the traced
path (benchmarks/bench_reference.py --compile, docs/reference-logits.md).

:func:`reference_module` builds the asked path, runs a check batch through it and through the
eager module, and falls back to eager when the path cannot be built or when the check finds a
top-5 set that differs or a difference beyond the bound (``[reference] fast_rtol``). What ran,
and the check's figures, are a :class:`ReferencePath` that the reference's cache entry records.
The thread count is torch's own (``torch.get_num_threads()``: the cores, or an explicit
``OMP_NUM_THREADS`` / ``torch.set_num_threads``): it is recorded, never changed here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import HarnessError

TRACED = "traced-channels-last"
CHANNELS_LAST = "channels-last"
EAGER = "eager"
PATHS = (TRACED, CHANNELS_LAST, EAGER)  # fastest first


class FastPathUnavailable(HarnessError):
    """A fast path that cannot be built here (torch lacks it, or the module cannot be traced)."""


@dataclass(frozen=True)
class FastCheck:
    """A fast path's logits against the eager module's on the same check batch."""

    images: int
    max_abs_diff: float
    max_rel_diff: float  # largest |fast - eager| relative to each image's largest |eager logit|
    top5_identical: int  # images whose set of 5 highest classes is the same
    bound: float  # the largest max_rel_diff allowed ([reference] fast_rtol)

    @property
    def passed(self) -> bool:
        return self.top5_identical == self.images and self.max_rel_diff <= self.bound

    def describe(self) -> str:
        return (f"max rel diff {self.max_rel_diff:.3g} (bound {self.bound:g}), max abs diff {self.max_abs_diff:.3g}, "
                f"top-5 identical {self.top5_identical}/{self.images} vs eager")


@dataclass(frozen=True)
class ReferencePath:
    """How the reference logits were computed: the path asked for, the one that ran, torch's
    threads, the check against eager (None where eager itself was asked) and why eager ran
    instead of the asked path (None: it did not)."""

    asked: str
    ran: str
    threads: int
    check: FastCheck | None
    fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The cache entry's ``reference_path``."""
        check = self.check
        return {"asked": self.asked, "ran": self.ran, "threads": self.threads, "fallback": self.fallback,
                "check_images": check.images if check else None,
                "check_max_abs_diff": check.max_abs_diff if check else None,
                "check_max_rel_diff": check.max_rel_diff if check else None,
                "check_top5_identical": check.top5_identical if check else None,
                "bound": check.bound if check else None}


def describe_path(recorded: Mapping[str, Any] | None) -> str | None:
    """One line for a record from a cache entry's ``reference_path`` (None: an entry made before
    it was recorded, which ran eager): ``traced-channels-last, 2 threads (max rel diff 1.5e-06
    vs eager on 40 images, top-5 identical 40/40)``, or eager and why."""
    if not isinstance(recorded, Mapping):
        return None
    text = f"{recorded.get('ran')}, {recorded.get('threads')} thread(s)"
    if recorded.get("ran") != EAGER and recorded.get("check_images"):
        text += (f" (max rel diff {recorded.get('check_max_rel_diff'):.3g} vs eager on {recorded.get('check_images')} "
                 f"images, top-5 identical {recorded.get('check_top5_identical')}/{recorded.get('check_images')})")
    if recorded.get("fallback"):
        text += f"; {recorded.get('asked')} not used: {recorded.get('fallback')}"
    return text


def top5_sets(logits: np.ndarray) -> np.ndarray:
    """Each row's 5 highest classes, sorted (a set, whatever their order); ties broken by the lower
    class index, as harness.judge.metrics.topk_predictions does (argpartition picks among tied
    classes arbitrarily, which would make equal logits look like different top-5 sets)."""
    k = min(5, logits.shape[1])
    return np.sort(np.argsort(-logits, axis=1, kind="stable")[:, :k], axis=1)


def compare(eager: np.ndarray, fast: np.ndarray, bound: float) -> FastCheck:
    """``fast`` logits against ``eager`` logits of the same images (rows)."""
    if eager.shape != fast.shape or eager.ndim != 2:
        raise FastPathUnavailable(f"the fast path returned logits of shape {fast.shape}, eager {eager.shape}")
    diff = np.abs(eager.astype(np.float64) - fast.astype(np.float64))
    scale = np.abs(eager.astype(np.float64)).max(axis=1)
    row = diff.max(axis=1)
    rel = np.where(scale > 0, row / np.where(scale > 0, scale, 1.0), np.where(row == 0, 0.0, np.inf))
    if not np.isfinite(fast).all():
        rel = np.full_like(rel, np.inf)
    same = int((top5_sets(eager) == top5_sets(fast)).all(axis=1).sum())
    return FastCheck(images=int(eager.shape[0]), max_abs_diff=float(diff.max(initial=0.0)),
                     max_rel_diff=float(rel.max(initial=0.0)), top5_identical=same, bound=bound)


def build(module: Any, path: str, example: np.ndarray) -> Any:
    """``module`` (eval mode, left untouched) as ``path`` runs it: a callable taking an NCHW
    float32 tensor. FastPathUnavailable when this torch or this module cannot."""
    import torch

    if path == EAGER:
        return module
    if path not in PATHS:
        raise FastPathUnavailable(f"unknown reference path {path!r}: expected one of {', '.join(PATHS)}")
    wrapped = _channels_last(torch, copy.deepcopy(module).eval())
    if path == CHANNELS_LAST:
        return wrapped
    if not hasattr(torch.jit, "trace") or not hasattr(torch.jit, "freeze"):
        raise FastPathUnavailable(f"torch {torch.__version__} has no torch.jit.trace/freeze")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation, see the module doc
            # check_trace=False: torch's own check reruns the module (4 s of 5 here); the check batch
            # against eager (reference_module) is the stronger one.
            traced = torch.jit.trace(wrapped, torch.from_numpy(np.ascontiguousarray(example)), check_trace=False)
            return torch.jit.freeze(traced)
    except Exception as exc:  # noqa: BLE001 - whatever tracing a foreign module raises makes the path unavailable
        raise FastPathUnavailable(f"torch.jit.trace/freeze failed: {type(exc).__name__}: {exc}") from exc


def _channels_last(torch: Any, module: Any) -> Any:
    """``module`` with channels-last weights, converting its input to channels-last first."""

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner.to(memory_format=torch.channels_last)

        def forward(self, x: Any) -> Any:
            return self.inner(x.contiguous(memory_format=torch.channels_last))

    return ChannelsLast(module).eval()


def logits_of(module: Any, images: np.ndarray, batch: int) -> np.ndarray:
    """``module``'s logits on normalized NCHW ``images``, ``batch`` at a time."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            y = module(torch.from_numpy(np.ascontiguousarray(images[start:start + batch])))
            if not isinstance(y, torch.Tensor):
                raise FastPathUnavailable(f"the module returned a {type(y).__name__}, expected one logits tensor")
            out.append(y.numpy())
    return np.concatenate(out, axis=0)


def reference_module(module: Any, path: str, check_batch: np.ndarray, batch: int,
                     bound: float) -> tuple[Any, ReferencePath]:
    """The module to compute the reference with, and how it was chosen: ``path`` where it can be
    built and its logits on ``check_batch`` (normalized NCHW images, run ``batch`` at a time, so
    a last partial batch is checked too) have every top-5 set of the eager module's and differ
    by at most ``bound`` (relative); else ``module`` itself (eager), saying why."""
    import torch

    threads = int(torch.get_num_threads())
    if path == EAGER:
        return module, ReferencePath(asked=path, ran=EAGER, threads=threads, check=None)
    try:
        fast = build(module, path, check_batch[:2])  # tracing runs it once: 2 images are enough to trace
        got = logits_of(fast, check_batch, batch)
    except FastPathUnavailable as exc:
        return module, ReferencePath(asked=path, ran=EAGER, threads=threads, check=None, fallback=str(exc))
    check = compare(logits_of(module, check_batch, batch), got, bound)
    if not check.passed:
        return module, ReferencePath(asked=path, ran=EAGER, threads=threads, check=check,
                                     fallback=f"it disagrees with eager beyond the bound: {check.describe()}")
    return fast, ReferencePath(asked=path, ran=path, threads=threads, check=check)
