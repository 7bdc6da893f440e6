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
    """Crop ``box`` from a uint16 ``(H, W)`` image and resample to ``size`` -> float ``(1, h, w)`` in [0, 1].

    Large reductions first average f x f pixel blocks (f = the integer part of the reduction, a box filter
    like the masked autoencoder's own area downsampling), then an antialiased bilinear step covers the
    remaining factor (< 2). Every model therefore sees its input through nearly the same filter, and
    averaging blocks in numpy is several times cheaper than a general area resampling of the native crop.
    """
    top, left, h, w = box
    region = np.asarray(image[top : top + h, left : left + w])
    f = min(h // size[0], w // size[1])
    if f >= 2:
        hh, ww = (h // f) * f, (w // f) * f  # the < f leftover rows/columns are dropped
        blocks = region[:hh, :ww].reshape(hh // f, f, ww // f, f)
        region = blocks.mean(axis=(1, 3), dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32) / 65535.0)[None]
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]  # antialiasing only matters when shrinking
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=shrink, align_corners=False)[0]
