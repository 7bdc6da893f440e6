from __future__ import annotations

import pytest
import torch

from miram.models.ops import area_downsample, patchify, unpatchify, upsample_mask, upsample_tokens


@pytest.mark.parametrize("chans", [1, 3])
def test_patchify_unpatchify_round_trip_non_square(chans: int) -> None:
    x = torch.randn(2, chans, 64, 32)
    patches = patchify(x, 8)
    assert patches.shape == (2, 8 * 4, 8 * 8 * chans)
    assert torch.equal(unpatchify(patches, 8, (8, 4), chans), x)


def test_patchify_orders_patches_in_raster_order() -> None:
    x = torch.arange(4 * 6).float().reshape(1, 1, 4, 6)
    patches = patchify(x, 2)  # grid (2, 3)
    assert torch.equal(patches[0, 1], torch.tensor([2.0, 3.0, 8.0, 9.0]))  # row 0, column 1
    assert torch.equal(patches[0, 3], torch.tensor([12.0, 13.0, 18.0, 19.0]))  # row 1, column 0


def test_patchify_rejects_sizes_not_multiple_of_patch() -> None:
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 1, 30, 32), 8)


def test_upsample_tokens_nearest_makes_2d_blocks_not_1d_repeats() -> None:
    tokens = torch.arange(6).float().reshape(1, 6, 1)  # grid (2, 3)
    up = upsample_tokens(tokens, (2, 3), 2).reshape(4, 6)
    expected = torch.tensor(
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]
    ).float()
    assert torch.equal(up, expected)


def test_upsample_mask_marks_each_cell_as_a_block() -> None:
    mask = torch.tensor([[True, False, False, True]])  # grid (1, 4)
    up = upsample_mask(mask, (1, 4), 2).reshape(2, 8)
    assert up[:, :2].all() and not up[:, 2:6].any() and up[:, 6:].all()


def test_area_downsample_averages_blocks() -> None:
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    assert area_downsample(x, 2).item() == 4.0


def test_area_downsample_averages_each_block_of_a_non_square_image() -> None:
    x = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)  # value = 6 * row + col
    # block (i, j) covers rows 2i, 2i+1 and columns 2j, 2j+1: mean = 6 * (2i + 0.5) + 2j + 0.5
    expected = torch.tensor([[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    assert torch.equal(area_downsample(x, 2)[0, 0], expected)
    assert torch.equal(area_downsample(x, 1), x)
    # factor 4 of a 4 x 8 image of col**2: the block means (0+1+4+9)/4 and (16+25+36+49)/4; a bilinear
    # resize (exact for factor 2) would sample between columns 1 and 2 instead: 2.5
    square = (torch.arange(8, dtype=torch.float32) ** 2).expand(1, 1, 4, 8)
    assert area_downsample(square, 4).flatten().tolist() == [3.5, 31.5]
