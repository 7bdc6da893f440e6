"""Vision Transformer encoder with official-MAE / timm state-dict names.

Grayscale by default, any ``(Hi, Wi)`` multiple of the patch size, fixed 2-D sin-cos position embeddings
computed for the actual grid, and an optional subset of visible tokens (MAE encodes only those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from miram.attention import AttentionSpec, build_attention
from miram.layers.block import Block
from miram.layers.patch_embed import PatchEmbed
from miram.layers.pos_embed import sincos_2d
from miram.models.masking import gather_tokens

Pool = Literal["cls", "mean", "mean_fc_norm"]


@dataclass
class ViTConfig:
    """ViT encoder hyperparameters (timm vocabulary)."""

    img_size: tuple[int, int] = (112, 112)  # (Hi, Wi) of the encoder input
    patch_size: int = 16
    in_chans: int = 1  # mammograms are grayscale
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    # what forward() returns: "cls" = the cls token after the final norm; "mean" = the mean of the patch
    # tokens after the final norm; "mean_fc_norm" = a LayerNorm ``fc_norm`` on the mean of the patch tokens,
    # with no final norm (MAE fine-tuning and timm's fc_norm: the encoder has ``fc_norm``, no ``norm``)
    global_pool: Pool = "cls"
    attention: AttentionSpec = field(default_factory=AttentionSpec)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(gh, gw) of the patch grid."""
        h, w = self.img_size
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {p}")
        return h // p, w // p


VIT_PRESETS: dict[str, dict[str, int]] = {
    "vit_micro": {"embed_dim": 64, "depth": 4, "num_heads": 4},
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform Linear weights and unit LayerNorms, as in MAE's initialisation."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """ViT encoder. Keys: ``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.*``, ``norm`` (or
    ``fc_norm`` with ``global_pool="mean_fc_norm"``, as in timm and MAE fine-tuning).

    Contract used by every method: :attr:`grid_size`, :attr:`num_patches`, :meth:`embed_patches`,
    :meth:`forward_features` (optionally on visible tokens only) and :meth:`forward` (pooled features).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.grid_size = c.grid_size
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = c.embed_dim
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", sincos_2d(c.embed_dim, self.grid_size)[None], persistent=True)
        dpr = torch.linspace(0, c.drop_path_rate, c.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                build_attention(
                    c.attention,
                    c.embed_dim,
                    c.num_heads,
                    qkv_bias=c.qkv_bias,
                    seq_len=1 + self.num_patches,
                    grid_size=self.grid_size,
                ),
                mlp_ratio=c.mlp_ratio,
                drop_path=dpr[i],
                norm_eps=c.norm_eps,
            )
            for i in range(c.depth)
        )
        # With fc_norm the final norm moves after the pooling (timm: norm = Identity, fc_norm = LayerNorm)
        fc_norm = c.global_pool == "mean_fc_norm"
        self.norm: nn.Module = nn.Identity() if fc_norm else nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.fc_norm: nn.Module = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if fc_norm else nn.Identity()
        self.apply(init_weights)
        nn.init.normal_(self.cls_token, std=0.02)
        pe = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(pe.view(pe.shape[0], -1))

    pos_embed: Tensor

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides biases and norms."""
        return {"cls_token"}

    def embed_patches(self, images: Tensor) -> Tensor:
        """Images ``(B, C, Hi, Wi)`` -> position-embedded patch tokens ``(B, gh*gw, D)`` (no cls)."""
        if tuple(images.shape[-2:]) != tuple(self.config.img_size):
            raise ValueError(
                f"encoder built for {tuple(self.config.img_size)} images, got {tuple(images.shape[-2:])}"
            )
        return self.patch_embed(images) + self.pos_embed[:, 1:].to(images.dtype)

    def forward_features(self, images: Tensor, ids_keep: Tensor | None = None) -> Tensor:
        """Encode images, optionally only the visible tokens.

        Args:
            images: ``(B, C, Hi, Wi)``.
            ids_keep: ``(B, n)`` indices of visible patches (raster order), or None for all.

        Returns:
            Tokens ``(B, 1 + n, D)``, cls first, after the final norm (none with ``mean_fc_norm`` pooling).
        """
        x = self.embed_patches(images)
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens of :meth:`forward_features` ``(B, 1 + n, D)`` -> ``(B, D)`` by the configured pool."""
        if self.config.global_pool == "cls":
            return tokens[:, 0]
        return self.fc_norm(tokens[:, 1:].mean(dim=1))  # fc_norm is the identity for "mean"

    def forward(self, images: Tensor) -> Tensor:
        """Pooled features ``(B, D)`` of all patches."""
        return self.pool(self.forward_features(images))
