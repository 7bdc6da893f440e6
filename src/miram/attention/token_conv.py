"""Depth-wise convolution along the tokens, added to an attention output: Nyström's residual branch.

``out = attn + conv(v)`` where head h filters its values with its own length-K kernel along N
(the same filter for every channel of the head), zero-padded at both ends. ``nn.Conv2d`` computes
the same thing with a (K, 1) kernel, but on a CPU its backward is slow for strided ``v`` and grows
faster than N (16 heads of 32, K = 33, 2 cores: 17 ms at 4,096 tokens, 224 ms at 16,384), so this version
works on contiguous chunks of the sequence (each with a K // 2 halo, in cache) and fuses the add with
the layout change the output projection needs: the result is a ``(B, H, N, Dh)`` view of a contiguous
``(B, N, H, Dh)`` tensor, so merging the heads afterwards is free.

Shapes: ``attn`` and ``v`` ``(B, H, N, Dh)``, ``weight`` ``(H, 1, K, 1)`` (the ``nn.Conv2d`` layout, so
checkpoints keep their parameter); returns ``(B, H, N, Dh)`` in v's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight

# Tokens per chunk on a CPU: 16 heads x 32 channels x 1024 tokens of fp32 is 2 MB, about one core's
# L2. Other devices take the whole sequence at once (a GPU's convolution has no such cliff, and each
# chunk would cost kernel launches).
CPU_CHUNK_TOKENS = 1024


def _chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def _with_halo(x: Tensor, start: int, end: int, half: int) -> Tensor:
    """Tokens ``[start - half, end + half)`` of x ``(B, H, N, Dh)``, zeros beyond the ends, contiguous."""
    n = x.shape[-2]
    lo, hi = max(start - half, 0), min(end + half, n)
    return F.pad(x[:, :, lo:hi], (0, 0, half - (start - lo), half - (hi - end)))


def _conv_into(out_bnhd: Tensor, x: Tensor, weight: Tensor, add: Tensor | None, chunk: int) -> None:
    """out[:, n] = (add + conv(x))[:, :, n] chunk by chunk; ``out_bnhd`` is ``(B, N, H, Dh)``."""
    half, heads = weight.shape[2] // 2, weight.shape[0]
    for start, end in _chunks(x.shape[-2], chunk):
        y = F.conv2d(_with_halo(x, start, end, half), weight, groups=heads)  # (B, H, end - start, Dh)
        if add is not None:
            y = y + add[:, :, start:end]
        out_bnhd[:, start:end] = y.transpose(1, 2)


class _TokenConvResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, attn: Tensor, v: Tensor, weight: Tensor, chunk: int) -> Tensor:
        w = weight.to(v.dtype)
        B, H, N, Dh = v.shape
        out = v.new_empty(B, N, H, Dh)
        _conv_into(out, v, w, attn.to(v.dtype), chunk)
        ctx.save_for_backward(v, w)
        ctx.chunk, ctx.weight_dtype, ctx.attn_dtype = chunk, weight.dtype, attn.dtype
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        v, w = ctx.saved_tensors
        grad = grad.to(v.dtype)
        grad_v = grad_w = None
        half, heads = w.shape[2] // 2, w.shape[0]
        if ctx.needs_input_grad[1]:
            # The adjoint of a correlation is the correlation with the reversed kernel.
            grad_v = v.new_empty(v.shape[0], v.shape[2], v.shape[1], v.shape[3])
            _conv_into(grad_v, grad, w.flip(2), None, ctx.chunk)
            grad_v = grad_v.transpose(1, 2)
        if ctx.needs_input_grad[2]:
            grad_w = torch.zeros(w.shape, dtype=torch.promote_types(w.dtype, torch.float32), device=w.device)
            for start, end in _chunks(v.shape[-2], ctx.chunk):
                piece = conv2d_weight(
                    _with_halo(v, start, end, half), w.shape, grad[:, :, start:end].contiguous(), groups=heads
                )
                grad_w += piece.to(grad_w.dtype)
            grad_w = grad_w.to(ctx.weight_dtype)
        grad_attn = grad.to(ctx.attn_dtype) if ctx.needs_input_grad[0] else None
        return grad_attn, grad_v, grad_w, None


def token_conv_residual(attn: Tensor, v: Tensor, weight: Tensor, chunk: int | None = None) -> Tensor:
    """``attn + conv(v)``, see the module docstring; autocast is off inside, the math runs in v's dtype.

    ``chunk``: tokens per convolution call (default: :data:`CPU_CHUNK_TOKENS` on a CPU, all of them
    elsewhere).
    """
    if chunk is None:
        chunk = CPU_CHUNK_TOKENS if v.device.type == "cpu" else max(v.shape[-2], 1)
    with torch.autocast(device_type=v.device.type, enabled=False):
        out: Tensor = _TokenConvResidual.apply(attn, v, weight, chunk)
    return out
