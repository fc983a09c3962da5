"""One image to model-input pixels: decoding and the resize/crop recipes.

:func:`preprocess_image` decodes a file as torchvision's ImageFolder loader does (optionally
with libjpeg's draft downscaling, see :data:`DECODE_MODES`) and applies a
:class:`~harness.specs.PreprocessSpec` recipe, giving the ``(3, crop, crop)`` uint8 array a
model's input is normalized from. Bit-exact with torchvision's PIL pipeline in ``exact`` mode.

Light on purpose: no torch or torchvision here (pool workers import it in fresh processes).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from harness.data.errors import DataError
from harness.specs import RESIZE_METHODS, PreprocessSpec

# How JPEGs are decoded. "exact" (default): the full decode torchvision does, bit for bit.
# "draft": libjpeg's DCT-domain downscaling by 1/2, 1/4 or 1/8 (PIL ``Image.draft``) wherever the
# file is at least twice the resize target; about twice as fast on such photos, but different
# pixels, so opt-in only (README "Harness speed" has its measured speed and accuracy effect).
DECODE_MODES = ("exact", "draft")

_RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# Single-channel modes deeper than 8 bits. PIL's convert("RGB") clips them to 0..255 (a 16-bit
# photo comes out almost white) where it would have to scale: refused rather than misread.
# 16-bit RGB PNGs are not here: PIL opens them as 8-bit RGB, correctly scaled.
_CLIPPED_MODES = {
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale",
    "I": "32-bit integer grayscale",
    "F": "32-bit float grayscale",
}


@dataclass(frozen=True)
class _Decoded:
    """An image decoded to RGB; with draft decoding ``image`` may be 1/2, 1/4 or 1/8 of ``size``."""

    image: Image.Image
    size: tuple[int, int]  # the file's own (width, height)
    box: tuple[float, float, float, float]  # the file's full extent in ``image`` coordinates


def _load_rgb(path: Path, draft: Callable[[int, int], tuple[int, int]] | None = None) -> _Decoded:
    """Decode ``path`` into an RGB PIL image, as torchvision's ImageFolder loader does.

    ``draft`` (draft decoding only) maps the file's (width, height) to the smallest size the
    decoded image may have; libjpeg then decodes at the largest DCT scale that stays at least
    that big (PIL ``Image.draft``; a no-op for other formats).
    """
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; a bomb must fail loudly here,
        # not exhaust a worker's memory, so the warning is escalated for this call only.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.mode in _CLIPPED_MODES:
                    raise DataError(
                        f"{path}: a {_CLIPPED_MODES[img.mode]} image (PIL mode {img.mode}); PIL's "
                        f"RGB conversion clips such pixels to 0..255 instead of scaling them, so "
                        f"the model would see a mostly white image; expected an 8-bit JPEG/PNG: "
                        f"convert it to 8 bits (e.g. 'convert IN -depth 8 OUT') or remove it"
                    )
                size = img.size
                box: tuple[float, float, float, float] = (0, 0, *size)
                if draft is not None:
                    drafted = img.draft("RGB", draft(*size))
                    if drafted is not None:
                        box = drafted[1]
                # load() forces the full decode, so truncation errors surface here, inside the
                # try, and not later in resize. An RGB image is used as decoded: convert("RGB")
                # would only copy it (3-4% of the time per image, measured).
                img.load()
                return _Decoded(img if img.mode == "RGB" else img.convert("RGB"), size, box)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"image {path} not found; it was listed earlier: did the dataset change during the "
            f"run? rerun to list it again"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refusing a possible decompression bomb ({_file_size(path)} on disk): {exc}; "
            f"expected an ImageNet-sized photo (at most {Image.MAX_IMAGE_PIXELS} pixels): "
            f"remove that file or replace it with a normal-sized copy"
        ) from exc
    except Exception as exc:
        # Any failure inside PIL while decoding this file is a fact about this file.
        raise DataError(
            f"{path}: cannot decode image ({_file_size(path)}): {type(exc).__name__}: {exc}; "
            f"expected a readable JPEG/PNG: re-extract or remove that file"
        ) from exc


def _file_size(path: Path) -> str:
    try:
        return f"{os.stat(path).st_size} bytes"
    except OSError as exc:
        return f"size unknown: {exc.strerror}"


def _center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    """torchvision ``CenterCrop`` on an (H, W, C) array: zero padding, then rounded offsets."""
    h, w = arr.shape[:2]
    if crop > w or crop > h:
        pad_w = max(crop - w, 0)
        pad_h = max(crop - h, 0)
        arr = np.pad(arr, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    # Python's round (half to even) on purpose: it is what torchvision uses.
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return arr[top : top + crop, left : left + crop]


def _short_side_size(target: int, w: int, h: int) -> tuple[int, int]:
    """torchvision ``Resize(int)``: shorter side -> ``target``, longer side truncated, not rounded."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = target, int(target * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _draft_request(spec: PreprocessSpec, w: int, h: int) -> tuple[int, int]:
    """The smallest decoded size of a (w, h) file that loses nothing the resize keeps.

    ``squash_crop`` resizes to ``resize x resize``; ``resize_crop`` to a shorter side of
    ``resize``; ``crop_resize``'s box is ``crop / resize`` of the shorter side, so it too keeps
    at least ``crop`` pixels when the shorter side is ``resize``.
    """
    if spec.method == "squash_crop":
        return (spec.resize, spec.resize)
    return _short_side_size(spec.resize, w, h)


