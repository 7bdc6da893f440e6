"""The learning rate a run actually uses, by value: MAE's scaling rule, the warm-up + cosine multiplier, the
scheduler built from epochs, the fine-tuning schedule, and the weight-decay groups by parameter name."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from miram.eval.classifier import warmup_cosine_schedule
from miram.train.optim import OptimConfig, absolute_lr, build_optimizer, param_groups, warmup_cosine


def test_absolute_lr_is_base_lr_times_batch_over_256() -> None:
    assert absolute_lr(OptimConfig(base_lr=1.5e-4), 4096) == pytest.approx(2.4e-3)  # MAE ViT-B: 1.5e-4 x 16
    assert absolute_lr(OptimConfig(base_lr=1e-2), 32) == pytest.approx(1.25e-3)
    assert absolute_lr(OptimConfig(base_lr=1e-2, lr=3e-4), 4096) == 3e-4  # an absolute rate wins


def test_warmup_is_linear_and_reaches_the_peak_on_its_last_step() -> None:
    assert [warmup_cosine(s, 100, 4, 0.0) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_cosine_is_a_half_cycle_from_the_peak_to_the_floor(min_ratio: float) -> None:
    # 10 warm-up steps, then 40 cosine steps: progress 0, 1/4, 1/2, 3/4, 1
    values = [warmup_cosine(10 + s, 50, 10, min_ratio) for s in (0, 10, 20, 30, 40, 60)]
    half_cycle = [1.0, (2 + math.sqrt(2)) / 4, 0.5, (2 - math.sqrt(2)) / 4, 0.0, 0.0]
    assert values == pytest.approx([min_ratio + (1 - min_ratio) * h for h in half_cycle], abs=1e-12)


def test_build_optimizer_follows_the_rule_and_the_schedule_per_step() -> None:
    model = nn.Linear(4, 4)
    config = OptimConfig(base_lr=1e-3, warmup_epochs=2, min_lr=1e-5, weight_decay=0.05)
    # 8 steps per epoch, 4 epochs: 16 warm-up steps, then 16 cosine steps; batch 512 doubles base_lr
    opt, sched = build_optimizer(model, config, effective_batch=512, total_steps=32, steps_per_epoch=8)
    peak = 2e-3
    lrs = []
    for _ in range(32):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:16] == pytest.approx([peak * (s + 1) / 16 for s in range(16)], rel=1e-9)
    cosine = [1e-5 + (peak - 1e-5) * 0.5 * (1 + math.cos(math.pi * s / 16)) for s in range(16)]
    assert lrs[16:] == pytest.approx(cosine, rel=1e-9)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_finetune_schedule_converts_warmup_epochs_to_steps() -> None:
    layer = nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [layer.weight], "lr": 1.0}, {"params": [layer.bias], "lr": 0.5}])
    module: Any = SimpleNamespace(trainer=SimpleNamespace(estimated_stepping_batches=20, max_epochs=4))
    sched = warmup_cosine_schedule(module, opt, warmup_epochs=1.0)["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # 5 steps per epoch: 5 warm-up steps, then 15 cosine steps to 0; the group ratio 2 : 1 is kept
    expected = [(s + 1) / 5 for s in range(5)] + [0.5 * (1 + math.cos(math.pi * s / 15)) for s in range(15)]
    assert [lr[0] for lr in lrs] == pytest.approx(expected, abs=1e-12)
    assert [lr[1] for lr in lrs] == pytest.approx([e / 2 for e in expected], abs=1e-12)


class _Named(nn.Module):
    """Parameters named as in the encoder and decoders."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.proj = nn.Conv2d(1, 8, 2)
        self.qkv = nn.Linear(8, 24)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_weight_decay_groups_by_parameter_name() -> None:
    module = _Named()
    decay, no_decay = param_groups(module, 0.05, skip={"cls_token", "pos_embed"})
    names = {id(p): n for n, p in module.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["proj.weight", "qkv.weight"]  # type: ignore[attr-defined]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [  # type: ignore[attr-defined]
        "cls_token",
        "norm.bias",
        "norm.weight",
        "pos_embed",
        "proj.bias",
        "qkv.bias",
    ]


def test_effective_batch_counts_devices_and_accumulation() -> None:
    from miram.train.lit_pretrain import LitPretrainBase

    fake: Any = SimpleNamespace(
        trainer=SimpleNamespace(
            datamodule=SimpleNamespace(batch_size=32), accumulate_grad_batches=4, world_size=8
        )
    )
    assert LitPretrainBase.effective_batch(fake) == 1024
