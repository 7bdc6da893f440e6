"""Stochastic depth by value: which samples are dropped, the 1/keep rescale, and the per-block rates."""

from __future__ import annotations

import pytest
import torch

from miram.layers.drop_path import DropPath
from miram.models.vit import ViTConfig, ViTEncoder


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest_by_one_over_keep() -> None:
    drop = DropPath(0.25).train()
    x = torch.full((4000, 3, 5), 2.0)
    out = drop(x)
    per_sample = out.reshape(4000, -1)
    # every sample is all-zero or all-2/0.75: the branch is dropped per sample, never per element
    kept = per_sample[:, 0] != 0
    assert torch.equal(per_sample[kept], torch.full_like(per_sample[kept], 2.0 / 0.75))
    assert torch.equal(per_sample[~kept], torch.zeros_like(per_sample[~kept]))
    # 4000 Bernoulli(0.75): the kept fraction is 0.75 +- 0.007 (sd), so the expectation is kept
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert out.mean().item() == pytest.approx(2.0, abs=0.08)


def test_drop_path_is_the_identity_in_eval_mode_and_at_rate_zero() -> None:
    x = torch.randn(8, 3)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_encoder_drop_path_rates_rise_linearly_over_depth() -> None:
    enc = ViTEncoder(
        ViTConfig(img_size=(32, 16), patch_size=8, embed_dim=16, depth=5, num_heads=2, drop_path_rate=0.2)
    )
    rates = [block.drop_path.p for block in enc.blocks]  # type: ignore[union-attr]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
