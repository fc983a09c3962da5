"""A torch module given as itself, or as the function that builds it (harness.run.workbench.LoadedModel:
building costs seconds, and a cached ONNX export or torch reference does not need the module)."""

from __future__ import annotations

from typing import Any

ModuleOrBuild = Any  # a torch.nn.Module, or a function of no arguments returning one


def resolve(module: ModuleOrBuild) -> Any:
    """``module`` itself, or the module it builds when it is a function (a module has ``forward``)."""
    if hasattr(module, "forward"):
        return module
    if not callable(module):
        raise TypeError(f"expected a torch module or a function building one, got {type(module).__name__}")
    return module()
