from __future__ import annotations

import pytest
import torch

from miram.models.masking import gather_tokens, num_visible, random_masking, unshuffle_with_mask_tokens


@pytest.mark.parametrize(("tokens", "ratio"), [(32, 0.75), (49, 0.75), (196, 0.5), (10, 0.0)])
def test_masking_keeps_exactly_the_requested_ratio(tokens: int, ratio: float) -> None:
    m = random_masking(5, tokens, ratio)
    keep = int(tokens * (1 - ratio))
    assert m.ids_keep.shape == (5, keep)
    assert (m.mask.sum(1) == tokens - keep).all()
    # the kept indices are exactly the unmasked positions
    for b in range(5):
        assert set(m.ids_keep[b].tolist()) == set((~m.mask[b]).nonzero().flatten().tolist())


def test_masking_differs_per_sample_and_is_reproducible_with_a_generator() -> None:
    a = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(1))
    b = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask[0], a.mask[1])


def test_unshuffle_restores_raster_order() -> None:
    B, L, D = 3, 12, 4
    tokens = torch.randn(B, L, D)
    m = random_masking(B, L, 0.75)
    visible = gather_tokens(tokens, m.ids_keep)
    mask_token = torch.full((1, 1, D), 99.0)
    full = unshuffle_with_mask_tokens(visible, mask_token, m.ids_restore)
    assert torch.equal(full[~m.mask], tokens[~m.mask])
    assert (full[m.mask] == 99.0).all()


def test_masking_rejects_ratio_one() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(1, 4, 1.0)


@pytest.mark.parametrize(
    ("tokens", "ratio", "keep"),
    [(49, 0.75, 12), (32, 0.75, 8), (196, 0.75, 49), (10, 0.7, 3), (10, 0.0, 10), (7, 0.5, 3)],
)
def test_visible_token_counts_by_hand(tokens: int, ratio: float, keep: int) -> None:
    # MAE: int(L * (1 - r)), rounded down; 49 patches at 75 % keep 12 and hide 37
    assert num_visible(tokens, ratio) == keep
    m = random_masking(2, tokens, ratio)
    assert m.mask.sum(1).tolist() == [tokens - keep] * 2


def test_lower_noise_is_kept() -> None:
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    m = random_masking(1, 4, 0.5, noise=noise)
    assert m.ids_keep.tolist() == [[1, 3]] and m.mask.tolist() == [[True, False, True, False]]
    assert m.ids_restore.tolist() == [[3, 0, 2, 1]]
