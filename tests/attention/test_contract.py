"""The attention seam's contract, checked once for every registered backend."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from miram.attention import AttentionBackend, AttentionSpec, build_attention, list_backends

DIM, HEADS = 32, 2
GRID = (6, 5)  # never square
N = 1 + GRID[0] * GRID[1]
# Small settings so the approximations take their real (not fallback) paths at N = 31.
OPTIONS: dict[str, dict[str, Any]] = {
    "nystrom": {"num_landmarks": 8, "conv_kernel": 5},
    "linformer": {"proj_len": 8},
    "performer": {"num_features": 16},
}


def make(name: str, **kwargs: Any) -> AttentionBackend:
    spec = AttentionSpec(name, dict(OPTIONS.get(name, {})))
    return build_attention(spec, DIM, HEADS, seq_len=N, grid_size=GRID, **kwargs)


@pytest.fixture(params=list_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_registry_lists_all_builtin_backends() -> None:
    assert {"sdpa", "softmax", "nystrom", "linformer", "performer"} <= set(list_backends())


def test_backend_rejects_unknown_option(backend: str) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        build_attention(AttentionSpec(backend, {"no_such_option": 1}), DIM, HEADS, seq_len=N)


def test_backend_keeps_shape_and_dtype_and_is_finite(backend: str) -> None:
    module = make(backend)
    x = torch.randn(2, N, DIM)
    out = module(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_backend_gradients_reach_qkv_weights(backend: str) -> None:
    module = make(backend)
    x = torch.randn(2, N, DIM, requires_grad=True)
    module(x).square().sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert module.qkv.weight.grad is not None and module.qkv.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_backend_batch_items_are_independent(backend: str) -> None:
    module = make(backend).eval()
    x = torch.randn(3, N, DIM)
    x[1] *= 3.0  # a differently scaled neighbour must not move item 0 (global pinv init would)
    together = module(x)
    alone = torch.cat([module(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)


def test_backend_forward_changes_no_state(backend: str) -> None:
    module = make(backend).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module(torch.randn(2, N, DIM)).sum().backward()
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_backend_key_padding_mask_flag_is_honoured(backend: str) -> None:
    module = make(backend).eval()
    x = torch.randn(2, N, DIM)
    padding = torch.zeros(2, N, dtype=torch.bool)
    padding[0, -7:] = True
    if not module.supports_key_padding_mask:
        with pytest.raises(ValueError, match="does not support a key padding mask"):
            module(x, key_padding_mask=padding)
        return
    # Whatever sits in the padded slots must not reach the other tokens.
    x2 = x.clone()
    x2[padding] = 100 * torch.randn(int(padding.sum()), DIM)
    a, b = module(x, key_padding_mask=padding), module(x2, key_padding_mask=padding)
    torch.testing.assert_close(a[~padding], b[~padding], atol=2e-5, rtol=1e-4)


def test_backend_fixed_length_flag_is_honoured(backend: str) -> None:
    module = make(backend)
    x = torch.randn(1, N + 4, DIM)
    if module.needs_fixed_length:
        with pytest.raises(ValueError, match="seq_len"):
            module(x)
    else:
        assert module(x).shape == x.shape


def test_backend_position_flag_is_honoured(backend: str) -> None:
    module = make(backend).eval()
    if module.position_dependent:
        pytest.skip("order-dependent by declaration")
    x, perm = torch.randn(1, N, DIM), torch.randperm(N)
    torch.testing.assert_close(module(x)[:, perm], module(x[:, perm]), atol=2e-5, rtol=1e-4)


def test_exact_backends_match_softmax(backend: str) -> None:
    module = make(backend).eval()
    if not module.exact:
        pytest.skip("approximation")
    reference = make("softmax").eval()
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, N, DIM)
    torch.testing.assert_close(module(x), reference(x), atol=2e-5, rtol=1e-4)


def test_backend_redraw_hook(backend: str) -> None:
    module = make(backend)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.redraw_features(torch.Generator().manual_seed(1))
    changed = [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]
    assert bool(changed) == module.random_features


@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_backend_runs_in_bf16(backend: str, mode: str) -> None:
    module = make(backend).eval()
    x = torch.randn(2, N, DIM)
    expected = module(x)
    if mode == "cast":
        out = module.to(torch.bfloat16)(x.bfloat16())
        assert out.dtype == torch.bfloat16
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x)
    assert torch.isfinite(out).all()
    assert (out.float() - expected).norm() / expected.norm() < 5e-2
