"""Nyström backend: package oracle (parity settings), exactness limit, fallback and layouts."""

from __future__ import annotations

import pytest
import torch

from miram.attention import AttentionSpec, build_attention
from miram.attention.nystrom import NystromAttention, iterative_pinv, nystrom_attention
from miram.attention.softmax import softmax_attention

DIM, HEADS, DH = 64, 4, 16


def _copy_from_package(ours: NystromAttention, ref: torch.nn.Module) -> None:
    with torch.no_grad():
        ours.qkv.weight.copy_(ref.to_qkv.weight)
        ours.proj.weight.copy_(ref.to_out[0].weight)
        ours.proj.bias.copy_(ref.to_out[0].bias)
        if ours.res_conv is not None:
            ours.res_conv.weight.copy_(ref.res_conv.weight)


@pytest.mark.parametrize(("n", "m", "kernel"), [(256, 64, 33), (1000, 64, 33), (197, 64, 0), (50, 64, 9)])
def test_nystrom_matches_package_with_parity_settings(n: int, m: int, kernel: int) -> None:
    pkg = pytest.importorskip("nystrom_attention")
    ref = pkg.NystromAttention(
        dim=DIM,
        dim_head=DH,
        heads=HEADS,
        num_landmarks=m,
        residual=kernel > 0,
        residual_conv_kernel=kernel or 33,
    )
    options = {
        "num_landmarks": m,
        "conv_kernel": kernel,
        "landmark_layout": "pad_front_masked",
        "pinv_init": "global",
    }
    ours = build_attention(AttentionSpec("nystrom", options), DIM, HEADS, qkv_bias=False)
    assert isinstance(ours, NystromAttention)
    _copy_from_package(ours, ref)
    x = torch.randn(1, n, DIM)
    # The package masks its front padding only when given a mask: pass an all-True one.
    expected = ref(x, mask=torch.ones(1, n, dtype=torch.bool))
    torch.testing.assert_close(ours(x), expected, atol=2e-6, rtol=1e-5)
    padding = torch.zeros(1, n, dtype=torch.bool)
    padding[:, -n // 3 :] = True
    expected = ref(x, mask=~padding)
    keep = ~padding[0]
    torch.testing.assert_close(
        ours(x, key_padding_mask=padding)[:, keep], expected[:, keep], atol=2e-6, rtol=1e-5
    )


@pytest.mark.parametrize("n", [64, 100])
def test_nystrom_matches_softmax_when_landmarks_equal_tokens(n: int) -> None:
    q, k, v = (torch.randn(1, 2, n, 16, dtype=torch.float64) for _ in range(3))
    out = nystrom_attention(q, k, v, num_landmarks=n, pinv_iterations=60)
    exact, _ = softmax_attention(q, k, v)
    assert (out - exact).norm() / exact.norm() < 1e-4


def test_nystrom_short_sequence_falls_back_to_exact() -> None:
    ours = build_attention(AttentionSpec("nystrom", {"conv_kernel": 0}), DIM, HEADS).eval()
    sdpa = build_attention("sdpa", DIM, HEADS).eval()
    sdpa.load_state_dict(ours.state_dict())
    x = torch.randn(2, 40, DIM)
    torch.testing.assert_close(ours(x), sdpa(x))


def test_pinv_per_matrix_init_is_batch_independent() -> None:
    a = torch.randn(2, 16, 16).softmax(-1)
    a[1] = (3 * torch.randn(16, 16)).softmax(-1)
    together = iterative_pinv(a, 6, "per_matrix")
    torch.testing.assert_close(together[0], iterative_pinv(a[:1], 6, "per_matrix")[0])
    coupled = iterative_pinv(a, 6, "global")
    assert not torch.allclose(coupled[0], iterative_pinv(a[:1], 6, "global")[0])


def test_nystrom_drops_fully_padded_landmarks() -> None:
    """With key padding, the result equals running on the unpadded prefix when segments align."""
    q, k, v = (torch.randn(1, 2, 128, 16) for _ in range(3))
    padding = torch.zeros(1, 128, dtype=torch.bool)
    padding[:, 64:] = True  # landmarks 8..15 (segments of 8) hold only padding
    masked = nystrom_attention(q, k, v, num_landmarks=16, key_padding_mask=padding)
    short = nystrom_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64], num_landmarks=8)
    torch.testing.assert_close(masked[:, :, :64], short, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_nystrom_bf16_long_sequence_is_finite(mode: str) -> None:
    """The kernel at N = 8192; whole layers at 65,536 tokens: test_long_bf16.py (slow tier)."""
    q, k, v = (torch.randn(1, 2, 8192, 32) for _ in range(3))
    expected = nystrom_attention(q, k, v)
    if mode == "cast":
        out = nystrom_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = nystrom_attention(q, k, v)
    assert torch.isfinite(out).all()
    assert (out.float() - expected).norm() / expected.norm() < 0.05


@pytest.mark.parametrize("n", [32, 64])
def test_nystrom_float64_is_computed_in_float64(n: int) -> None:
    # The pseudo-inverse block runs in max(fp32, input dtype): float64 inputs must not be cast down. With
    # every token a landmark, F Z B = A A^+ A = A, so the result is exact attention up to float64 rounding
    # (a float32 block leaves ~1e-6; measured float64 error ~1e-14).
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, n, 16, dtype=torch.float64, generator=g)
    k = q.clone()  # q.k is largest on the diagonal: A is well conditioned (cond < 100)
    v = torch.randn(2, 2, n, 16, dtype=torch.float64, generator=g)
    out = nystrom_attention(q, k, v, num_landmarks=n, pinv_iterations=30)
    # float64 by hand: softmax_attention computes in fp32
    exact = ((q @ k.transpose(-1, -2)) * 16**-0.5).softmax(-1) @ v
    assert out.dtype == torch.float64
    assert (out - exact).abs().max() < 1e-11
