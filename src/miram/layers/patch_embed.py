"""Non-overlapping patch embedding by a strided convolution (timm name ``proj``)."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Images ``(B, C, Hi, Wi)`` -> tokens ``(B, gh*gw, D)`` in raster order."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        # Initialise like a Linear layer over the flattened patch (MAE, section A.1).
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)
