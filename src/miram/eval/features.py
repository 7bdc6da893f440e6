"""Frozen-encoder features, computed once per split (no augmentation) and reused by probes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    encoder: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Run ``encoder`` (``(B, C, H, W) -> (B, D)``) over ``batches`` in eval mode.

    Returns:
        features ``(N, D)`` (fp32, on the CPU) and the targets concatenated.
    """
    was_training = encoder.training
    encoder.eval().to(device)
    feats, targets = [], []
    for images, target in batches:
        feats.append(encoder(images.to(device)).float().cpu())
        targets.append(target)
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(targets)
