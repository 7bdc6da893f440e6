"""Pre-LN transformer block that takes an already built attention backend (timm names)."""

from __future__ import annotations

from torch import Tensor, nn

from miram.attention import AttentionBackend
from miram.layers.drop_path import DropPath
from miram.layers.mlp import Mlp


class Block(nn.Module):
    """x + attn(norm1(x)); x + mlp(norm2(x)), with optional stochastic depth."""

    def __init__(
        self,
        attn: AttentionBackend,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        dim = attn.dim
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``(B, N, D) -> (B, N, D)``."""
        x = x + self.drop_path(self.attn(self.norm1(x), key_padding_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))