def preprocess_image(path: Path, spec: PreprocessSpec, decode: str = "exact") -> np.ndarray:
    """Decode, resize and crop one image to a ``(3, crop, crop)`` uint8 array.

    With ``decode="exact"`` (default), bit-exact with torchvision's PIL pipeline
    (``Image.open(...).convert("RGB")`` then ``Resize`` + ``CenterCrop`` for ``resize_crop``;
    ``Resize((r, r))`` + ``CenterCrop`` for ``squash_crop``; ResNeSt's ``ECenterCrop`` for
    ``crop_resize``). ``decode="draft"`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale
    when it is at least twice the resize target, then resizes from the exact extent of the file
    (same geometry, different pixels: see :data:`DECODE_MODES`); smaller files come out
    bit-identical to ``exact``. Undecodable files and decompression bombs raise
    :class:`DataError` naming the file.
    """
    if spec.method not in RESIZE_METHODS:
        raise DataError(f"unknown preprocessing method {spec.method!r}; expected one of {', '.join(RESIZE_METHODS)}")
    if decode not in DECODE_MODES:
        raise DataError(f"unknown decode mode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    try:
        resample = _RESAMPLING[spec.interpolation]
    except KeyError:
        raise DataError(
            f"unknown interpolation {spec.interpolation!r}; expected one of {', '.join(_RESAMPLING)}"
        ) from None
    draft = (lambda fw, fh: _draft_request(spec, fw, fh)) if decode == "draft" else None
    decoded = _load_rgb(Path(path), draft)
    img = decoded.image
    w, h = decoded.size
    # A drafted image is smaller than the file: resizing from the file's box keeps the geometry.
    drafted = img.size != (w, h)
    if spec.method == "resize_crop":
        size = _short_side_size(spec.resize, w, h)
        if drafted:
            img = img.resize(size, resample, box=decoded.box)
        elif size != (w, h):
            img = img.resize(size, resample)
        out = _center_crop(np.asarray(img), spec.crop)
    elif spec.method == "squash_crop":
        if drafted:
            img = img.resize((spec.resize, spec.resize), resample, box=decoded.box)
        elif (w, h) != (spec.resize, spec.resize):
            img = img.resize((spec.resize, spec.resize), resample)
        out = _center_crop(np.asarray(img), spec.crop)
    else:
        # ResNeSt's ECenterCrop: a float crop box, which PIL's crop() rounds itself.
        side = spec.crop / spec.resize * min(w, h)
        top = int(round((h - side) / 2.0))
        left = int(round((w - side) / 2.0))
        if drafted:
            fx, fy = decoded.box[2] / w, decoded.box[3] / h
            box = (left * fx, top * fy, (left + side) * fx, (top + side) * fy)
            img = img.resize((spec.crop, spec.crop), resample, box=box)
        else:
            img = img.crop((left, top, left + side, top + side))
            if img.size != (spec.crop, spec.crop):
                img = img.resize((spec.crop, spec.crop), resample)
        out = np.asarray(img)
    return np.ascontiguousarray(out.transpose(2, 0, 1))
