"""Per-sample geometry on native-resolution crops, done in the CPU data workers.

Batched photometric and flip augmentation runs on the device with kornia (see ``datamodule.py``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import Tensor


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
    """Crop ``box`` from a uint16 ``(H, W)`` image and resample it to ``size`` -> uint16 ``(1, h, w)``.

    Reductions by f >= 2 first average f x f pixel blocks (f = the integer part of the reduction: a box
    filter, like the masked autoencoder's own area downsampling); a plain bilinear step then covers the
    remaining factor, which is below 2. That step is not antialiased: on phantom crops it differs from an
    antialiased bilinear resize by at most 5 % of the image's standard deviation (at a factor close to 2),
    about as much as antialiased bilinear differs from an exact area filter, and its cost follows the output,
    not the input. A box already at ``size`` is returned as stored pixels. Both steps run in OpenCV on the
    uint16 pixels (3-5x faster than torch's float kernels on one core, and no float copy); the result stays
    uint16 so that workers hand over a quarter of the bytes of float32, and normalisation runs batched on
    the device (:meth:`miram.data.datamodule.MammoDataModule.normalize`).
    """
    import cv2  # imported here: only data workers need it

    top, left, h, w = box
    region = image[top : top + h, left : left + w]
    if (h, w) == tuple(size):
        return torch.from_numpy(np.array(region, dtype=np.uint16))[None]
    f = min(h // size[0], w // size[1])
    if f >= 2:  # the < f leftover rows/columns are dropped; an exact integer factor takes OpenCV's block path
        hh, ww = (h // f) * f, (w // f) * f
        region = cv2.resize(region[:hh, :ww], (ww // f, hh // f), interpolation=cv2.INTER_AREA)
    if region.shape != tuple(size):
        region = cv2.resize(region, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(region)[None]
