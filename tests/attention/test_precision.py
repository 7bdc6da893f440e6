"""Every backend in bf16 and fp16 against fp32, output and input gradient (issue 11, item 5).

Tolerances are 3x the error measured on CPU (torch 2.13) with these shapes, over seeds 0-2
(relative Frobenius error; the run with seed 0 is the one asserted). Most of the error is the rounding of
the q/k/v and output projections, so the exact backends set the floor. Measured maxima (output / grad):

| backend   | bf16            | fp16            |
|-----------|-----------------|-----------------|
| sdpa      | 5.5e-3 / 7.7e-3 | 6.8e-4 / 7.1e-3 |
| softmax   | 5.4e-3 / 7.5e-3 | 6.8e-4 / 3.5e-3 |
| nystrom   | 4.8e-3 / 6.7e-3 | 6.2e-4 / 2.4e-3 |
| linformer | 6.8e-3 / 7.7e-3 | 9.0e-4 / 1.1e-3 |
| performer | 1.1e-2 / 1.6e-2 | 1.3e-3 / 2.7e-3 |

CPU autocast and a cast module gave the same errors (softmax once autocast no longer re-casts its fp32
matmuls; before, fp16 autocast gave it a 3e-2 gradient error).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from miram.attention import AttentionSpec, build_attention, list_backends
from miram.attention.performer import orthogonal_features, performer_attention

DIM, HEADS = 64, 2
GRID = (16, 12)
N = 1 + GRID[0] * GRID[1]
OPTIONS: dict[str, dict[str, Any]] = {
    "nystrom": {"num_landmarks": 32},
    "linformer": {"proj_len": 32},
    "performer": {"num_features": 64},
}
MEASURED = {  # (output, input gradient) relative errors, max over seeds 0-2
    ("sdpa", torch.bfloat16): (5.5e-3, 7.7e-3),
    ("sdpa", torch.float16): (6.8e-4, 7.1e-3),
    ("softmax", torch.bfloat16): (5.4e-3, 7.5e-3),
    ("softmax", torch.float16): (6.8e-4, 3.5e-3),
    ("nystrom", torch.bfloat16): (4.8e-3, 6.7e-3),
    ("nystrom", torch.float16): (6.2e-4, 2.4e-3),
    ("linformer", torch.bfloat16): (6.8e-3, 7.7e-3),
    ("linformer", torch.float16): (9.0e-4, 1.1e-3),
    ("performer", torch.bfloat16): (1.1e-2, 1.6e-2),
    ("performer", torch.float16): (1.3e-3, 2.7e-3),
}
FACTOR = 3.0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", list_backends())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_low_precision_matches_fp32(backend: str, dtype: torch.dtype, mode: str) -> None:
    if (backend, dtype) not in MEASURED:
        pytest.skip(f"no measured tolerance for {backend}")
    module = build_attention(
        AttentionSpec(backend, dict(OPTIONS.get(backend, {}))), DIM, HEADS, seq_len=N, grid_size=GRID
    )
    x = torch.randn(2, N, DIM) * 2
    x32 = x.clone().requires_grad_()
    ref = module(x32)
    ref.square().mean().backward()
    assert x32.grad is not None

    if mode == "cast":
        low = copy.deepcopy(module).to(dtype)
        xl = x.to(dtype).requires_grad_()
        out = low(xl)
    else:
        xl = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            out = module(xl)
    assert out.dtype == dtype
    out.float().square().mean().backward()
    assert xl.grad is not None and torch.isfinite(out).all() and torch.isfinite(xl.grad).all()
    tol_out, tol_grad = (FACTOR * m for m in MEASURED[(backend, dtype)])
    assert _rel(out, ref) < tol_out
    assert _rel(xl.grad, x32.grad) < tol_grad


@pytest.mark.parametrize("std", [2.0, 3.0])
@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_performer_fp16_with_large_scores(std: float, mode: str) -> None:
    """The issue's case: N = 785, 110 features, q/k std 2-3. The step-1 sentinel weight underflowed in
    fp16 (relative error 0.55 at std 3 before step 1 moved to fp32); measured now: 1.0e-3 (std 2) and
    1.2e-3 / 1.8e-3 (std 3, cast / autocast); bf16 1.3e-2 / 1.8e-2."""
    B, H, n, Dh, m = 1, 2, 785, 32, 110
    q, k = torch.randn(B, H, n, Dh) * std, torch.randn(B, H, n, Dh) * std
    v = torch.randn(B, H, n, Dh)
    w = orthogonal_features(m, Dh, torch.Generator().manual_seed(0))
    ref = performer_attention(q, k, v, w)
    for dtype, tol in ((torch.float16, 5e-3), (torch.bfloat16, 5e-2)):
        ql, kl, vl = (t.to(dtype).requires_grad_() for t in (q, k, v))
        with torch.autocast("cpu", dtype=dtype, enabled=mode == "autocast"):
            out = performer_attention(ql, kl, vl, w if mode == "autocast" else w.to(dtype))
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert _rel(out, ref) < tol, dtype
        out.float().square().mean().backward()
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (ql, kl, vl))
