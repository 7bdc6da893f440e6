"""Reconstruction figures in pixel space: a perfect norm-pix prediction, de-normalised with each target
patch's own mean and deviation, gives back the target image; visible patches are pasted from the target."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from miram.losses.reconstruction import normalize_patches
from miram.models.masked_autoencoder import MaskedAutoencoder
from miram.models.masking import Masking
from miram.models.ops import upsample_mask
from miram.models.outputs import LossOutput
from miram.train.reconstruct import reconstruct
from tests.models.conftest import tiny_config


def _perfect(model: MaskedAutoencoder, error: float) -> None:
    """Make ``model`` predict each scale's loss target exactly, plus ``error`` on every pixel."""
    forward = model.forward

    def perfect(images: torch.Tensor, masking: Masking | None = None) -> LossOutput:
        out = forward(images, masking=masking)
        for f in (s.factor for s in model.config.scales):
            target = out.extras[f"target_x{f}"]
            ideal = normalize_patches(target) if model.config.norm_pix_loss else target
            out.extras[f"pred_x{f}"] = ideal + error
        return out

    model.forward = perfect  # type: ignore[method-assign]


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_a_perfect_prediction_reconstructs_the_target_pixels(norm_pix_loss: bool) -> None:
    model = MaskedAutoencoder(tiny_config((1, 2), norm_pix_loss=norm_pix_loss)).eval()
    _perfect(model, 0.0)
    images = torch.rand(2, 1, 128, 64) * 1000 + 500  # raw intensities far from a unit scale
    panels = reconstruct(model, images, seed=3)
    assert sorted(panels) == [1, 2]
    for f, cols in panels.items():
        target = torch.nn.functional.avg_pool2d(images, 2 // f) if f == 1 else images
        torch.testing.assert_close(cols["target"], target)
        # measured max error 6e-5 on values of about 1000 (float32 round trip of the normalisation)
        torch.testing.assert_close(cols["prediction"], target, atol=5e-4, rtol=0)
        torch.testing.assert_close(cols["reconstruction"], target, atol=5e-4, rtol=0)


def test_reconstruction_pastes_visible_patches_and_zeroes_masked_ones() -> None:
    model = MaskedAutoencoder(tiny_config((1, 2))).eval()
    _perfect(model, 1.0)  # one deviation off everywhere: the visible patches must come from the target
    images = torch.rand(2, 1, 128, 64)
    cols = reconstruct(model, images, seed=0)[2]
    g = torch.Generator().manual_seed(0)
    mask = upsample_mask(model.random_masking(2, torch.device("cpu"), generator=g).mask, (8, 4), 2)
    pixel_mask = mask.reshape(2, 16, 8)[:, :, None, :, None].expand(2, 16, 8, 8, 8).reshape(2, 1, 128, 64)
    torch.testing.assert_close(cols["masked"], images * ~pixel_mask)
    torch.testing.assert_close(cols["reconstruction"][~pixel_mask], images[~pixel_mask])
    # where masked, prediction = target + 1 deviation of its patch: strictly above the target
    diff: Any = (cols["reconstruction"] - images)[pixel_mask]
    assert bool((diff > 0).all())
