"""Evaluation outputs back in dataset order (eval/gather.py), without processes: each rank's rows are what
``DistributedSampler(shuffle=False)`` deals it, padding included. The 2-process run is in
test_ddp_metrics.py (slow tier)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from miram.eval.gather import distinct_samples, gather_in_order, unshard


def shards(data: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Rank r's rows, as the sampler Lightning puts on evaluation loaders deals them."""
    return [
        data[list(DistributedSampler(range(len(data)), num_replicas=world, rank=r, shuffle=False))]
        for r in range(world)
    ]


@pytest.mark.parametrize("n", [11, 12, 1, 2])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_unshard_restores_order_and_drops_padding(world: int, n: int) -> None:
    data = torch.arange(n * 3, dtype=torch.float32).view(n, 3)  # rows (N, K): every row distinct
    parts = shards(data, world)
    padded = sum(len(p) for p in parts)
    assert padded == -(-n // world) * world  # the sampler pads to a multiple of the world size...
    for pos in range(n, padded):  # ...by repeating the first samples: position p is on rank p % world
        assert torch.equal(parts[pos % world][pos // world], data[(pos - n) % n])
    assert torch.equal(unshard(parts, n), data)
    assert torch.equal(unshard(parts)[:n], data) and len(unshard(parts)) == padded
    # 1-d outputs (binary probabilities, class indices) too
    assert torch.equal(unshard([p[:, 0] for p in parts], n), data[:, 0])


def test_unshard_of_a_partial_pass() -> None:
    # a sanity check (2 batches of 2 per rank) sees the first 2 * 2 * world samples, which come back in order
    data = torch.arange(11)
    parts = [p[:4] for p in shards(data, 2)]
    assert torch.equal(unshard(parts, 11), data[:8])
    # a round-robin deal that stopped mid-way: the lower ranks hold one more row
    assert torch.equal(unshard([data[0:5:2], data[1:5:2]], 11), data[:5])


def test_unshard_refuses_what_is_not_a_round_robin_deal() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        unshard([torch.arange(2), torch.arange(3)])
    with pytest.raises(ValueError, match="round-robin"):
        unshard([torch.arange(4), torch.arange(2)])


def test_single_process_is_left_alone() -> None:
    x = torch.randn(5, 2)
    assert gather_in_order(x, 3) is x  # no process group: nothing gathered, nothing dropped
    loader = DataLoader(TensorDataset(x), batch_size=2)
    assert distinct_samples(loader) is None
    sampler = DistributedSampler(range(5), num_replicas=2, rank=0, shuffle=False)
    assert distinct_samples([DataLoader(TensorDataset(x), sampler=sampler)]) == 5
    shuffled = DistributedSampler(range(5), num_replicas=2, rank=0, shuffle=True)
    with pytest.raises(ValueError, match="unshuffled"):
        distinct_samples(DataLoader(TensorDataset(x), sampler=shuffled))
