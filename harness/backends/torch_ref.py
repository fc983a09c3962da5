"""The framework reference: the torch module itself (the seeds' "online inference").

It is not a compiler, so it has no ``compile``; it runs the module the ONNX was exported from and
is what every compiled backend is compared with, image by image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.backends.base import InferenceError, Session


class TorchSession(Session):
    """Runs an eval-mode torch module on CPU; same contract as a compiled Session."""

    name: ClassVar[str] = "torch"
    where = "torch"

    def __init__(self, module: Any, batch_size: int, input_shape: tuple[int, int, int], num_classes: int):
        import torch

        self._torch = torch
        self._module = module.eval()
        self.batch_size = batch_size
        self.input_shape = input_shape
        self.num_classes = num_classes

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._module(self._torch.from_numpy(np.ascontiguousarray(batch)))
        if not isinstance(out, self._torch.Tensor):
            raise InferenceError(
                f"torch: the module returned a {type(out).__name__}, expected one logits tensor of shape "
                f"({batch.shape[0]}, {self.num_classes}); is it in eval mode, or does it return auxiliary heads?"
            )
        return out.numpy()


def torch_version() -> str:
    import torch

    return str(torch.__version__)
