"""One image to model-input pixels: decoding and the resize/crop recipes.

:func:`preprocess_image` decodes a file as torchvision's ImageFolder loader does (optionally
with libjpeg's draft downscaling, see :data:`DECODE_MODES`) and applies a
:class:`~harness.specs.PreprocessSpec` recipe, giving the ``(3, crop, crop)`` uint8 array a
model's input is normalized from. Bit-exact with torchvision's PIL pipeline in ``exact`` mode.

Light on purpose: no torch or torchvision here (pool workers import it in fresh processes).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness.data.errors import DataError
from harness.specs import RESIZE_METHODS, PreprocessSpec
from harness.specs.policy import DataPolicy

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


# PIL's filter supports (libImaging/Resample.c): a downscale by s reads 2 * ceil(support * s) + 1
# source pixels per output pixel. NEAREST takes another path; counted as bilinear, an upper bound.
_SUPPORT = {"nearest": 1.0, "bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_DEFAULT_BUDGET_MB = DataPolicy.decode_memory_mb


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a PIL image in ``mode``: 3-band images are stored as 4 (RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _resize_bytes(src: tuple[int, int], dst: tuple[int, int], interpolation: str) -> int:
    """What PIL's resize of an RGB ``src`` (w, h) to ``dst`` allocates, and numpy's copy of it.

    Resample.c runs a horizontal pass into a ``dst_w x src_h`` image, then the vertical pass into
    ``dst_w x dst_h`` (4 bytes a pixel each), with a table of double coefficients and two int
    bounds per output column and row; ``np.asarray`` goes through ``Image.tobytes``, which joins
    3-byte-a-pixel chunks into one bytes object (twice the result at the join). The long side is
    what a hostile aspect ratio inflates: a 60000x1 image resized to a short side of 256 is 15.36 M
    pixels wide, 15.7 GB for the vertical pass alone.
    """
    (sw, sh), (dw, dh) = src, dst
    support = _SUPPORT.get(interpolation, 3.0)
    kx = 2 * math.ceil(support * max(sw / max(dw, 1), 1.0)) + 1
    ky = 2 * math.ceil(support * max(sh / max(dh, 1), 1.0)) + 1
    return 4 * dw * sh + 4 * dw * dh + 8 * (dw * kx + dh * ky) + 8 * (dw + dh) + 6 * dw * dh


def decode_bytes(img: Image.Image, size: tuple[int, int], spec: PreprocessSpec) -> int:
    """An upper bound of what :func:`preprocess_image` allocates for ``img``, opened but not yet
    decoded (PIL reads only the header): ``img.size`` is what will be decoded (smaller than the
    file's ``size`` after a draft), in its mode; its RGB conversion; libjpeg's whole-image
    coefficient buffers of a progressive JPEG (2 bytes per coefficient of up to three full-size
    components, at the file's size, whatever the draft); every intermediate of the recipe's resize
    at the size it resizes to (:func:`_resize_bytes`); the crop's padding and transposed copy.
    Other formats than JPEG and PNG count their decode twice (decoders that decode into a buffer
    and copy it)."""
    w, h = size
    dw, dh = img.size
    pixels = _pixel_bytes(img.mode) * dw * dh
    total = pixels if img.format in ("JPEG", "PNG") else 2 * pixels
    if img.mode != "RGB":
        total += 4 * dw * dh
    if img.format == "JPEG" and (img.info.get("progressive") or img.info.get("progression")):
        total += 6 * w * h
    if spec.method == "resize_crop":
        total += _resize_bytes((dw, dh), _short_side_size(spec.resize, w, h), spec.interpolation)
    elif spec.method == "squash_crop":
        total += _resize_bytes((dw, dh), (spec.resize, spec.resize), spec.interpolation)
    else:  # crop_resize: the crop box (side x side, at most the short side), then its resize
        side = min(math.ceil(spec.crop / spec.resize * min(dw, dh)) + 1, max(dw, dh))
        total += 4 * side * side + _resize_bytes((side, side), (spec.crop, spec.crop), spec.interpolation)
    return total + 6 * spec.crop * spec.crop


def _check_budget(path: Path, img: Image.Image, size: tuple[int, int], spec: PreprocessSpec, budget_mb: int) -> None:
    needed = decode_bytes(img, size, spec)
    if needed > budget_mb * 2**20:
        w, h = size
        raise DataError(
            f"{path}: a {w}x{h} {img.format or ''} image ({_file_size(path)} on disk) would take "
            f"{needed / 2**20:,.0f} MB to decode and resize ({spec.method} {spec.resize}/{spec.crop}: the resize "
            f"alone makes it {'x'.join(map(str, _target_size(spec, w, h)))}), over the decoding budget of "
            f"{budget_mb} MB per image; expected an ImageNet-sized photo: remove that file or replace it with a "
            f"normal-sized copy (or raise [data] decode_memory_mb in fixtures/policy.toml)"
        )


def _target_size(spec: PreprocessSpec, w: int, h: int) -> tuple[int, int]:
    if spec.method == "resize_crop":
        return _short_side_size(spec.resize, w, h)
    if spec.method == "squash_crop":
        return (spec.resize, spec.resize)
    return (spec.crop, spec.crop)


@dataclass(frozen=True)
class _Decoded:
    """An image decoded to RGB; with draft decoding ``image`` may be 1/2, 1/4 or 1/8 of ``size``."""

    image: Image.Image
    size: tuple[int, int]  # the file's own (width, height)
    box: tuple[float, float, float, float]  # the file's full extent in ``image`` coordinates


def _load_rgb(path: Path, draft: Callable[[int, int], tuple[int, int]] | None = None,
              budget: tuple[PreprocessSpec, int] | None = None) -> _Decoded:
    """Decode ``path`` into an RGB PIL image, as torchvision's ImageFolder loader does.

    ``draft`` (draft decoding only) maps the file's (width, height) to the smallest size the
    decoded image may have; libjpeg then decodes at the largest DCT scale that stays at least
    that big (PIL ``Image.draft``; a no-op for other formats). ``budget`` (the recipe, MB): the
    image is refused before it is decoded when :func:`decode_bytes` exceeds it.
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
                if budget is not None:
                    _check_budget(path, img, size, *budget)
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


def preprocess_image(path: Path, spec: PreprocessSpec, decode: str = "exact",
                     decode_memory_mb: int = _DEFAULT_BUDGET_MB) -> np.ndarray:
    """Decode, resize and crop one image to a ``(3, crop, crop)`` uint8 array.

    With ``decode="exact"`` (default), bit-exact with torchvision's PIL pipeline
    (``Image.open(...).convert("RGB")`` then ``Resize`` + ``CenterCrop`` for ``resize_crop``;
    ``Resize((r, r))`` + ``CenterCrop`` for ``squash_crop``; ResNeSt's ``ECenterCrop`` for
    ``crop_resize``). ``decode="draft"`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale
    when it is at least twice the resize target, then resizes from the exact extent of the file
    (same geometry, different pixels: see :data:`DECODE_MODES`); smaller files come out
    bit-identical to ``exact``. Undecodable files, decompression bombs (PIL's
    ``MAX_IMAGE_PIXELS``) and images that would take more than ``decode_memory_mb`` to decode and
    resize (fixtures/policy.toml [data]; estimated from the header, before decoding) raise
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
    decoded = _load_rgb(Path(path), draft, (spec, decode_memory_mb))
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
