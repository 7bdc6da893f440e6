"""Nyström attention (Xiong et al., AAAI 2021, arXiv 2102.03902) in the fused form.

softmax(QK^T/sqrt(d)) V is approximated by F A^+ B V with landmarks Q~, K~ (means of m contiguous
segments of tokens): F = softmax(Q K~^T), A = softmax(Q~ K~^T), B = softmax(Q~ K^T). By associativity
the output is computed as (attention.md §8.1)

1. G = SDPA(Q~, K, V) = B V             (m landmark queries over all N keys)
2. Z = pinv(A), iterative               (m x m, in fp32, or float64 for float64 inputs; autocast
                                         disabled: the iteration diverges in bf16)
3. W = Z G                              (m x Dh, the same dtype as Z)
4. out = SDPA(Q, K~, W) = F Z B V       (N queries over m landmark keys)

so no N x m matrix is ever materialised and both N-sized products run in fused kernels.

Deviations from ``nystrom-attention`` 0.0.14 (each has a parity option used by the oracle tests):

- Landmarks use unequal segments (mlpen T2T-ViT / xformers) instead of zero-padding the front to a
  multiple of m; the package's padding leaks exp(0) weights into the result when no mask is given.
  ``landmark_layout="pad_front_masked"`` reproduces the package called with an all-True mask.
- The pseudo-inverse starts from A^T / (max row sum * max column sum) per matrix; the package takes
  the maxima over the whole (B, H, m, m) batch, which couples batch items. ``pinv_init="global"``.
- Landmarks with no valid token (key padding) are dropped (zero rows and columns of A, masked in F);
  the package keeps them as uniform rows. The parity layout reproduces the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miram.attention.base import AttentionBackend, AttentionConfig, dropout_p
from miram.attention.registry import register_backend
from miram.attention.token_conv import token_conv_residual

LandmarkLayout = Literal["unequal_segments", "pad_front_masked"]
PinvInit = Literal["per_matrix", "global"]


@dataclass
class NystromConfig(AttentionConfig):
    """Options of the Nyström backend (defaults: the MIRAM decoder settings)."""

    num_landmarks: int = 64  # m; "64 landmarks is often sufficient" (paper)
    pinv_iterations: int = 6  # truncated on purpose: an exact pinv is far worse (attention.md §2.4)
    conv_kernel: int | None = 33  # odd length of the depth-wise residual conv on V; 0 / None = none
    landmark_layout: LandmarkLayout = "unequal_segments"  # "pad_front_masked": package parity
    pinv_init: PinvInit = "per_matrix"  # "global": package parity (batch-coupled)

    def __post_init__(self) -> None:
        if self.num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {self.num_landmarks}")
        if self.pinv_iterations < 0:
            raise ValueError(f"pinv_iterations must be >= 0, got {self.pinv_iterations}")
        if self.conv_kernel and self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (same-length output), got {self.conv_kernel}")
        if self.landmark_layout not in ("unequal_segments", "pad_front_masked"):
            raise ValueError(f"unknown landmark_layout '{self.landmark_layout}'")
        if self.pinv_init not in ("per_matrix", "global"):
            raise ValueError(f"unknown pinv_init '{self.pinv_init}'")


def iterative_pinv(a: Tensor, iterations: int = 6, init: PinvInit = "per_matrix") -> Tensor:
    """Iterative Moore-Penrose pseudo-inverse (paper Lemma 1, after Razavi et al. 2014).

    Args:
        a: ``(..., m, m)``; rows and columns that are entirely zero stay zero in the result, so a
            zero-padded matrix gives the padded inverse of the smaller one.
        iterations: Z_{j+1} = Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))) / 4 steps.
        init: ``"per_matrix"``: Z_0 = A^T / (max row sum * max column sum) of each matrix;
            ``"global"``: the maxima over the whole tensor (the package's batch-coupled choice).

    Returns:
        ``(..., m, m)`` approximate pseudo-inverse.
    """
    abs_a = a.abs()
    rows, cols = abs_a.sum(-1), abs_a.sum(-2)  # (..., m)
    if init == "global":
        denom = rows.max() * cols.max()
    else:
        denom = (rows.amax(-1) * cols.amax(-1))[..., None, None]
    z = a.transpose(-1, -2) / denom
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def _segment_sums(x: Tensor, m: int) -> Tensor:
    """Sums of x ``(..., N, C)`` over m contiguous segments: the first ones hold N // m rows, the last
    N % m hold one more. Returns ``(..., m, C)``."""
    n = x.shape[-2]
    s, r = divmod(n, m)
    cut = (m - r) * s
    short = x[..., :cut, :].unflatten(-2, (m - r, s)).sum(-2)
    if r == 0:
        return short
    long = x[..., cut:, :].unflatten(-2, (r, s + 1)).sum(-2)
    return torch.cat([short, long], dim=-2)


def nystrom_landmarks(
    q: Tensor, k: Tensor, num_landmarks: int, layout: LandmarkLayout, key_valid: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Segment-mean landmarks.

    Args:
        q, k: ``(B, H, N, Dh)``.
        num_landmarks: m; the unequal layout needs m <= N.
        layout: ``"unequal_segments"`` or ``"pad_front_masked"`` (front zero padding to a multiple of
            m, pads excluded from the means).
        key_valid: ``(B, N)`` True = real token, or None.

    Returns:
        q~, k~ ``(B, H, m, Dh)`` and landmark validity ``(B, m)`` (None when every landmark is valid
        by construction).
    """
    n, m = q.shape[-2], num_landmarks
    pad = math.ceil(n / m) * m - n if layout == "pad_front_masked" else 0
    if key_valid is None and pad == 0:
        s, r = divmod(n, m)
        if r == 0:  # one reshape: every segment holds s tokens
            # sum, then scale the small result: the backward of sum is a stride-0 expand, where mean's
            # backward writes an N-sized quotient (a full pass over q and k in memory at large N)
            return q.unflatten(-2, (m, s)).sum(-2) / s, k.unflatten(-2, (m, s)).sum(-2) / s, None
        sizes = torch.tensor([s] * (m - r) + [s + 1] * r, device=q.device, dtype=q.dtype)[:, None]
        return _segment_sums(q, m) / sizes, _segment_sums(k, m) / sizes, None
    valid = torch.ones(q.shape[0], n, dtype=torch.bool, device=q.device) if key_valid is None else key_valid
    w = valid[:, None, :, None].to(q.dtype)  # (B, 1, N, 1)
    qw, kw = q * w, k * w
    if pad:
        # Front padding as the package does; pads count as invalid tokens.
        qw, kw, w = (F.pad(t, (0, 0, pad, 0)) for t in (qw, kw, w))
        counts = w.unflatten(-2, (m, -1)).sum(-2)  # (B, 1, m, 1)
        q_sum, k_sum = qw.unflatten(-2, (m, -1)).sum(-2), kw.unflatten(-2, (m, -1)).sum(-2)
        eps = 1e-8  # the package's masked-mean divisor is count + 1e-8
        return q_sum / (counts + eps), k_sum / (counts + eps), counts[:, 0, :, 0] > 0
    counts = _segment_sums(w, m)
    denom = counts.clamp_min(1.0)
    return _segment_sums(qw, m) / denom, _segment_sums(kw, m) / denom, counts[:, 0, :, 0] > 0


def nystrom_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_landmarks: int = 64,
    pinv_iterations: int = 6,
    pinv_init: PinvInit = "per_matrix",
    layout: LandmarkLayout = "unequal_segments",
    key_padding_mask: Tensor | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """Nyström approximation of softmax attention, without the conv residual (fused, §8.1).

    Args:
        q, k, v: ``(B, H, N, Dh)``.
        num_landmarks: m; with the unequal layout and m > N every token is its own landmark.
        pinv_iterations: steps of :func:`iterative_pinv`.
        pinv_init: its initialisation.
        layout: landmark segments, see :func:`nystrom_landmarks`.
        key_padding_mask: ``(B, N)`` True = padding; padded keys are removed.
        dropout: dropout on the query-to-landmark probabilities F.

    Returns:
        ``(B, H, N, Dh)`` in q's dtype.
    """
    n = q.shape[-2]
    m = min(num_landmarks, n) if layout == "unequal_segments" else num_landmarks
    key_valid = None if key_padding_mask is None else ~key_padding_mask.bool()
    q_l, k_l, land_valid = nystrom_landmarks(q, k, m, layout, key_valid)  # (B, H, m, Dh)

    # 1. G = B V: the landmark queries over all N keys.
    key_mask = None if key_valid is None else key_valid[:, None, None, :]
    g = F.scaled_dot_product_attention(q_l, k, v, attn_mask=key_mask)  # (B, H, m, Dh)
    uniform_invalid = layout == "pad_front_masked"
    if uniform_invalid and land_valid is not None:
        # The package's all-padding landmarks (q~ = 0) weigh all N' = N + pad keys uniformly, pads
        # having v = 0; SDPA averaged over the valid keys only, so rescale to sum(v) / N'.
        n_valid = n if key_valid is None else key_valid.sum(-1).to(g.dtype)[:, None, None, None]
        n_padded = math.ceil(n / m) * m
        g = torch.where(land_valid[:, None, :, None], g, g * (n_valid / n_padded))

    # 2.-3. A, Z and W = Z G in at least fp32 (float64 inputs stay float64): A is ill-conditioned and the
    # iteration diverges in low precision.
    block = torch.promote_types(torch.float32, q.dtype)
    with torch.autocast(device_type=q.device.type, enabled=False):
        scores = (q_l.to(block) @ k_l.to(block).transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, m, m)
        if land_valid is not None:
            pair = land_valid[:, None, :, None] & land_valid[:, None, None, :]
            # A finite fill keeps fully masked rows uniform (not NaN), as in the package.
            a = scores.masked_fill(~pair, -torch.finfo(block).max).softmax(-1)
            if not uniform_invalid:  # drop invalid landmarks: zero rows and columns of A
                a = a.masked_fill(~land_valid[:, None, :, None], 0.0)
        else:
            a = scores.softmax(-1)
        z = iterative_pinv(a, pinv_iterations, pinv_init)
        w = z @ g.to(block)  # (B, H, m, Dh)

    # 4. out = F W: all N queries over the m landmark keys.
    land_mask = None if land_valid is None else land_valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k_l, w.to(q.dtype), attn_mask=land_mask, dropout_p=dropout)


