"""The attention seam: one constructor, one forward, capability flags.

Every backend maps tokens ``(B, N, D) -> (B, N, D)``. The q/k/v and output projections live here with
timm's names (``qkv``, ``proj``) so encoder checkpoints load and parameter counts compare; a backend
only implements :meth:`AttentionBackend.attend`, the kernel over ``(B, H, N, Dh)`` heads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class AttentionConfig:
    """Backend-specific options. Subclasses add fields; the base has none."""


class AttentionBackend(nn.Module, ABC):
    """Multi-head self-attention with a pluggable kernel.

    Args:
        dim: token width D.
        num_heads: number of heads H.
        head_dim: per-head width Dh; ``dim // num_heads`` when None.
        qkv_bias: bias on the fused q/k/v projection.
        attn_drop: dropout on attention probabilities (backends that form them) or on the kernel output.
        proj_drop: dropout after the output projection.
        seq_len: the token count N this module will see, for backends tied to a length (Linformer).
        grid_size: ``(gh, gw)`` of the patch grid behind the tokens (prefix tokens excluded), if any.
        num_prefix_tokens: tokens before the grid (the cls token).
        config: the backend's own config dataclass.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[AttentionConfig]] = AttentionConfig
    exact: ClassVar[bool] = False  # computes softmax(QK^T/sqrt(d))V up to rounding
    supports_key_padding_mask: ClassVar[bool] = False
    needs_fixed_length: ClassVar[bool] = False  # parameters tied to N (and the token order)
    can_return_attention: ClassVar[bool] = False
    # The output depends on the order of the tokens (segment landmarks, sequence convolutions, per-slot
    # projections), so shuffling tokens (MAE's visible set) changes more than the output order.
    position_dependent: ClassVar[bool] = False
    # Holds random features that a training callback redraws through :meth:`redraw_features`.
    random_features: ClassVar[bool] = False

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        seq_len: int | None = None,
        grid_size: tuple[int, int] | None = None,
        num_prefix_tokens: int = 1,
        config: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.seq_len, self.grid_size, self.num_prefix_tokens = seq_len, grid_size, num_prefix_tokens
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_cls.__name__}, got {type(self.config)}"
            )
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project tokens ``(B, N, D)`` to q, k, v, each ``(B, H, N, Dh)``."""
        B, N, _ = x.shape
        # split, not reshape + unbind: its backward writes the three gradients with one concatenation.
        q, k, v = self.qkv(x).split(self.num_heads * self.head_dim, dim=-1)
        return tuple(t.view(B, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend over tokens.

        Args:
            x: tokens ``(B, N, D)``.
            key_padding_mask: ``(B, N)`` bool, True = padding (ignored as a key). Only for backends with
                ``supports_key_padding_mask``.

        Returns:
            ``(B, N, D)``.
        """
        if key_padding_mask is not None and not self.supports_key_padding_mask:
            raise ValueError(f"attention backend '{self.name}' does not support a key padding mask")
        B, N, _ = x.shape
        q, k, v = self.split_heads(x)
        out = self.attend(q, k, v, key_padding_mask)  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))

    @abstractmethod
    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """The kernel: q, k, v ``(B, H, N, Dh)`` -> ``(B, H, N, Dh)``."""

    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Redraw random features (backends with ``random_features``); a no-op for the others.

        Called between steps by a training callback, never by ``forward``.
        """

    def extra_repr(self) -> str:
        return f"name={self.name}, dim={self.dim}, heads={self.num_heads}, head_dim={self.head_dim}"


def dropout_p(module: AttentionBackend) -> float:
    """Attention dropout to use now: zero in eval mode."""
    return module.attn_drop if module.training else 0.0


def build_config(config_cls: type[AttentionConfig], options: dict[str, Any], backend: str) -> AttentionConfig:
    """Build a backend config from a plain dict, rejecting unknown keys with their names."""
    fields = set(getattr(config_cls, "__dataclass_fields__", {}))
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for attention backend '{backend}'; known: {sorted(fields)}"
        )
    return config_cls(**options)


def padding_to_attn_mask(key_padding_mask: Tensor) -> Tensor:
    """``(B, N)`` True = padding -> SDPA boolean mask ``(B, 1, 1, N)``, True = attend."""
    return (~key_padding_mask.bool())[:, None, None, :]


__all__ = [
    "AttentionBackend",
    "AttentionConfig",
    "build_config",
    "dropout_p",
    "padding_to_attn_mask",
    "torch",
]
