"""Several caches in one run (``data/mix.py``): shares of every epoch, passes without repeats, pooled
statistics, and the data module that mixes them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from miram.data.cache import Cache, CacheError
from miram.data.datamodule import MammoDataModule
from miram.data.mix import MixDataset, pooled_stats, shares
from miram.data.phantom import prepare_phantoms
from miram.data.sampling import EpochSampler


class Part:
    """A stand-in training set whose items say which part and record they are."""

    def __init__(self, name: int, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        return self.name, key[1]


def test_shares_round_to_the_epoch_length() -> None:
    assert shares([10, 30], [1, 3]) == [10, 30]
    assert shares([10, 30], [1, 1]) == [20, 20]
    assert shares([5, 5], [1, 2]) == [3, 7]  # 3.33 and 6.67: the larger remainder gets the extra item
    assert shares([3, 3, 3], [1, 1, 1]) == [3, 3, 3]
    assert shares([100, 1], [1, 0]) == [101, 0]
    assert shares([1000, 2], [1000, 0.0001]) == [1001, 1]  # a positive weight is never rounded away
    with pytest.raises(ValueError, match="2 entries for 3 caches"):
        shares([1, 2, 3], [1, 1])
    with pytest.raises(ValueError, match="non-negative and not all zero"):
        shares([1, 2], [1, -1])


def items(mix: MixDataset, epoch: int) -> list[tuple[int, int]]:
    return [mix[(epoch, i)] for i in range(len(mix))]


def test_proportional_weights_serve_every_record_once_per_epoch() -> None:
    mix = MixDataset([Part(0, 7), Part(1, 13)], [7, 13], seed=0)
    for epoch in range(3):
        assert sorted(items(mix, epoch)) == [(0, k) for k in range(7)] + [(1, k) for k in range(13)]


def test_a_heavier_cache_is_repeated_in_passes_and_a_lighter_one_subsampled() -> None:
    mix = MixDataset([Part(0, 8), Part(1, 8)], [3, 1], seed=0)
    assert len(mix) == 16
    for epoch in range(3):
        got = items(mix, epoch)
        heavy = Counter(k for c, k in got if c == 0)
        light = [k for c, k in got if c == 1]
        assert sum(heavy.values()) == 12 and set(heavy) == set(range(8)) and max(heavy.values()) == 2
        assert len(light) == len(set(light)) == 4  # a subset, without repeats
    subsets = {tuple(sorted(k for c, k in items(mix, e) if c == 1)) for e in range(6)}
    assert len(subsets) > 1  # another subset each epoch
    assert items(mix, 1) == items(
        MixDataset([Part(0, 8), Part(1, 8)], [3, 1], seed=0), 1
    )  # a function of the seed
    assert items(mix, 1) != items(MixDataset([Part(0, 8), Part(1, 8)], [3, 1], seed=1), 1)


def test_pooled_stats_are_the_mixture_moments() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.2, 0.05, 4000), rng.normal(0.5, 0.1, 1000)
    pooled = pooled_stats(
        [{"mean": a.mean(), "std": a.std()}, {"mean": b.mean(), "std": b.std()}], [len(a), len(b)]
    )
    both = np.concatenate([a, b])
    assert pooled["mean"] == pytest.approx(both.mean(), rel=1e-12)
    assert pooled["std"] == pytest.approx(both.std(), rel=1e-12)


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("mix")
    return (
        prepare_phantoms(str(root / "a"), num=20, size=64, seed=0),
        prepare_phantoms(str(root / "b"), num=40, size=64, seed=1),
    )


def test_data_module_mixes_caches_and_pools_statistics(two_caches: tuple[str, str]) -> None:
    a, b = two_caches
    dm = MammoDataModule([a, b], weights=[1, 1], image_size=(32, 32), batch_size=4, num_workers=0)
    train = dm.dataset("train", train=True)
    sizes = [len(Cache(c).indices("train", pretrain_only=True)) for c in (a, b)]
    assert isinstance(train, MixDataset) and train.counts == shares(sizes, [1, 1])
    assert len(dm.dataset("val", train=False)) == sum(len(Cache(c).indices("val")) for c in (a, b))
    stats = [Cache(c).stats for c in (a, b)]
    assert dm.stats == pytest.approx(pooled_stats(stats, [1, 1]))
    assert MammoDataModule([a, b]).stats == pytest.approx(pooled_stats(stats, sizes))
    assert [p["cache"] for p in dm.provenance()] == [str(Path(a)), str(Path(b))]
    batch, _ = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 32, 32)
    with pytest.raises(CacheError, match="lists 2 caches; this use needs one"):
        dm.cache  # noqa: B018
    with pytest.raises(ValueError, match="3 entries for 2 caches"):
        MammoDataModule([a, b], weights=[1, 1, 1])


def test_ranks_share_one_epoch_of_the_mix() -> None:
    mix = MixDataset([Part(0, 6), Part(1, 10)], [2, 1], seed=4)  # 16 items: no padding for 2 ranks
    ranks = [EpochSampler(mix, num_replicas=2, rank=r, seed=4) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    served = [mix[key] for sampler in ranks for key in sampler]
    assert sorted(served) == sorted(items(mix, 3))  # together the ranks serve exactly the epoch's items
