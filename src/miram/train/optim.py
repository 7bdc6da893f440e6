"""AdamW with MAE's parameter groups and a per-step warm-up + half-cycle cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    Attributes:
        base_lr: learning rate per 256 samples; the absolute rate is base_lr * effective_batch / 256
            (MAE's rule), unless ``lr`` is given.
        lr: absolute learning rate; overrides ``base_lr`` when set.
        weight_decay: decoupled weight decay (0 for biases and 1-D parameters such as norms; the tokens are
            decayed, as in official MAE pre-training: docs/decisions.md).
        betas: AdamW betas.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        min_lr: floor of the cosine schedule.
    """

    base_lr: float = 1.5e-4
    lr: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 40.0
    min_lr: float = 0.0


def absolute_lr(config: OptimConfig, effective_batch: int) -> float:
    """The learning rate actually used: ``lr`` if set, else ``base_lr * effective_batch / 256``."""
    return config.lr if config.lr is not None else config.base_lr * effective_batch / 256


def param_groups(
    module: nn.Module, weight_decay: float, skip: set[str] | None = None
) -> list[dict[str, object]]:
    """Two groups: decayed weights, and undecayed biases / 1-D parameters / names in ``skip``.

    A ``skip`` entry matches a whole component of a dotted parameter name, so ``mask_token`` matches
    ``mask_token`` and the entries ``mask_token.0``, ``mask_token.1`` of a ParameterList.
    """
    skip = skip or set()
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or not skip.isdisjoint(name.split(".")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up then half-cycle cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(
    module: nn.Module,
    config: OptimConfig,
    effective_batch: int,
    total_steps: int,
    steps_per_epoch: float,
    skip: set[str] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over MAE-style groups with a per-step schedule."""
    lr = absolute_lr(config, effective_batch)
    opt = torch.optim.AdamW(param_groups(module, config.weight_decay, skip), lr=lr, betas=config.betas)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    min_ratio = config.min_lr / lr if lr > 0 else 0.0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total_steps, warmup, min_ratio))
    return opt, sched
