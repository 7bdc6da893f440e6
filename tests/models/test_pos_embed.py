from __future__ import annotations

import pytest
import torch

from miram.layers.pos_embed import resample_pos_embed, sincos_1d, sincos_2d


def test_sincos_2d_non_square_grid_encodes_row_and_column() -> None:
    dim, (gh, gw) = 16, (3, 5)
    pe = sincos_2d(dim, (gh, gw))
    assert pe.shape == (1 + gh * gw, dim)
    assert torch.equal(pe[0], torch.zeros(dim))  # cls position
    grid = pe[1:].reshape(gh, gw, dim)
    # first half encodes the column: constant down a column, varying along a row; second half the row
    assert torch.allclose(grid[0, :, : dim // 2], grid[2, :, : dim // 2])
    assert torch.allclose(grid[:, 0, dim // 2 :], grid[:, 4, dim // 2 :])
    assert torch.allclose(grid[1, 3, : dim // 2], sincos_1d(dim // 2, torch.tensor([3]))[0])
    assert torch.allclose(grid[2, 1, dim // 2 :], sincos_1d(dim // 2, torch.tensor([2]))[0])


def test_sincos_2d_differs_between_grids_with_equal_token_counts() -> None:
    assert not torch.allclose(sincos_2d(8, (2, 6)), sincos_2d(8, (3, 4)))


def test_resample_pos_embed_uses_the_true_grid() -> None:
    pe = sincos_2d(16, (4, 6))[None]
    same = resample_pos_embed(pe, (4, 6), (4, 6))
    assert same is pe
    out = resample_pos_embed(pe, (4, 6), (8, 3))
    assert out.shape == (1, 1 + 24, 16)
    assert torch.equal(out[:, 0], pe[:, 0])


def _smooth_table(gh: int, gw: int) -> torch.Tensor:
    """A ``(1, 1 + gh*gw, 3)`` table whose channels are y, x (cell centres in [0, 1]) and a smooth product."""
    r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    y, x = (r + 0.5) / gh, (c + 0.5) / gw
    grid = torch.stack([y, x, torch.sin(torch.pi * y) * torch.cos(torch.pi * x)], -1).reshape(1, gh * gw, 3)
    return torch.cat([torch.full((1, 1, 3), 7.0), grid], 1)


@pytest.mark.parametrize(("old", "new"), [((4, 6), (8, 3)), ((8, 4), (4, 8)), ((7, 5), (14, 10))])
def test_resampled_table_is_the_same_function_on_the_new_grid(
    old: tuple[int, int], new: tuple[int, int]
) -> None:
    out = resample_pos_embed(_smooth_table(*old), old, new)
    expected = _smooth_table(*new)
    assert torch.equal(out[:, 0], expected[:, 0])  # the cls row is carried over
    grid = out[0, 1:].reshape(*new, 3)
    # a function of the row alone stays one: constant along every row (and x along every column)
    torch.testing.assert_close(grid[..., 0], grid[:, :1, 0].expand(new), atol=1e-6, rtol=0)
    torch.testing.assert_close(grid[..., 1], grid[:1, :, 1].expand(new), atol=1e-6, rtol=0)
    # bicubic with clamped borders: measured max error 0.036 (y, x) and 0.12 (product, at the border);
    # swapping gh and gw gives errors above 1
    err = (out - expected)[0, 1:].abs().amax(0)
    assert err[0] < 0.05 and err[1] < 0.05 and err[2] < 0.15, err
