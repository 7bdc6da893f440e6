"""Pure tensor operations on patches and token grids. Never assume a square grid."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images ``(B, C, Hi, Wi)`` -> patches ``(B, gh*gw, p*p*C)``, raster order, pixel-major then channel."""
    B, C, Hi, Wi = images.shape
    p = patch_size
    if Hi % p or Wi % p:
        raise ValueError(f"image size {(Hi, Wi)} is not a multiple of the patch size {p}")
    gh, gw = Hi // p, Wi // p
    x = images.reshape(B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, gh * gw, p * p * C)


def unpatchify(patches: Tensor, patch_size: int, grid_size: tuple[int, int], in_chans: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, gh*gw, p*p*C)`` -> ``(B, C, gh*p, gw*p)``."""
    B, L, _ = patches.shape
    gh, gw = grid_size
    p, C = patch_size, in_chans
    if L != gh * gw:
        raise ValueError(f"{L} patches do not fill a {gh}x{gw} grid")
    x = patches.reshape(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(B, C, gh * p, gw * p)


def upsample_tokens(tokens: Tensor, grid_size: tuple[int, int], factor: int, mode: str = "nearest") -> Tensor:
    """Token interpolation in 2-D: ``(B, gh*gw, D)`` -> ``(B, gh*f * gw*f, D)``.

    With ``nearest`` every token becomes an f x f block of the finer grid (the paper's 2-D form, not a 1-D
    repeat along the sequence).
    """
    if factor == 1:
        return tokens
    B, L, D = tokens.shape
    gh, gw = grid_size
    grid = tokens.transpose(1, 2).reshape(B, D, gh, gw)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    grid = F.interpolate(grid, scale_factor=factor, mode=mode, **kwargs)
    return grid.flatten(2).transpose(1, 2)


def upsample_mask(mask: Tensor, grid_size: tuple[int, int], factor: int) -> Tensor:
    """Patch mask ``(B, gh*gw)`` -> ``(B, gh*f * gw*f)``: each cell becomes an f x f block."""
    if factor == 1:
        return mask
    return upsample_tokens(mask[..., None].float(), grid_size, factor, "nearest")[..., 0] > 0.5


def area_downsample(images: Tensor, factor: int) -> Tensor:
    """Average f x f pixel blocks: ``(B, C, Hi, Wi)`` -> ``(B, C, Hi/f, Wi/f)``."""
    if factor == 1:
        return images
    return F.avg_pool2d(images, kernel_size=factor, stride=factor)
