"""Named random streams: distinct per key, reproducible, and isolated from the global RNG."""

from __future__ import annotations

import pytest
import torch

from miram.models.masking import random_masking
from miram.seeding import SEED_ENV, Stream, derive_seed, forked_rng, run_seed, step_seed


def test_streams_are_reproducible_and_distinct_per_key() -> None:
    seeds = {derive_seed(0, Stream.TRAIN_STEP, rank, 0, batch) for rank in range(4) for batch in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(7, 1, 2) == derive_seed(7, 1, 2) != derive_seed(7, 2, 1)


def test_forked_rng_seeds_the_block_and_leaves_the_global_stream_alone() -> None:
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with forked_rng(5):
        a = torch.rand(4)
    with forked_rng(5):
        b = torch.rand(4)
    with forked_rng(6):
        c = torch.rand(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.rand(3), expected)  # as if the blocks had never run
    torch.manual_seed(2)
    expected = torch.rand(3)
    torch.manual_seed(2)
    with forked_rng(None):  # no seed: the global stream itself
        assert torch.equal(torch.rand(3), expected)


def test_masks_from_a_named_stream_differ_per_rank() -> None:
    masks = [
        random_masking(
            4, 64, 0.75, generator=torch.Generator().manual_seed(derive_seed(0, Stream.TRAIN_STEP, r, 0, 0))
        ).mask
        for r in (0, 1)
    ]
    assert not torch.equal(masks[0], masks[1])


def test_the_run_seed_is_the_one_seed_everything_published(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEED_ENV, "123")
    assert run_seed() == 123
    monkeypatch.delenv(SEED_ENV)
    assert run_seed() == 0
    assert step_seed(None) is None  # outside a Trainer: the global RNG, as before
