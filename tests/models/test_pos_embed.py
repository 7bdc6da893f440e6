from __future__ import annotations

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
