"""MoCo-v3: loss against a hand computation, symmetry, momentum update and schedule, a training run."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from miram.losses.contrastive import info_nce, symmetric_info_nce
from miram.models.mocov3 import MoCoV3, MoCoV3Config, cosine_momentum
from miram.models.vit import ViTConfig

TINY = ViTConfig(img_size=(64, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


def tiny_config(**kw: object) -> MoCoV3Config:
    return MoCoV3Config(encoder=TINY, proj_hidden_dim=32, pred_hidden_dim=32, out_dim=16, **kw)  # type: ignore[arg-type]


def test_info_nce_matches_hand_computation() -> None:
    q, k = torch.randn(4, 8), torch.randn(4, 8)
    tau = 0.2
    total = 0.0
    for i in range(4):
        qi = q[i] / q[i].norm()
        sims = [float(qi @ (k[j] / k[j].norm())) / tau for j in range(4)]
        total += -sims[i] + math.log(sum(math.exp(s) for s in sims))
    expected = 2 * tau * total / 4
    assert info_nce(q, k, tau) == pytest.approx(expected, rel=1e-5)


def test_info_nce_low_for_matching_pairs_and_no_grad_to_keys() -> None:
    q = torch.randn(6, 8, requires_grad=True)
    k = q.detach().clone().requires_grad_(True)
    matched = info_nce(q, k * 10)
    shuffled = info_nce(q, k.roll(1, 0))
    assert matched < shuffled
    matched.backward()
    assert q.grad is not None and k.grad is None


def test_symmetric_loss_swaps_roles() -> None:
    q1, q2, k1, k2 = (torch.randn(5, 8) for _ in range(4))
    l12, l21 = symmetric_info_nce(q1, q2, k1, k2)
    assert l12 == pytest.approx(float(info_nce(q1, k2)))
    assert l21 == pytest.approx(float(info_nce(q2, k1)))
    m12, m21 = symmetric_info_nce(q2, q1, k2, k1)
    assert float(l12 + l21) == pytest.approx(float(m12 + m21))


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)


def test_momentum_update_is_an_ema_of_online_weights() -> None:
    model = MoCoV3(tiny_config())
    for a, b in zip(model.momentum_encoder.parameters(), model.encoder.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    model.update_momentum(0.9)
    for old, new, online in zip(before, model.momentum_encoder.parameters(), model.encoder.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * online)
    assert not any(p.requires_grad for p in model.momentum_projector.parameters())


def test_forward_grads_and_frozen_patch_projection() -> None:
    model = MoCoV3(tiny_config())
    images = torch.randn(4, 1, 64, 32)
    out = model(images)
    assert out.loss.ndim == 0 and set(out.terms) == {"loss_12", "loss_21"}
    assert out.extras["view1"].shape == images.shape
    out.loss.backward()
    assert model.encoder.patch_embed.proj.weight.grad is None
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    free = MoCoV3(tiny_config(stop_grad_patch_embed=False))
    free(images).loss.backward()
    assert free.encoder.patch_embed.proj.weight.grad is not None


def test_lit_mocov3_trains_on_one_device(tmp_path: Path) -> None:
    from miram.train.lit_mocov3 import LitMoCoV3

    lit = LitMoCoV3(model=tiny_config(), optim={"lr": 1e-3, "warmup_epochs": 0})
    images = torch.randn(16, 1, 64, 32)
    data = torch.utils.data.TensorDataset(images, torch.zeros(16))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    start = [p.clone() for p in lit.model.momentum_encoder.parameters()]
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(lit, loader)
    assert trainer.global_step == 2
    assert lit.momentum > lit.config.base_momentum
    moved = [not torch.equal(a, b) for a, b in zip(start, lit.model.momentum_encoder.parameters())]
    assert any(moved)
