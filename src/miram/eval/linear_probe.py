"""Linear probe on cached features: BatchNorm without affine parameters, then a linear layer.

The parameter-free BatchNorm standardises the frozen features so one learning rate suits every encoder
(MAE's linear-probing recipe; MoCo-v3 issue #20).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miram.eval.metrics import Task


@dataclass
class ProbeConfig:
    """Training of the probe head.

    Attributes:
        epochs: passes over the training features.
        lr: Adam learning rate.
        weight_decay: L2 on the linear weights.
        batch_size: samples per step.
        class_weighted: weight the loss by inverse class frequency.
    """

    epochs: int = 100
    lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int = 256
    class_weighted: bool = True


def probe_head(dim: int, num_outputs: int) -> nn.Sequential:
    """BatchNorm1d(affine=False, eps=1e-6) -> Linear, head initialised with std 0.01."""
    linear = nn.Linear(dim, num_outputs)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


def class_weights(target: Tensor, task: Task, num_classes: int) -> Tensor:
    """total / (count_c * K) per class (multiclass), or negatives / positives per label (multilabel)."""
    if task == "multilabel":
        pos = target.float().sum(0).clamp_min(1)
        return (target.shape[0] - pos) / pos
    counts = torch.bincount(target.long(), minlength=num_classes).float().clamp_min(1)
    return counts.sum() / (counts * num_classes)


def _loss(logits: Tensor, target: Tensor, task: Task, weights: Tensor | None) -> Tensor:
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weights)
    return F.cross_entropy(logits, target.long(), weight=weights)


def train_linear_probe(
    features: Tensor,
    target: Tensor,
    task: Task,
    num_classes: int,
    config: ProbeConfig | None = None,
    seed: int = 0,
) -> nn.Sequential:
    """Fit a probe head on features ``(N, D)``; binary tasks use two logits."""
    config = config or ProbeConfig()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = probe_head(features.shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-features.shape[0] // config.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps_per_epoch)
    weights = class_weights(target, task, num_classes) if config.class_weighted else None
    head.train()
    for _ in range(config.epochs):
        order = torch.randperm(features.shape[0], generator=g)
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = _loss(head(features[idx]), target[idx], task, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def predict_probs(head: nn.Module, features: Tensor, task: Task) -> Tensor:
    """Probabilities: ``(N,)`` for binary, ``(N, K)`` softmax for multiclass, sigmoids for multilabel."""
    logits = head.eval()(features)
    if task == "multilabel":
        return logits.sigmoid()
    probs = logits.softmax(-1)
    return probs[:, 1] if task == "binary" else probs
