"""Breast region and orientation: a largest-connected-component breast mask and a flip to one side.

Films carry burned-in view labels (LCC, RMLO, ...) and bright film edges that leak side and view and
dominate the intensity maximum (``docs/cbis-ddsm.md`` §4.2, §10.3). The mask keeps the largest
connected component above a threshold, after an erosion that cuts thin bridges to film edges, and fills
its holes (fatty tissue below the threshold). It runs on a strided thumbnail (scipy is not a
dependency), so it costs milliseconds on a 5k×3k mammogram.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Side = Literal["left", "right"]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: (row, start, end-exclusive), row-major order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def label_runs(
    mask: np.ndarray, diagonal: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of a 2-D boolean mask by run-length union-find.

    Args:
        mask: ``(H, W)`` bool.
        diagonal: 8-connectivity when True, else 4-connectivity.

    Returns:
        ``(rows, starts, ends, labels)``: one entry per run; runs of a component share a label.
    """
    rows, starts, ends = _runs(mask)
    n = len(rows)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    touch = 1 if diagonal else 0
    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for r in range(1, mask.shape[0]):
        a0, a1 = row_first[r - 1], row_first[r]  # runs of the previous row
        b0, b1 = row_first[r], row_first[r + 1]
        i, j = a0, b0
        while i < a1 and j < b1:
            if starts[i] < ends[j] + touch and starts[j] < ends[i] + touch:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    labels = np.array([find(i) for i in range(n)], dtype=np.int64)
    return rows, starts, ends, labels


def _paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for r, s, e in zip(rows.tolist(), starts.tolist(), ends.tolist()):
        out[r, s:e] = True
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (``(H, W)`` bool), empty if none."""
    rows, starts, ends, labels = label_runs(mask)
    if len(rows) == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels, weights=(ends - starts).astype(np.float64))
    keep = labels == int(np.argmax(sizes))
    return _paint(mask.shape, rows[keep], starts[keep], ends[keep])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions (4-connected) that do not touch the image border."""
    h, w = mask.shape
    rows, starts, ends, labels = label_runs(~mask, diagonal=False)
    border = (rows == 0) | (rows == h - 1) | (starts == 0) | (ends == w)
    outside = np.isin(labels, np.unique(labels[border]))
    hole = ~outside
    return mask | _paint(mask.shape, rows[hole], starts[hole], ends[hole])


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        m = out.copy()
        m[1:, :] &= out[:-1, :]
        m[:-1, :] &= out[1:, :]
        m[:, 1:] &= out[:, :-1]
        m[:, :-1] &= out[:, 1:]
        out = m
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        m = out.copy()
        m[1:, :] |= out[:-1, :]
        m[:-1, :] |= out[1:, :]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def breast_mask_small(
    pixels: np.ndarray, threshold: float = 0.05, max_side: int = 512, erode: int = 6
) -> tuple[np.ndarray, int]:
    """Breast mask on a strided thumbnail.

    Args:
        pixels: ``(H, W)`` grey image (any integer or float dtype).
        threshold: fraction of the thumbnail's 99.9th percentile (robust to saturated labels).
        max_side: the thumbnail's longest side is at most this.
        erode: erosion radius in thumbnail pixels before the component search (cuts thin bridges to
            film edges and labels); the kept component is dilated back inside the thresholded mask.

    Returns:
        ``(mask, stride)``: bool ``(ceil(H/stride), ceil(W/stride))`` and the stride.
    """
    stride = max(1, -(-max(pixels.shape) // max_side))
    small = np.asarray(pixels[::stride, ::stride], dtype=np.float32)
    top = float(np.percentile(small, 99.9)) if small.size else 0.0
    if top <= 0:
        return np.zeros(small.shape, dtype=bool), stride
    above = small > threshold * top
    core = largest_component(_erode(above, erode)) if erode else largest_component(above)
    if not core.any():  # everything thin: fall back to the plain largest component
        core = largest_component(above)
    region = _dilate(core, erode + 1) & above if erode else core
    return fill_holes(largest_component(region)), stride


def breast_mask(
    pixels: np.ndarray, threshold: float = 0.05, max_side: int = 512, erode: int = 6
) -> np.ndarray:
    """Full-resolution breast mask: bool ``(H, W)``, True on the breast (see :func:`breast_mask_small`)."""
    small, stride = breast_mask_small(pixels, threshold, max_side, erode)
    h, w = pixels.shape
    return small[np.arange(h) // stride][:, np.arange(w) // stride]


def breast_side(mask: np.ndarray) -> Side:
    """Which half of the image holds more breast (the chest-wall side), from a ``(H, W)`` mask."""
    w = mask.shape[1]
    left = int(mask[:, : w // 2].sum())
    right = int(mask[:, w - w // 2 :].sum())
    return "left" if left >= right else "right"


def flip_needed(mask: np.ndarray, flip_to: Literal["none", "left", "right"]) -> bool:
    """True when the image must be mirrored left-right to put the breast on ``flip_to``.

    Decided from the pixels, not the laterality tag: DDSM films face both ways, and a tag says which
    breast it is, not where it lies in the image.
    """
    return flip_to != "none" and breast_side(mask) != flip_to
