"""Linformer backend: package oracle, exactness limit, fixed-grid refusal and resampling."""

from __future__ import annotations

import pytest
import torch

from miram.attention import AttentionSpec, build_attention
from miram.attention.linformer import LinformerAttention, linformer_attention
from miram.attention.softmax import softmax_attention

DIM, HEADS, DH = 64, 4, 16


def _build(n: int, grid: tuple[int, int] | None = None, **options: object) -> LinformerAttention:
    module = build_attention(
        AttentionSpec("linformer", dict(options)), DIM, HEADS, qkv_bias=False, seq_len=n, grid_size=grid
    )
    assert isinstance(module, LinformerAttention)
    return module


@pytest.mark.parametrize("n", [50, 197, 256])
@pytest.mark.parametrize(
    ("share_kv", "one_kv_head"), [(True, True), (False, False), (True, False), (False, True)]
)
def test_linformer_matches_package(n: int, share_kv: bool, one_kv_head: bool) -> None:
    pkg = pytest.importorskip("linformer")
    ref = pkg.LinformerSelfAttention(
        dim=DIM, seq_len=n, k=32, heads=HEADS, dim_head=DH, one_kv_head=one_kv_head, share_kv=share_kv
    )
    ours = _build(n, proj_len=32, share_kv=share_kv, one_kv_head=one_kv_head)
    with torch.no_grad():
        weights = [ref.to_q.weight, ref.to_k.weight] + ([] if share_kv else [ref.to_v.weight])
        ours.qkv.weight.copy_(torch.cat(weights))
        ours.proj.load_state_dict(ref.to_out.state_dict())
        ours.proj_k.copy_(ref.proj_k)
        if not share_kv:
            assert ours.proj_v is not None
            ours.proj_v.copy_(ref.proj_v)
    x = torch.randn(2, n, DIM)
    torch.testing.assert_close(ours(x), ref(x), atol=2e-6, rtol=1e-5)


def test_linformer_matches_softmax_with_identity_projections() -> None:
    n = 96
    q, k, v = (torch.randn(1, 2, n, 16) for _ in range(3))
    eye = torch.eye(n)
    out = linformer_attention(q, k, v, eye, eye)
    exact, _ = softmax_attention(q, k, v)
    assert (out - exact).norm() / exact.norm() < 1e-5


def test_linformer_refuses_another_grid() -> None:
    module = _build(1 + 6 * 5, grid=(6, 5))
    with pytest.raises(ValueError, match="resample_to_grid"):
        module(torch.randn(1, 1 + 8 * 5, DIM))


def test_linformer_resample_to_grid() -> None:
    module = _build(1 + 6 * 5, grid=(6, 5), share_kv=False, proj_len=8)
    assert module.proj_v is not None
    prefix = module.proj_k[:1].clone()
    with torch.no_grad():  # a constant column must stay constant and keep its sum over the grid
        module.proj_k[1:, 0] = 0.5
    sums = module.proj_v[1:].sum(0).clone()
    module.resample_to_grid((12, 7))
    assert module.seq_len == 1 + 12 * 7 and module.grid_size == (12, 7)
    assert module.proj_k.shape == (1 + 12 * 7, 8) and module.proj_v.shape == (1 + 12 * 7, 8)
    torch.testing.assert_close(module.proj_k[:1], prefix)
    torch.testing.assert_close(module.proj_k[1:, 0], torch.full((84,), 0.5 * 30 / 84))
    # random columns are not smooth, so bilinear resizing keeps their sums only roughly: measured 0.146
    torch.testing.assert_close(module.proj_v[1:].sum(0), sums, atol=0.2, rtol=0)
    out = module(torch.randn(2, 1 + 12 * 7, DIM))
    assert out.shape == (2, 85, DIM)
    out.sum().backward()
    assert module.proj_k.grad is not None


def test_linformer_needs_seq_len() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        build_attention("linformer", DIM, HEADS)


def test_linformer_bf16_long_sequence_is_finite() -> None:
    n = 4096
    module = _build(n, proj_len=128).to(torch.bfloat16)
    out = module(torch.randn(1, n, DIM, dtype=torch.bfloat16))
    assert torch.isfinite(out).all()
