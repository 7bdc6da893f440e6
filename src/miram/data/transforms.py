"""Per-sample geometry on native-resolution crops, done in the CPU data workers.

Batched photometric and flip augmentation runs on the device with kornia (see ``datamodule.py``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def to_tensor(image: np.ndarray) -> Tensor:
    """uint16 ``(H, W)`` -> float32 ``(1, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535.0)[None]


def random_resized_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    out_aspect: float,
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """A random box ``(top, left, h, w)`` covering ``scale`` of the area with aspect in ``ratio``*out_aspect.

    Same sampling rule as the usual RandomResizedCrop, with a fallback to the largest centred box.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi)) * out_aspect
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return center_box(height, width, out_aspect)


def center_box(height: int, width: int, out_aspect: float) -> tuple[int, int, int, int]:
    """The largest centred box with aspect ``out_aspect`` (width / height)."""
    if width / height > out_aspect:
        h, w = height, max(1, int(round(height * out_aspect)))
    else:
        h, w = max(1, int(round(width / out_aspect))), width
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """Crop ``box`` from a uint16 ``(H, W)`` image and resample to ``size`` with antialiasing -> ``(1, h, w)``.

    Downsampling averages over source pixels (antialias), so a crop resampled to the finest training scale
    keeps the real detail of the native image rather than interpolating it.
    """
    top, left, h, w = box
    region = to_tensor(np.ascontiguousarray(image[top : top + h, left : left + w]))
    if (h, w) == tuple(size):
        return region
    return F.interpolate(region[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
