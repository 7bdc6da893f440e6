"""Box and crop geometry on uint16 ``(H, W)`` images, for ``prepare`` and for the CPU data workers.

Boxes: :func:`square_box` (the square around a lesion's mask, cut by ``prepare``), :func:`random_resized_box`
and :func:`center_box` (the per-sample augmentation geometry the data workers pick on native-resolution
crops); :func:`physical_size`, :func:`inbreast_cells` and :func:`inbreast_box` (crops of a size in
millimetres inside the breast of a whole film). Crops and resizing: :func:`crop_padded` (zero-padded
window), :func:`resize_max` (``prepare``'s size cap) and :func:`crop_resize` (a box resampled to the size
the model asks for, in the data workers). Batched photometric and flip augmentation runs on the device with
kornia (see ``datamodule.py``).
"""

from __future__ import annotations

import functools
import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


def square_box(
    y0: int, y1: int, x0: int, x1: int, context: float = 0.0, min_side: int = 0
) -> tuple[int, int, int]:
    """Square around a box (end-exclusive), centred on it.

    Args:
        y0, y1, x0, x1: the box.
        context: margin added on each side as a fraction of the box's longer side (0 = paper.md §5.1).
        min_side: lower bound on the side.

    Returns:
        ``(top, left, side)``; may extend past the image (callers zero-pad).
    """
    side = max(y1 - y0, x1 - x0)
    side = max(int(round(side * (1.0 + 2.0 * context))), min_side, 1)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return int(np.floor(cy - side / 2.0)), int(np.floor(cx - side / 2.0)), side


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


def physical_size(spacing_mm: tuple[float, float], crop_mm: float, out_aspect: float) -> tuple[int, int]:
    """Pixels ``(h, w)`` of a crop ``crop_mm`` high and ``crop_mm * out_aspect`` wide, at ``spacing_mm``
    (row, column) millimetres per pixel."""
    return (
        max(1, int(round(crop_mm / spacing_mm[0]))),
        max(1, int(round(crop_mm * out_aspect / spacing_mm[1]))),
    )


