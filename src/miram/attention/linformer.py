"""Linformer attention (Wang et al. 2020, arXiv 2006.04768) in the fused form.

Learned projections E, F (N x k) compress the *sequence* axis of keys and values,
head = softmax(Q (E^T K)^T / sqrt(d)) (F^T V); the compressed keys and values go through fused SDPA,
so the N x k score matrix is never materialised (attention.md §8.2).

Semantics follow ``linformer`` 0.2.3 (the oracle): E is shared across heads (the package projects the
merged keys before the head split, which is the same per-channel map); ``share_kv`` makes the values
the keys (V = K, not only F = E); ``one_kv_head`` computes a single K/V head broadcast to every head.
The q/k/v projection stays one ``qkv`` linear whose width follows those two options.

E and F are tied to absolute token slots, so the module refuses any other N. For another image size,
:meth:`LinformerAttention.resample_to_grid` resizes them as ``(gh, gw, k)`` maps (attention.md §3.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miram.attention.base import AttentionBackend, AttentionConfig, dropout_p
from miram.attention.registry import register_backend


@dataclass
class LinformerConfig(AttentionConfig):
    """Options of the Linformer backend (defaults: the MIRAM decoder, k = 128, one shared K = V head)."""

    proj_len: int = 128  # k, the compressed sequence length
    share_kv: bool = True  # values are the keys, one projection (package semantics)
    one_kv_head: bool = True  # a single key/value head shared by all query heads

    def __post_init__(self) -> None:
        if self.proj_len < 1:
            raise ValueError(f"proj_len must be >= 1, got {self.proj_len}")


def linformer_attention(
    q: Tensor, k: Tensor, v: Tensor, proj_k: Tensor, proj_v: Tensor, dropout: float = 0.0
) -> Tensor:
    """Sequence-compressed attention.

    Args:
        q: ``(B, H, N, Dh)``.
        k, v: ``(B, Hkv, N, Dh)`` with Hkv = H or 1 (broadcast to every head).
        proj_k, proj_v: E, F ``(N, k)``.
        dropout: dropout on the ``(N, k)`` attention probabilities.

    Returns:
        ``(B, H, N, Dh)``.
    """
    B, H, _, Dh = q.shape
    k_p = proj_k.t().to(k.dtype) @ k  # (B, Hkv, k, Dh): an O(N k Dh) GEMM per head
    v_p = k_p if proj_v is proj_k and v is k else proj_v.t().to(v.dtype) @ v
    if k_p.shape[1] != H:  # one K/V head: a stride-0 view, no copy
        # Not one head of N * H queries (nor enable_gqa): with a single (batch, head) pair the CPU flash
        # backward stalled for ~10 s with 2 threads (torch 2.13), against 0.14 s for this broadcast.
        k_p, v_p = k_p.expand(B, H, -1, Dh), v_p.expand(B, H, -1, Dh)
    return F.scaled_dot_product_attention(q, k_p, v_p, dropout_p=dropout)


@register_backend("linformer")
class LinformerAttention(AttentionBackend):
    """Linformer self-attention, O(N k) time and memory; the token count is fixed at construction.

    Needs ``seq_len`` (the ViT passes 1 + number of patches). Parameters ``proj_k`` (and ``proj_v``
    unless ``share_kv``) have shape ``(seq_len, proj_len)`` and the package's U(-1/sqrt(k), 1/sqrt(k))
    init.
    """

    config_cls = LinformerConfig
    needs_fixed_length = True
    position_dependent = True  # E/F weigh token slots
    config: LinformerConfig

    def __init__(self, dim: int, num_heads: int, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        if self.seq_len is None:
            raise ValueError("the linformer backend needs seq_len (its projections are tied to N)")
        cfg = self.config
        inner = num_heads * self.head_dim
        self.kv_heads = 1 if cfg.one_kv_head else num_heads
        kv_width = self.kv_heads * self.head_dim
        # Same name as the other backends; narrower when K/V are shared or single-headed.
        self.qkv = nn.Linear(
            dim, inner + kv_width * (1 if cfg.share_kv else 2), bias=self.qkv.bias is not None
        )
        bound = 1.0 / math.sqrt(cfg.proj_len)
        self.proj_k = nn.Parameter(torch.empty(self.seq_len, cfg.proj_len).uniform_(-bound, bound))
        self.proj_v: nn.Parameter | None = None
        if not cfg.share_kv:
            self.proj_v = nn.Parameter(torch.empty(self.seq_len, cfg.proj_len).uniform_(-bound, bound))

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project tokens ``(B, N, D)`` to q ``(B, H, N, Dh)`` and k, v ``(B, Hkv, N, Dh)`` (v is k when
        ``share_kv``)."""
        B, N, _ = x.shape
        inner, kv_width = self.num_heads * self.head_dim, self.kv_heads * self.head_dim
        # split (not slicing): its backward is one concatenation instead of zero-fill plus copies.
        widths = [inner, kv_width] if self.config.share_kv else [inner, kv_width, kv_width]
        parts = self.qkv(x).split(widths, dim=-1)
        q = parts[0].reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = parts[1].reshape(B, N, self.kv_heads, self.head_dim).transpose(1, 2)
        v = (
            k
            if self.config.share_kv
            else parts[2].reshape(B, N, self.kv_heads, self.head_dim).transpose(1, 2)
        )
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        n = q.shape[-2]
        if n != self.seq_len:
            raise ValueError(
                f"linformer projections are tied to seq_len={self.seq_len} (grid {self.grid_size}, "
                f"{self.num_prefix_tokens} prefix tokens) but got N={n}; build the model for this size or "
                "call resample_to_grid((gh, gw)) before fine-tuning at another resolution"
            )
        proj_v = self.proj_k if self.proj_v is None else self.proj_v
        return linformer_attention(q, k, v, self.proj_k, proj_v, dropout_p(self))

    @torch.no_grad()
    def resample_to_grid(self, grid_size: tuple[int, int]) -> None:
        """Resize E/F for another patch grid, for fine-tuning at another resolution.

        The rows of the prefix tokens are kept; the grid rows are viewed as a ``(gh, gw, k)`` map,
        resized bilinearly to the new ``(gh', gw')`` and scaled by ``gh gw / (gh' gw')`` so each column
        keeps its sum (a compressed key stays a weighted mean of the same magnitude). Replaces the
        parameters: build the optimizer afterwards.

        Args:
            grid_size: the new ``(gh', gw')``.
        """
        if self.grid_size is None:
            raise ValueError("resample_to_grid needs the grid_size the module was built with")
        (gh, gw), (nh, nw), p = self.grid_size, grid_size, self.num_prefix_tokens
        if self.seq_len != p + gh * gw:
            raise ValueError(f"seq_len={self.seq_len} is not {p} prefix tokens + a {gh}x{gw} grid")
        for name in ("proj_k", "proj_v"):
            old = getattr(self, name)
            if old is None:
                continue
            k = old.shape[1]
            grid = old[p:].reshape(gh, gw, k).permute(2, 0, 1)[None]  # (1, k, gh, gw)
            new = F.interpolate(grid, size=(nh, nw), mode="bilinear", align_corners=False)
            new = new[0].permute(1, 2, 0).reshape(nh * nw, k) * (gh * gw / (nh * nw))
            setattr(self, name, nn.Parameter(torch.cat([old[:p], new]), requires_grad=old.requires_grad))
        self.grid_size, self.seq_len = (nh, nw), p + nh * nw
