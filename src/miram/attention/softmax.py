"""Plain materialised softmax attention: the ground truth for tests, and the way to get attention maps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from miram.attention.base import AttentionBackend, AttentionConfig, dropout_p
from miram.attention.registry import register_backend


@dataclass
class SoftmaxConfig(AttentionConfig):
    """The reference has no options."""


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Exact attention, computed in fp32.

    Args:
        q, k, v: ``(B, H, N, Dh)``.
        key_padding_mask: ``(B, N)`` True = padding.

    Returns:
        output ``(B, H, N, Dh)`` in q's dtype, and probabilities ``(B, H, N, N)`` in fp32.
    """
    # autocast would run the matmuls in its low precision despite the .float() (fp16 autocast: 10x the
    # gradient error of fp16 inputs), so it is off here.
    with torch.autocast(q.device.type, enabled=False):
        scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
        probs = scores.softmax(dim=-1)
        return (probs @ v.float()).to(q.dtype), probs


@register_backend("softmax")
class SoftmaxAttention(AttentionBackend):
    """Exact attention that materialises the N x N map; :meth:`attention_maps` returns it."""

    config_cls = SoftmaxConfig
    exact = True
    supports_key_padding_mask = True
    can_return_attention = True

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        out, probs = softmax_attention(q, k, v, key_padding_mask)
        if self.training and self.attn_drop > 0:
            probs = torch.nn.functional.dropout(probs, dropout_p(self))
            with torch.autocast(q.device.type, enabled=False):
                out = (probs @ v.float()).to(q.dtype)
        return out

    @torch.no_grad()
    def attention_maps(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Attention probabilities ``(B, H, N, N)`` for tokens ``x`` ``(B, N, D)``."""
        q, k, _ = self.split_heads(x)
        return softmax_attention(q, k, k, key_padding_mask)[1]
