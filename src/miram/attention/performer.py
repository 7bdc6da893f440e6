"""Performer / FAVOR+ attention (Choromanski et al., ICLR 2021, arXiv 2009.14794) in a fused form.

With x^ = x Dh^-1/4 and m positive orthogonal random features w_j, FAVOR+ estimates softmax attention
by phi(x)_j ~ exp(w_j . x^ - |x^|^2 / 2). Regrouping its sums gives two softmaxes (attention.md §8.3):

1. M = SDPA(W, K^, V) with key bias -|k^_n|^2/2           (m feature queries over all N keys)
   l_j = logsumexp_n(w_j . k^_n - |k^_n|^2/2)
2. out = SDPA(Q^, W, M) with key bias l_j                 (N queries over the m feature keys)

Both biases ride in one extra head channel (1 on the query side), so the N-sized products run in
fused kernels without an attention mask and nothing of size N x m is ever formed. l_j, which the
public SDPA does not return, comes out of step 1 through a sentinel key (see the code). The query
factor exp(-|q^|^2/2)/sqrt(m) cancels in the normalisation.

Deviations from ``performer-pytorch`` 1.1.4, on purpose:

- no +1e-4 added to the features (it does not factor into a softmax; the oracle tests calibrate it,
  and :func:`favor_attention` with ``eps=1e-4`` reproduces the package);
- a key padding mask removes keys from the normaliser too (the package only zeroes their values);
- features are a persistent buffer redrawn only by :meth:`PerformerAttention.redraw_features`, from
  a training callback, never inside ``forward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from miram.attention.base import AttentionBackend, AttentionConfig, dropout_p
from miram.attention.registry import register_backend

FeatureNorm = Literal["chi", "sqrt_dim"]


@dataclass
class PerformerConfig(AttentionConfig):
    """Options of the Performer backend."""

    num_features: int | None = None  # m; None = int(Dh ln Dh), 110 for Dh = 32 (package default)
    feature_norm: FeatureNorm = "chi"  # row norms: chi-distributed (Gaussian-like) or exactly sqrt(Dh)

    def __post_init__(self) -> None:
        if self.num_features is not None and self.num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {self.num_features}")
        if self.feature_norm not in ("chi", "sqrt_dim"):
            raise ValueError(f"unknown feature_norm '{self.feature_norm}'")


def orthogonal_features(
    num_features: int, dim: int, generator: torch.Generator | None = None, norm: FeatureNorm = "chi"
) -> Tensor:
    """Random feature matrix with exactly orthogonal rows inside each block of ``dim`` rows.

    Args:
        num_features: m rows; blocks beyond the first ``dim`` are independent.
        dim: head width Dh.
        generator: CPU generator for reproducible (and rank-synchronised) draws.
        norm: ``"chi"`` gives the rows the norms of Gaussian vectors, ``"sqrt_dim"`` norm sqrt(Dh).

    Returns:
        ``(m, Dh)`` fp32 on the CPU.
    """
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        gauss = torch.randn(dim, dim, generator=generator)
        ortho, _ = torch.linalg.qr(gauss)  # orthonormal columns
        blocks.append(ortho.t())
    rows = torch.cat(blocks)[:num_features]
    if norm == "chi":
        norms = torch.randn(num_features, dim, generator=generator).norm(dim=1)
    else:
        norms = torch.full((num_features,), math.sqrt(dim))
    return rows * norms[:, None]


def performer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    features: Tensor,
    key_padding_mask: Tensor | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """FAVOR+ with positive features, fused two-stage form (no stabiliser epsilon).

    Args:
        q, k, v: ``(B, H, N, Dh)``.
        features: ``(m, Dh)`` random features shared by all heads.
        key_padding_mask: ``(B, N)`` True = padding; padded keys leave numerator and normaliser.
        dropout: dropout on the query-to-feature probabilities.

    Returns:
        ``(B, H, N, Dh)`` in q's dtype.
    """
    B, H, N, Dh = q.shape
    # x^ = x Dh^-1/4 on both sides: fold the query/key scale into the features (w~ = w Dh^-1/4, so
    # w . k^ = w~ . k) and the squared norm (|k^|^2 = |k|^2 / sqrt(Dh)); q and k are never rescaled.
    ctype = torch.promote_types(q.dtype, torch.float32)
    # Step 1 runs in fp32 when the activations are fp16: its sentinel weight o_j (below) is e^-(spread
    # of the scores over n), which leaves fp16's range (~e^-16.6) for q/k std ~3 and was then clamped
    # to a wrong value. It is the m x N stage (m ~ 110 << N), so the extra cost is small; bf16 has
    # fp32's range and keeps the activation dtype.
    sd = ctype if q.dtype == torch.float16 else q.dtype
    w = features.to(ctype) * Dh**-0.25  # (m, Dh)
    key_bias = -0.5 * Dh**-0.5 * k.to(ctype).pow(2).sum(-1)  # (B, H, N), >= fp32
    q1 = torch.cat([w, w.new_ones(w.shape[0], 1)], dim=-1)  # (m, Dh + 1): [w~_j, 1]
    valid = None if key_padding_mask is None else ~key_padding_mask.bool()

    # A "sentinel" key N+1 recovers l_j from the softmax itself: scored c_j <= l_j and carrying value
    # e_{Dh+1}, it receives weight o_j = e^c_j / (e^l_j + e^c_j), so l_j = c_j + log(1 - o_j) - log(o_j)
    # and the real keys' weights are scaled by (1 - o_j) >= 1/2. c_j = mean_n(scores) + log(N) (Jensen)
    # is linear in [w~_j, 1], so the sentinel is the mean augmented key plus log N on the bias channel.
    # l_j does not depend on c_j, so the sentinel is detached; its gradient flows through o_j.
    with torch.no_grad():
        log_n: Tensor | float
        if valid is None:
            mean_k, mean_b, log_n = k.to(ctype).mean(-2), key_bias.mean(-1), math.log(N)
        else:
            wts = valid[:, None, :].to(ctype)  # (B, 1, N)
            count = wts.sum(-1).clamp_min(1.0)  # (B, 1)
            mean_k = (wts[..., None] * k.to(ctype)).sum(-2) / count[..., None]
            mean_b, log_n = (wts * key_bias).sum(-1) / count, torch.log(count)
        sentinel = torch.cat([mean_k, (mean_b + log_n)[..., None]], dim=-1).to(sd)  # (B, H, Dh + 1)
        # Score the sentinel from the values SDPA will see (rounded to the stage dtype).
        c = sentinel.to(ctype) @ q1.to(sd).to(ctype).t()  # (B, H, m)

    # 1. R = softmax over [keys, sentinel] of [w~_j, 1] . [k_n, bias_n], with values [v_n, 0] and [0, 1].
    k1 = k.new_empty(B, H, N + 1, Dh + 1, dtype=sd)
    k1[:, :, :N, :Dh] = k
    k1[:, :, :N, Dh] = key_bias.to(sd)
    k1[:, :, N] = sentinel
    v1 = v.new_zeros(B, H, N + 1, Dh + 1, dtype=sd)
    v1[:, :, :N, :Dh] = v
    v1[:, :, N, Dh] = 1.0
    mask = None if valid is None else F.pad(valid, (0, 1), value=True)[:, None, None, :]
    q1_b = q1.to(sd).expand(B, H, -1, -1)
    with torch.autocast(device_type=q.device.type, enabled=False):  # in sd, whatever the autocast dtype
        r = F.scaled_dot_product_attention(q1_b, k1, v1, attn_mask=mask, scale=1.0)  # (B, H, m, Dh + 1)

    with torch.autocast(device_type=q.device.type, enabled=False):
        o = r[..., Dh].to(ctype).clamp(torch.finfo(ctype).tiny, 0.5)  # <= 1/2 by Jensen, up to rounding
        lse = c + torch.log1p(-o) - torch.log(o)  # (B, H, m)
        lse = lse - lse.amax(-1, keepdim=True).detach()  # shift-invariant; keeps low-precision digits
        m1 = (r / (1.0 - o)[..., None].to(r.dtype)).to(q.dtype)  # M_j in the first Dh channels

    # 2. out = softmax_j(w~_j . q_i + l_j) M.
    q2 = torch.cat([q, q.new_ones(B, H, N, 1)], dim=-1)  # (B, H, N, Dh + 1)
    k2 = torch.cat([q1.to(q.dtype)[..., :Dh].expand(B, H, -1, -1), lse.to(q.dtype)[..., None]], dim=-1)
    out = F.scaled_dot_product_attention(q2, k2, m1, scale=1.0, dropout_p=dropout)
    return out[..., :Dh]


def favor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    features: Tensor,
    key_padding_mask: Tensor | None = None,
    eps: float = 0.0,
) -> Tensor:
    """Unfused FAVOR+ (materialises the N x m features): the test reference for the fused form.

    With ``eps=1e-4`` and no mask it reproduces ``performer-pytorch``'s softmax kernel (stabilisers:
    per-query max, per-(batch, head) key max, both detached). Padded keys are removed here.

    Args:
        q, k, v: ``(B, H, N, Dh)``.
        features: ``(m, Dh)``.
        key_padding_mask: ``(B, N)`` True = padding.
        eps: constant added to every feature after the stabiliser.

    Returns:
        ``(B, H, N, Dh)``.
    """
    Dh, m = q.shape[-1], features.shape[0]
    scale = Dh**-0.25
    q_s, k_s = q * scale, k * scale
    u_q, u_k = q_s @ features.t(), k_s @ features.t()  # (B, H, N, m)
    sq_q, sq_k = 0.5 * q_s.pow(2).sum(-1, keepdim=True), 0.5 * k_s.pow(2).sum(-1, keepdim=True)
    phi_q = ((u_q - sq_q - u_q.amax(-1, keepdim=True).detach()).exp() + eps) * m**-0.5
    phi_k = ((u_k - sq_k - u_k.amax((-1, -2), keepdim=True).detach()).exp() + eps) * m**-0.5
    if key_padding_mask is not None:
        phi_k = phi_k.masked_fill(key_padding_mask.bool()[:, None, :, None], 0.0)
    context = phi_k.transpose(-1, -2) @ v  # (B, H, m, Dh)
    normaliser = phi_q @ phi_k.sum(-2)[..., None]  # (B, H, N, 1)
    return (phi_q @ context) / normaliser


@register_backend("performer")
class PerformerAttention(AttentionBackend):
    """FAVOR+ attention with positive orthogonal random features; any N, O(N m) time, O(N) memory.

    The features live in the persistent buffer ``features`` ``(m, Dh)`` (checkpointed) and change only
    through :meth:`redraw_features`, which a training callback calls on a schedule.
    """

    config_cls = PerformerConfig
    supports_key_padding_mask = True
    random_features = True
    config: PerformerConfig
    features: Tensor

    def __init__(self, dim: int, num_heads: int, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        m = self.config.num_features or int(self.head_dim * math.log(self.head_dim))
        self.num_features = m
        self.register_buffer(
            "features", orthogonal_features(m, self.head_dim, None, self.config.feature_norm)
        )

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw new features in place (same device and dtype); pass a seeded CPU generator so every
        rank draws the same ones."""
        new = orthogonal_features(self.num_features, self.head_dim, generator, self.config.feature_norm)
        self.features.copy_(new)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return performer_attention(q, k, v, self.features, key_padding_mask, dropout_p(self))
