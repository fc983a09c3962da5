"""Build the torch architecture a ModelSpec names, from torchvision or timm, without weights.

Nothing here downloads: torchvision gets ``weights=None`` and timm ``pretrained=False``, so the
module comes back with the library's own initialisation and the caller loads a checksum-verified
checkpoint (``harness.model.weights``) or keeps the seeded random init for conversion checks.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from harness.errors import UsageError
from harness.specs import ModelSpec


class ArchitectureError(UsageError, ValueError):
    """The registry names an architecture (or keyword) its source library does not have."""


def _known_names(source: str) -> list[str]:
    if source == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models())
    import timm

    return sorted(timm.list_models())


def _unknown(spec: ModelSpec) -> ArchitectureError:
    known = _known_names(spec.arch.source)
    close = difflib.get_close_matches(spec.arch.name, known, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else f"{len(known)} names are available"
    lister = (
        "torchvision.models.list_models()" if spec.arch.source == "torchvision" else "timm.list_models()"
    )
    return ArchitectureError(
        f"model {spec.name!r}: {spec.arch.source} has no architecture {spec.arch.name!r} "
        f"({hint}; list them with {lister}); fix arch.name of [models.{spec.name}] in "
        f"fixtures/models.toml, or install a {spec.arch.source} version that has it"
    )


def _construct(spec: ModelSpec, kwargs: dict[str, Any]) -> Any:
    if spec.arch.source == "torchvision":
        import torchvision

        if spec.arch.name not in torchvision.models.list_models():
            raise _unknown(spec)
        return torchvision.models.get_model(
            spec.arch.name, weights=None, **{"num_classes": spec.num_classes, **kwargs}
        )
    import timm

    if not timm.is_model(spec.arch.name):
        raise _unknown(spec)
    return timm.create_model(spec.arch.name, pretrained=False, num_classes=spec.num_classes, **kwargs)


def build_module(spec: ModelSpec, random_init: bool = False) -> nn.Module:
    """The architecture of ``spec`` with the library's initial weights, in eval mode.

    ``random_init=True`` adds ``spec.arch.random_init_kwargs`` (e.g. timm's
    ``zero_init_last=False``) so that seeded random weights exercise every branch; for a library
    entry (``spec.library``) a keyword the constructor does not take is left out. The caller
    seeds torch's RNG; this function never downloads anything.
    """
    kwargs: dict[str, Any] = dict(spec.arch.kwargs)
    if random_init:
        kwargs.update(spec.arch.random_init_kwargs)
    if spec.arch.source not in ("torchvision", "timm"):
        raise ArchitectureError(
            f"model {spec.name!r}: unknown architecture source {spec.arch.source!r}; "
            "expected torchvision or timm (arch.source in fixtures/models.toml)"
        )
    try:
        try:
            module = _construct(spec, kwargs)
        except TypeError as exc:
            # A library entry (harness.specs.library) asks for timm's zero_init_last=False on every
            # architecture; those whose constructor has no such keyword have nothing to undo.
            optional = [k for k in spec.arch.random_init_kwargs if f"'{k}'" in str(exc)] if (
                random_init and spec.library is not None) else []
            if not optional:
                raise
            kwargs = {k: v for k, v in kwargs.items() if k not in optional}
            module = _construct(spec, kwargs)
    except TypeError as exc:
        # A keyword the constructor does not take (e.g. zero_init_last on timm's SENet) surfaces
        # as a TypeError deep inside the library; name the registry fields that supplied it.
        fields = "arch.kwargs" + (" / arch.random_init_kwargs" if random_init else "")
        raise ArchitectureError(
            f"model {spec.name!r}: {spec.arch.source} {spec.arch.name} rejected keyword arguments "
            f"{sorted(kwargs)}: {exc}; fix {fields} of [models.{spec.name}] in fixtures/models.toml"
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise ArchitectureError(
            f"model {spec.name!r}: {spec.arch.source}:{spec.arch.name} built a "
            f"{type(module).__name__}, not a torch.nn.Module"
        )
    return module.eval()
