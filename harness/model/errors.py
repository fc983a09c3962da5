"""The weights' exceptions, importable without torch: the certification suite's modules name them at
collection, and collecting a suite that only reads measurements or predictions loads no torch
(tests/test_architecture.py)."""

from __future__ import annotations

from harness.errors import HarnessError, NotApplicable


class WeightsError(HarnessError, RuntimeError):
    """Weights are missing, corrupt, unsafe or do not fit: the message says what to do."""


class WeightsNotFound(WeightsError, NotApplicable):
    """The checkpoint is nowhere to be had (not installed, not in the weights dir, no download).

    Distinct from a wrong or corrupt checkpoint, which is always an error: tests that only make
    sense with real weights skip on this one, with ``short`` as the one-line reason."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short

    def reason(self) -> str:
        return (f"pretrained weights not available: {self.short}; accuracy needs them (--weights-dir DIR), "
                "throughput and conversion do not depend on weight values: pass --weights random")

    def __reduce__(self) -> tuple[type[WeightsNotFound], tuple[str, str]]:
        # Exceptions cross process boundaries by pickling; the default would call
        # WeightsNotFound(message) and fail for want of ``short``.
        return (type(self), (str(self), self.short))
