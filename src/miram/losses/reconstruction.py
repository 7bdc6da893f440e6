"""Per-patch pixel reconstruction loss with MAE's per-patch normalisation (norm-pix)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalise each patch ``(B, L, P)`` by its own mean and (unbiased) variance, as MAE's norm_pix_loss."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def reconstruction_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    region: Literal["masked", "all"] = "masked",
    norm_pix: bool = True,
) -> Tensor:
    """Mean squared error per patch, averaged over the chosen patches.

    Args:
        pred: predicted patches ``(B, L, P)``.
        target: target patches ``(B, L, P)``.
        mask: ``(B, L)`` bool, True = masked (hidden from the encoder).
        region: ``masked`` averages over masked patches only, ``all`` over every patch.
        norm_pix: normalise each target patch first.

    Returns:
        Scalar loss, computed in fp32.
    """
    pred, target = pred.float(), target.float()
    if norm_pix:
        target = normalize_patches(target)
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, L)
    if region == "all":
        return per_patch.mean()
    weights = mask.float()
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
