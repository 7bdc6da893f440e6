"""Exact attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from miram.attention.base import AttentionBackend, AttentionConfig, dropout_p, padding_to_attn_mask
from miram.attention.registry import register_backend


@dataclass
class SDPAConfig(AttentionConfig):
    """Exact fused attention has no options."""


@register_backend("sdpa")
class SDPAAttention(AttentionBackend):
    """softmax(QK^T / sqrt(Dh)) V with PyTorch's fused kernels; O(N) memory on flash-capable devices."""

    config_cls = SDPAConfig
    exact = True
    supports_key_padding_mask = True

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        mask = None if key_padding_mask is None else padding_to_attn_mask(key_padding_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p(self))
