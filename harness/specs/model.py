"""What the registry says about one model (``fixtures/models.toml``): architecture, weights,
preprocessing, published accuracy and batch sizes, as frozen data classes.

Reading and validating the file is ``harness.specs.load``'s job; these classes only hold the
result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.specs.policy import AccuracyTolerance
from harness.specs.reader import SpecError

RESIZE_METHODS = ("resize_crop", "squash_crop", "crop_resize")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
ARCH_SOURCES = ("torchvision", "timm")
# Library names (harness.specs.library): "tv:resnet50.IMAGENET1K_V2", "timm:resnest50d.in1k".
LIBRARY_PREFIXES = {"tv": "torchvision", "timm": "timm"}
KEY_MAPPINGS = ("none", "by_position")


@dataclass(frozen=True)
class PreprocessSpec:
    """How one JPEG becomes one model input.

    ``method``:
      - ``resize_crop``: resize the shorter side to ``resize`` (torchvision ``Resize(int)``),
        then center-crop ``crop`` (the torchvision / timm evaluation recipe).
      - ``squash_crop``: resize to ``resize x resize`` ignoring aspect ratio, then center-crop
        (what several ModelZoo preprocessing scripts do).
      - ``crop_resize``: center-crop ``crop / resize`` of the shorter side, then resize to
        ``crop x crop`` (ResNeSt's upstream ``ECenterCrop``).
    """

    resize: int
    crop: int
    interpolation: str = "bilinear"
    method: str = "resize_crop"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def cache_fields(self) -> dict[str, Any]:
        """The fields that decide the uint8 pixels (mean/std are applied per batch, later)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "method": self.method,
        }

    def describe(self) -> str:
        return (
            f"{self.method} resize={self.resize} crop={self.crop} {self.interpolation} "
            f"mean={list(self.mean)} std={list(self.std)}"
        )


@dataclass(frozen=True)
class ArchSpec:
    """Where the torch architecture comes from."""

    source: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Keyword arguments used only when building seeded random weights for conversion tests
    # (e.g. timm's ``zero_init_last=False``, so parity tests cannot pass trivially).
    random_init_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsSpec:
    """A checkpoint: where it comes from and how to know it is the right one."""

    filename: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    package: str | None = None
    package_path: str | None = None
    key_mapping: str = "none"
    state_dict_key: str | None = None
    # A timm checkpoint on the Hugging Face hub ("timm/resnest50d.in1k"): never downloaded, looked
    # up in the weights dir as ``filename`` or in a hub-cache layout (harness.model.checkpoint).
    hub_id: str | None = None

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256 or self.sha256_prefix)


@dataclass(frozen=True)
class AccuracyRef:
    """A published accuracy with its source. ``top5`` is None where the source gives none."""

    top1: float
    top5: float | None
    source: str


@dataclass(frozen=True)
class LibraryRef:
    """Where a library entry (``tv:...``, ``timm:...``; harness.specs.library) was read from.

    ``recipe_note`` is empty when the preprocessing recipe is the library's default one, else it
    says how the recipe of the published figure differs from it (timm: a results row measured at
    another test size, crop or interpolation than the ``pretrained_cfg``).
    """

    library: str  # "torchvision" or "timm"
    version: str  # the installed library version the entry was read from
    weights: str  # "ResNet50_Weights.IMAGENET1K_V2" or "resnest50d.in1k"
    default: bool  # the builder's DEFAULT weights (tv), timm's default tag of the architecture
    num_params: int | None = None
    test_size: int | None = None  # timm: the results row's img_size
    recipe_note: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One [models.<name>] entry of fixtures/models.toml, validated, or one library entry (``library``)."""

    name: str
    title: str
    seed: str
    arch: ArchSpec
    weights: WeightsSpec
    input_name: str
    output_name: str
    num_classes: int
    preprocess: PreprocessSpec
    preprocess_variants: Mapping[str, PreprocessSpec]
    published: AccuracyRef
    batch_sizes: tuple[int, ...]
    fixed_input_size: bool = False
    notes: str = ""
    # models.toml ``accuracy_tolerance``: this model's own rule; None = the policy's [accuracy] one.
    accuracy_tolerance: AccuracyTolerance | None = None
    # models.toml ``same_as``: the library twin of a curated entry ("tv:resnext50_32x4d.IMAGENET1K_V1").
    same_as: str | None = None
    # Set on library entries only (harness.specs.library); None for fixtures/models.toml entries.
    library: LibraryRef | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.preprocess.crop, self.preprocess.crop)

    def preprocess_for(self, variant: str | None) -> PreprocessSpec:
        """The default recipe, or a named variant (e.g. ``modelzoo``)."""
        if variant in (None, "", "default", "upstream"):
            return self.preprocess
        try:
            return self.preprocess_variants[variant]
        except KeyError:
            known = ", ".join(["default", *sorted(self.preprocess_variants)])
            raise SpecError(
                f"model {self.name!r} has no preprocessing variant {variant!r}; "
                f"available: {known} (see fixtures/models.toml)"
            ) from None
