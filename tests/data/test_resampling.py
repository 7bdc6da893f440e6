"""``crop_resize`` against an exact area filter: reductions keep few-pixel detail (microcalcifications)."""

from __future__ import annotations

import numpy as np
import pytest
from cbis_fakes import real_cases

from miram.data.crops import crop_resize, single_threaded_cv2


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of the exact area filter: output pixel j averages input [j·s, (j+1)·s)."""
    s = n_in / n_out
    edges = np.arange(n_out + 1) * s
    lo, hi = edges[:-1, None], edges[1:, None]
    i = np.arange(n_in)[None, :]
    return np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0.0, None) / s


def exact_area(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float64 ``size`` image: the exact area average of ``region`` (a reduction on both axes)."""
    return (
        area_matrix(region.shape[0], size[0])
        @ region.astype(np.float64)
        @ area_matrix(region.shape[1], size[1]).T
    )


def worst_error(region: np.ndarray, size: tuple[int, int]) -> float:
    """Largest |crop_resize − exact area| in units of the region's standard deviation."""
    out = crop_resize(region, (0, 0, *region.shape), size)[0].numpy().astype(np.float64)
    return float(np.abs(out - exact_area(region, size)).max() / region.astype(np.float64).std())


def calcifications(side: int, seed: int) -> np.ndarray:
    """Tissue-like noise with 2-3 px bright specks, uint16 ``(side, side)``."""
    rng = np.random.default_rng(seed)
    image = 20000 + 3000 * rng.standard_normal((side, side))
    for y, x in rng.integers(0, side - 3, (side // 8, 2)):
        image[y : y + rng.integers(2, 4), x : x + rng.integers(2, 4)] = 60000
    return np.clip(image, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("factor", [1.1, 1.12, 1.5, 1.75, 2.5, 3.3])
def test_reductions_match_an_exact_area_filter(factor: float) -> None:
    out = 96
    region = calcifications(int(round(out * factor)), seed=int(factor * 100))
    # uint16 rounding is the only difference: half a grey level, ~1e-4 of this image's std
    assert worst_error(region, (out, out)) <= 1e-3


def test_mixed_axes_reduce_by_area_and_enlarge_linearly() -> None:
    region = calcifications(150, seed=0)[:, :60]  # rows reduced 150 -> 100, columns enlarged 60 -> 80
    out = crop_resize(region, (0, 0, 150, 60), (100, 80))[0].numpy().astype(np.float64)
    rows = area_matrix(150, 100) @ region.astype(np.float64)
    cv2 = single_threaded_cv2()  # this process forks loader workers in later tests
    expected = cv2.resize(rows, (80, 100), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out - expected).max() <= 1.0


@pytest.mark.realdata
def test_real_tissue_crops_match_an_exact_area_filter() -> None:
    from miram.data.breast import breast_mask_small
    from miram.data.dicom import read_dicom

    rng = np.random.default_rng(0)
    image = read_dicom(real_cases()[0][1]).pixels
    small, stride = breast_mask_small(image)
    ys, xs = np.nonzero(small)
    for factor in (1.1, 1.12, 1.5, 2.5, 4.0):
        side = int(round(448 * factor))
        k = rng.integers(len(ys))
        top = int(np.clip(ys[k] * stride - side // 2, 0, image.shape[0] - side))
        left = int(np.clip(xs[k] * stride - side // 2, 0, image.shape[1] - side))
        region = np.ascontiguousarray(image[top : top + side, left : left + side])
        assert worst_error(region, (448, 448)) <= 1e-3, factor
