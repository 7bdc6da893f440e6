"""The training sampler: this rank's share of a seeded per-epoch shuffle, tagged with the epoch.

Workers draw a record's crop from a stream keyed by ``(seed, epoch, record)`` (:mod:`miram.seeding`), so they
must know the epoch. A persistent worker holds a copy of the dataset made when it started, so an epoch
attribute set on the dataset later would never reach it; the sampler hands the epoch over with each index
instead: it yields ``(epoch, index)`` pairs.

It is a ``DistributedSampler`` so that Lightning keeps it under DDP instead of wrapping it in one more
sampler (Lightning calls ``set_epoch`` on it before every epoch). The order of epoch ``e`` is a function of
``(seed, e)`` alone. Its state (epoch, indices yielded) goes into ``torchdata``'s ``StatefulDataLoader``
state, which Lightning checkpoints: on a resume Lightning rebuilds the loader's iterator *before* it calls
``set_epoch``, so the epoch must come back with the state, not from ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler


class EpochSampler(StatefulDistributedSampler):
    """Yields ``(epoch, index)`` for this rank's indices of epoch ``epoch``.

    Args:
        dataset: the dataset (only its length is used).
        num_replicas: world size.
        rank: this process's rank.
        seed: seed of the shuffle; must be the same on every rank.
        shuffle: shuffle each epoch (else dataset order).
        drop_last: drop the tail that does not divide evenly among ranks (else pad by repeating indices).
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in super().__iter__())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.set_epoch(int(state_dict["epoch"]))
