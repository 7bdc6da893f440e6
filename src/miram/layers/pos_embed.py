"""Fixed 2-D sine-cosine position embeddings for any (gh, gw) grid, and grid resampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """``(M,)`` positions -> ``(M, dim)``: half sines, half cosines over geometric frequencies."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.double().reshape(-1, 1) * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, grid_size: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Position embedding ``(num_prefix_tokens + gh*gw, dim)`` in raster order; prefix rows are zero.

    The first half of the channels encodes the column (x), the second half the row (y), as in MAE.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid_size
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, xs.flatten()), sincos_1d(dim // 2, ys.flatten())], dim=1)
    return torch.cat([torch.zeros(num_prefix_tokens, dim), emb], dim=0)


def resample_pos_embed(
    pos_embed: Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
) -> Tensor:
    """Resample a learned or fixed position table ``(1, P + gh*gw, D)`` to another grid.

    The grid is reshaped with its true (gh, gw), never a square root, so equal token counts on different
    grids are resampled correctly.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    gh, gw = old_grid
    if grid.shape[1] != gh * gw:
        raise ValueError(f"position table has {grid.shape[1]} grid tokens, grid {old_grid} needs {gh * gw}")
    grid = grid.reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