@register_backend("nystrom")
class NystromAttention(AttentionBackend):
    """Nyström attention with a depth-wise conv residual on V, O(N m) time and O(N) memory.

    With the default unequal segments and N <= num_landmarks every segment would hold a single token,
    F = A = B = S and the truncated pseudo-inverse only approximates S at no saving, so the module then
    computes exact attention (SDPA), plus the conv residual. The parity layout never falls back.
    """

    config_cls = NystromConfig
    supports_key_padding_mask = True
    position_dependent = True  # segment landmarks and the sequence conv follow token order
    config: NystromConfig

    def __init__(self, dim: int, num_heads: int, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        kernel = self.config.conv_kernel
        # One length-k filter per head, shared across channels, as in the paper (Conv2d over (N, Dh)).
        self.res_conv: nn.Conv2d | None = (
            nn.Conv2d(
                num_heads, num_heads, (kernel, 1), padding=(kernel // 2, 0), groups=num_heads, bias=False
            )
            if kernel
            else None
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        cfg = self.config
        n = q.shape[-2]
        if cfg.landmark_layout == "unequal_segments" and n <= cfg.num_landmarks:
            mask = None if key_padding_mask is None else ~key_padding_mask.bool()[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p(self))
        else:
            out = nystrom_attention(
                q,
                k,
                v,
                cfg.num_landmarks,
                cfg.pinv_iterations,
                cfg.pinv_init,
                cfg.landmark_layout,
                key_padding_mask,
                dropout_p(self),
            )
        if self.res_conv is not None:
            if key_padding_mask is not None:  # padded tokens must not leak in through the conv either
                v = v.masked_fill(key_padding_mask.bool()[:, None, :, None], 0.0)
            out = token_conv_residual(out, v, self.res_conv.weight)
        return out
