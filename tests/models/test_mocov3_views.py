"""MoCo-v3's two views are one random resized crop each of the original image (official MoCo-v3), not crops
of a crop: their sizes, measured through the data workers and the on-device augmentation, follow a single
RandomResizedCrop draw."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from miram.data.datamodule import CacheDataset
from miram.models.mocov3 import MoCoV3Config, TwoViews, ViewsConfig
from miram.models.vit import ViTConfig
from miram.train.lit_mocov3 import LitMoCoV3

S, OUT = 256, 64  # native side, view side
QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]


class _RampCache:
    """A cache whose every record is the S x S image ``x + 256 y``: linear, so crops and resampling
    (area averaging, bilinear) keep it linear and a view's corners give its extent in the original."""

    labels: dict[str, Any] = {}

    def image(self, index: int) -> np.ndarray:
        y, x = np.mgrid[:S, :S]
        return (x + 256 * y).astype(np.uint16)


def view_extents(views: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Width and height of each view ``(M, 1, OUT, OUT)`` as fractions of the original side."""
    v = views[:, 0].double()
    # corner pixel centres are OUT - 1 output pixels apart, each covering width / OUT original pixels
    dx = (v[:, 0, -1] - v[:, 0, 0]).abs() * OUT / (OUT - 1)
    dy = (v[:, -1, 0] - v[:, 0, 0]).abs() / 256 * OUT / (OUT - 1)
    return (dx / S).numpy(), (dy / S).numpy()


def one_crop_reference(n: int, scale: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area and width fractions of single RandomResizedCrop draws (torchvision's get_params, written out)."""
    rng = random.Random(seed)
    area, width = [], []
    for _ in range(n):
        for _ in range(10):
            target = S * S * rng.uniform(*scale)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= S and 0 < h <= S:
                break
        else:
            w = h = S
        area.append(w * h / S**2)
        width.append(w / S)
    return np.array(area), np.array(width)


def moco_views(n: int, scale: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of ``n`` records as MoCo-v3 training sees them (workers, then the device)."""
    dataset = CacheDataset(_RampCache(), list(range(n)), (OUT, OUT), train=True, scale=scale, views=2)  # type: ignore[arg-type]
    batch = torch.stack([dataset[i][0] for i in range(n)]).float()  # (n, 2, 1, OUT, OUT)
    # no intensity change or blur, so pixel values stay coordinates (flips keep the extents)
    views = TwoViews(ViewsConfig(crop_scale=scale, intensity_p=0.0, blur_p=(0.0, 0.0)), (OUT, OUT))
    return views(batch)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0)])
def test_each_view_is_one_crop_of_the_original(scale: tuple[float, float]) -> None:
    n = 600
    v1, v2 = moco_views(n, scale)
    width, height = view_extents(torch.cat([v1, v2]))
    area = width * height
    ref_area, ref_width = one_crop_reference(4000, scale)
    # quantiles of one crop, measured to ~0.01 (corner rounding); a crop of a crop sits 0.1-0.3 lower
    assert np.quantile(area, QUANTILES) == pytest.approx(np.quantile(ref_area, QUANTILES), abs=0.04)
    assert np.quantile(width, QUANTILES) == pytest.approx(np.quantile(ref_width, QUANTILES), abs=0.04)
    assert area.mean() == pytest.approx(ref_area.mean(), abs=0.025)
    assert np.mean(area < scale[0] - 0.02) < 0.005  # never below one crop's smallest area
    # the two views of an image are independent draws
    assert abs(np.corrcoef(area[:n], area[n:])[0, 1]) < 0.15


def test_given_crops_are_not_cropped_again() -> None:
    views = TwoViews(ViewsConfig(hflip=0.0, vflip=0.0, intensity_p=0.0, blur_p=(0.0, 0.0)), (16, 16))
    crops = torch.randn(3, 2, 1, 16, 16)
    v1, v2 = views(crops)
    torch.testing.assert_close(v1, crops[:, 0])
    torch.testing.assert_close(v2, crops[:, 1])


def _setup(views: int, scale: tuple[float, float]) -> None:
    encoder = ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=1, num_heads=2)
    lit = LitMoCoV3(MoCoV3Config(encoder=encoder, proj_hidden_dim=16, pred_hidden_dim=16, out_dim=8))
    dm = SimpleNamespace(image_size=(32, 32), views=views, scale=scale)
    lit._trainer = SimpleNamespace(datamodule=dm, world_size=1)  # type: ignore[assignment]
    lit.setup("fit")


def test_mocov3_asks_the_data_layer_for_two_views_of_its_crop_scale() -> None:
    _setup(2, (0.08, 1.0))
    with pytest.raises(ValueError, match="data.views"):
        _setup(1, (0.08, 1.0))  # one crop, cropped again on the device: crops of a crop
    with pytest.raises(ValueError, match="crop_scale"):
        _setup(2, (0.2, 1.0))
