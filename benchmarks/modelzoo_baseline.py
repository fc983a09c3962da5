"""The ModelZoo-style preprocessing the suite replaces, as the seeds' scripts do it.

``preprocess_resnext50_pth.py`` (seed 000, ResNeXt-50; seed 003's SE-ResNeXt script is the same):
one process, one image at a time, torchvision's PIL transforms, and one float32 ``.bin`` file
(602,112 bytes at 224x224) per image, which the inference tool reads back. Kept faithful on
purpose: only the per-file ``print`` is gone (it would measure pytest's output capture) and
``np.array(tensor)`` is spelled ``tensor.numpy()`` (the same bytes, without numpy's copy-keyword
deprecation warning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def modelzoo_preprocess(image_paths: Sequence[Path], save_path: Path) -> None:
    """Write ``<stem>.bin`` (float32 CHW, normalized) into ``save_path`` for every image."""
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=MEAN, std=STD),
    ])
    for path in image_paths:
        input_image = Image.open(path).convert("RGB")
        input_tensor = preprocess(input_image)
        img = input_tensor.numpy().astype(np.float32)
        img.tofile(os.path.join(save_path, str(path).split("/")[-1].split(".")[0] + ".bin"))


def read_bin(save_path: Path, image: Path, crop: int = 224) -> np.ndarray:
    """One ``.bin`` back as a (3, crop, crop) float32 array."""
    return np.fromfile(save_path / (image.name.split(".")[0] + ".bin"), dtype=np.float32).reshape(3, crop, crop)
