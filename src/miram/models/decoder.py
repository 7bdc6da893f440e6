"""One reconstruction decoder: tokens on a (gh*f, gw*f) grid -> per-patch pixels at scale f."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from miram.attention import AttentionSpec, build_attention
from miram.layers.block import Block
from miram.layers.pos_embed import sincos_2d
from miram.models.ops import upsample_tokens


@dataclass
class ScaleConfig:
    """One reconstruction scale of a masked autoencoder (MAE has one, MIRAM two or more).

    Attributes:
        factor: resolution of this scale's target relative to the encoder input (1, 2, 4, ...).
        depth: decoder blocks.
        embed_dim: decoder width.
        num_heads: decoder heads.
        mlp_ratio: feed-forward width / embed_dim.
        attention: attention backend of this decoder (exact sdpa, or nystrom/linformer/performer).
        loss_weight: weight of this scale's term in the total loss.
        loss_region: average the loss over masked patches only, or over all patches.
        upsample: token interpolation from the input grid to this scale's grid.
    """

    factor: int = 1
    depth: int = 8
    embed_dim: int = 512
    num_heads: int = 16
    mlp_ratio: float = 4.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    loss_weight: float = 1.0
    loss_region: Literal["masked", "all"] = "masked"
    upsample: Literal["nearest", "bilinear"] = "nearest"


class ScaleDecoder(nn.Module):
    """Decoder of one scale (keys ``blocks``, ``norm``, ``pred``; ``pos_embed`` is a fixed buffer).

    Args:
        config: the scale.
        grid_size: ``(gh, gw)`` of the encoder's patch grid; this decoder works on ``(gh*f, gw*f)``.
        patch_size: pixels per patch side p (the same p at every scale).
        in_chans: image channels C; the head predicts p*p*C values per patch.
    """

    def __init__(
        self, config: ScaleConfig, grid_size: tuple[int, int], patch_size: int, in_chans: int
    ) -> None:
        super().__init__()
        self.config = config
        f = config.factor
        self.input_grid = grid_size
        self.grid_size = (grid_size[0] * f, grid_size[1] * f)
        num_tokens = self.grid_size[0] * self.grid_size[1]
        d = config.embed_dim
        self.register_buffer("pos_embed", sincos_2d(d, self.grid_size)[None], persistent=True)
        self.blocks = nn.ModuleList(
            Block(
                build_attention(
                    config.attention, d, config.num_heads, seq_len=1 + num_tokens, grid_size=self.grid_size
                ),
                mlp_ratio=config.mlp_ratio,
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pred = nn.Linear(d, patch_size * patch_size * in_chans)

    pos_embed: Tensor

    def forward(self, cls: Tensor, grid: Tensor) -> Tensor:
        """Reconstruct patches at this scale.

        Args:
            cls: embedded encoder cls token ``(B, 1, Dd)``.
            grid: all tokens of the input grid, mask tokens included, raster order ``(B, gh*gw, Dd)``.

        Returns:
            Predicted patches ``(B, gh*f * gw*f, p*p*C)``.
        """
        up = upsample_tokens(grid, self.input_grid, self.config.factor, self.config.upsample)
        x = torch.cat([cls, up], dim=1) + self.pos_embed.to(grid.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]
