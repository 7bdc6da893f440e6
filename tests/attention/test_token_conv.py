"""The chunked token convolution equals ``nn.Conv2d`` with a (K, 1) kernel, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from miram.attention.token_conv import token_conv_residual


def _reference(attn: torch.Tensor, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return attn + F.conv2d(v, weight, padding=(weight.shape[2] // 2, 0), groups=weight.shape[0])


@pytest.mark.parametrize(
    ("tokens", "kernel", "chunk"), [(37, 33, 16), (5, 33, 4), (100, 7, 1000), (64, 5, 8)]
)
def test_matches_conv2d_and_its_gradients(tokens: int, kernel: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(tokens)
    attn, v = (torch.randn(2, 3, tokens, 4, generator=g, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(3, 1, kernel, 1, generator=g, dtype=torch.float64)
    for t in (attn, v, weight):
        t.requires_grad_(True)
    ours = token_conv_residual(attn, v, weight, chunk)
    ref = _reference(attn, v, weight)
    torch.testing.assert_close(ours, ref)
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(ours, (attn, v, weight), upstream),
                    torch.autograd.grad(ref, (attn, v, weight), upstream), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_gradcheck() -> None:
    inputs = [torch.randn(1, 2, 7, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    weight = torch.randn(2, 1, 5, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v, w: token_conv_residual(a, v, w, 3), (*inputs, weight))


def test_output_merges_heads_without_a_copy() -> None:
    attn, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    out = token_conv_residual(attn, v, torch.randn(3, 1, 5, 1))
    assert out.shape == (2, 3, 10, 4) and out.transpose(1, 2).is_contiguous()


def test_low_precision_inputs_keep_their_dtype_and_fp32_weight_grad() -> None:
    attn, v = (torch.randn(1, 2, 40, 4).bfloat16().requires_grad_(True) for _ in range(2))
    weight = torch.randn(2, 1, 9, 1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = token_conv_residual(attn, v, weight, 16)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and v.grad is not None and v.grad.dtype == torch.bfloat16
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    ref = _reference(attn.float(), v.float(), weight.detach())
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