def inbreast_cells(
    mask: np.ndarray, stride: int, shape: tuple[int, int], size: tuple[int, int], min_breast: float
) -> np.ndarray:
    """Thumbnail cells where a box of ``size`` may start and be at least ``min_breast`` breast, wherever in
    the cell it starts.

    The full-resolution mask is the thumbnail ``mask`` repeated over ``stride`` x ``stride`` cells. A box of
    ``(bh, bw)`` pixels starting in cell ``(i, j)`` lies within the ``ky`` x ``kx`` cells from there (``ky =
    ceil((bh + stride - 1) / stride)``), so it misses the breast on at most ``stride**2`` pixels per
    non-breast cell of that window: a cell is kept when that bound leaves ``min_breast`` of the box. The
    bound is conservative, so any start in a kept cell is safe, and it is exact up to one cell per edge.

    Args:
        mask: bool ``(h, w)`` thumbnail of the breast.
        stride: image pixels per thumbnail pixel.
        shape: the image's ``(H, W)``.
        size: the box's ``(bh, bw)`` in image pixels.
        min_breast: smallest share of the box that must be breast.

    Returns:
        bool ``(h, w)``: True where a box may start.
    """
    (height, width), (bh, bw) = shape, size
    th, tw = mask.shape
    ky, kx = -(-(bh + stride - 1) // stride), -(-(bw + stride - 1) // stride)
    # integral image of the non-breast cells, in place and in int32 (this runs for every training crop);
    # beyond the thumbnail counts as non-breast
    table = np.ones((th + ky + 1, tw + kx + 1), dtype=np.int32)
    table[0, :] = 0
    table[:, 0] = 0
    np.logical_not(mask, out=table[1 : th + 1, 1 : tw + 1], casting="unsafe")
    np.cumsum(table, axis=0, out=table)
    np.cumsum(table, axis=1, out=table)
    window = table[ky : ky + th, kx : kx + tw] - table[:th, kx : kx + tw]
    window -= table[ky : ky + th, :tw]
    window += table[:th, :tw]
    # breast share >= min_breast  <=>  non-breast cells x stride**2 <= (1 - min_breast) x box area
    ok = window <= int(np.floor((1.0 - min_breast) * bh * bw / (stride * stride)))
    # the box must also fit in the image from the cell's first pixel: i * stride <= height - bh
    ok[max(0, -(-(height - bh + 1) // stride)) :, :] = False
    ok[:, max(0, -(-(width - bw + 1) // stride)) :] = False
    return ok


def inbreast_box(
    cells: np.ndarray,
    stride: int,
    shape: tuple[int, int],
    size: tuple[int, int],
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """A box ``(top, left, h, w)`` of ``size`` starting uniformly in a cell of :func:`inbreast_cells`, then
    uniformly inside that cell (as far as the image allows).

    Raises:
        ValueError: no cell can hold the box.
    """
    starts = np.flatnonzero(cells)
    if starts.size == 0:
        raise ValueError(f"no position holds a {size[0]}x{size[1]} box inside the breast")
    i, j = divmod(int(starts[rng.randrange(starts.size)]), cells.shape[1])
    y_hi = min((i + 1) * stride, shape[0] - size[0] + 1)
    x_hi = min((j + 1) * stride, shape[1] - size[1] + 1)
    return rng.randrange(i * stride, y_hi), rng.randrange(j * stride, x_hi), size[0], size[1]


def breast_region(image: np.ndarray, box: list[int], out_aspect: float) -> np.ndarray:
    """The ``[y0, x0, y1, x1]`` breast box of a film, grown about its centre to aspect ``out_aspect`` (width
    / height) and zero-padded where that leaves the image: ``(h, w)`` uint16 with ``w / h ≈ out_aspect``."""
    y0, x0, y1, x1 = box
    h, w = y1 - y0, x1 - x0
    if w / h < out_aspect:
        h2, w2 = h, max(w, int(round(h * out_aspect)))
    else:
        h2, w2 = max(h, int(round(w / out_aspect))), w
    top, left = y0 - (h2 - h) // 2, x0 - (w2 - w) // 2
    return crop_padded(image, top, left, h2, w2)


def crop_padded(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """``image[top:top+height, left:left+width]`` with zeros where the window leaves the image."""
    out = np.zeros((height, width), dtype=image.dtype)
    h, w = image.shape
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + height, h), min(left + width, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    return out


def resize_max(image: np.ndarray, max_size: int | None) -> tuple[np.ndarray, float]:
    """Downscale (area filter) so the longest side is at most ``max_size``; never upscales.

    Returns:
        ``(uint16 image, scale)`` with scale = new / old size (1.0 when unchanged).
    """
    h, w = image.shape
    if not max_size or max(h, w) <= max_size:
        return image, 1.0
    from PIL import Image

    scale = max_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(image.astype(np.float32)).resize(size, Image.Resampling.BOX)
    return np.clip(np.rint(np.asarray(resized)), 0, 65535).astype(np.uint16), scale


@functools.cache
def single_threaded_cv2() -> Any:
    """OpenCV, limited to one thread before its first use in this process.

    Loader workers are forked from a process that may have resampled crops itself (an evaluation loader
    without workers, a test). Had OpenCV started its thread pool there, the fork would inherit a pool
    without threads and the worker's first OpenCV call would wait on it forever; with one thread from the
    start there is no pool to inherit. One thread is also what a worker wants: workers are the parallelism.
    """
    import cv2  # imported here: only processes that resample crops need it

    cv2.setNumThreads(1)
    return cv2


def crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """Crop ``box`` from a uint16 ``(H, W)`` image and resample it to ``size`` -> uint16 ``(1, h, w)``.

    Reductions use OpenCV's area filter (``INTER_AREA``), which for a reduction is the exact area average:
    each output pixel is the mean of the input area it covers, fractional pixels weighted by their share.
    Measured on real CBIS-DDSM tissue crops (``docs/data.md``), it differs from an exact float64 area
    filter by at most 0.0003 of the crop's standard deviation at factors 1.1–4 (uint16 rounding), where
    the former block average + un-antialiased bilinear step differed by up to 0.96 std (factor 1.75):
    a few-pixel microcalcification keeps its mass instead of falling between bilinear taps. An axis that
    is enlarged is interpolated bilinearly after the other axis is reduced. A box already at ``size`` is
    returned as stored pixels. The result stays uint16 so that workers hand over a quarter of the bytes of
    float32, and normalisation runs batched on the device
    (:meth:`miram.data.datamodule.MammoDataModule.normalize`).
    """
    import torch  # imported here: ``prepare`` workers load this module too and need no torch

    cv2 = single_threaded_cv2()

    top, left, h, w = box
    region = image[top : top + h, left : left + w]
    if (h, w) == tuple(size):
        return torch.from_numpy(np.array(region, dtype=np.uint16))[None]
    # INTER_AREA averages only when no axis is enlarged (OpenCV falls back to another rule otherwise), so
    # with one axis enlarged the other is reduced on its own first
    rows = size[0] if h > size[0] else h
    cols = size[1] if w > size[1] else w
    if (rows, cols) != (h, w):
        region = cv2.resize(region, (cols, rows), interpolation=cv2.INTER_AREA)
    if region.shape != tuple(size):
        region = cv2.resize(region, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(region))[None]
