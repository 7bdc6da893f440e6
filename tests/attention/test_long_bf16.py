"""The decoder-sized layers in bf16 at 65,536 tokens (issue 3: no NaN/inf up to N = 65,536).

Full layers with the MIRAM decoder settings (dim 512, 16 heads of 32, default backend configs), cast
to bf16 and in fp32 under CPU bf16 autocast: output and every gradient finite, output within 5 % of
the same layer in fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from miram.attention import AttentionSpec, build_attention

TOKENS = 65_536


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cast", "autocast"])
@pytest.mark.parametrize("backend", ["nystrom", "linformer", "performer"])
def test_layer_is_finite_in_bf16_at_65536_tokens(backend: str, mode: str) -> None:
    torch.manual_seed(0)
    layer = build_attention(AttentionSpec(backend, {}), 512, 16, seq_len=TOKENS)
    x = torch.randn(1, TOKENS, 512)
    with torch.no_grad():
        expected = layer(x)
    low = copy.deepcopy(layer)
    inp = x.clone()
    if mode == "cast":
        low, inp = low.bfloat16(), inp.bfloat16()
    inp.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        out = low(inp)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    grads = {name: p.grad for name, p in low.named_parameters()} | {"input": inp.grad}
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name
    error = ((out.float() - expected).norm() / expected.norm()).item()
    assert error < 0.05, f"relative error {error:.4f}"
