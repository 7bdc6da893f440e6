"""MAE-style per-sample random masking as pure index functions.

Convention everywhere: ``mask`` is bool with True = masked (removed), ``ids_keep`` indexes the kept tokens,
``ids_restore`` unshuffles a (kept ++ masked) sequence back to raster order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Masking(NamedTuple):
    """Result of :func:`random_masking`."""

    ids_keep: Tensor  # (B, n_keep) long
    mask: Tensor  # (B, L) bool, True = masked
    ids_restore: Tensor  # (B, L) long


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Tokens kept by MAE's rule ``int(L * (1 - r))``."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(num_tokens * (1 - mask_ratio))


def random_masking(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Masking:
    """Shuffle each sample's tokens by random noise and keep the first ``int(L*(1-r))``.

    Args:
        batch_size: B.
        num_tokens: L, tokens per sample (grid only, no cls).
        mask_ratio: fraction r of tokens to remove.
        device: where the indices live.
        generator: optional RNG for reproducible masks (visualisation, tests).
        noise: optional ``(B, L)`` scores; lower scores are kept. Overrides the RNG.
    """
    keep = num_visible(num_tokens, mask_ratio)
    if noise is None:
        noise = torch.rand(batch_size, num_tokens, generator=generator, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=noise.device)
    mask[:, :keep] = False
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_keep, mask, ids_restore)


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """Select tokens ``(B, L, D)`` at ``ids`` ``(B, n)`` -> ``(B, n, D)``."""
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def unshuffle_with_mask_tokens(visible: Tensor, mask_token: Tensor, ids_restore: Tensor) -> Tensor:
    """Append mask tokens after the visible ``(B, n, D)`` and restore raster order -> ``(B, L, D)``."""
    B, n, D = visible.shape
    L = ids_restore.shape[1]
    filler = mask_token.to(visible.dtype).expand(B, L - n, D)
    return gather_tokens(torch.cat([visible, filler], dim=1), ids_restore)
