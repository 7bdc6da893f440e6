from __future__ import annotations

from typing import Any

from miram.attention import AttentionSpec
from miram.models.decoder import ScaleConfig
from miram.models.masked_autoencoder import MaskedAutoencoderConfig
from miram.models.vit import ViTConfig


def tiny_config(factors: tuple[int, ...] = (1,), **kwargs: Any) -> MaskedAutoencoderConfig:
    """Grayscale, non-square (64 x 32 input, 8 x 4 grid), tiny widths."""
    encoder = ViTConfig(img_size=(64, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)
    scales = [
        ScaleConfig(
            factor=f,
            depth=1,
            embed_dim=16,
            num_heads=2,
            loss_region="masked" if f == 1 else "all",
            attention=AttentionSpec("sdpa" if f == 1 else "nystrom", {} if f == 1 else {"num_landmarks": 8}),
        )
        for f in factors
    ]
    return MaskedAutoencoderConfig(encoder=encoder, scales=scales, **kwargs)
