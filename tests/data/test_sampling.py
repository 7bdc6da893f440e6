"""The training sampler and loader: per-record crop streams, rank shares, worker-count invariance, and
resuming inside an epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miram.data.cache import Cache, CacheRecord, CacheWriter
from miram.data.datamodule import CacheDataset, MammoDataModule
from miram.data.sampling import EpochSampler


def _write(root: Path, n: int, offset: int = 0) -> Path:
    writer = CacheWriter(root, "test")
    for i in range(n):
        image = np.random.default_rng(i + offset).integers(1000, 60000, (48, 40 + 4 * i)).astype(np.uint16)
        writer.add(CacheRecord(f"r{i}", "train" if i < n - 2 else "val", f"p{i}"), image)
    writer.finalize({})
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return _write(tmp_path / "c", 12)


@pytest.fixture(params=["one cache", "two caches mixed 1:2"])
def data(request: pytest.FixtureRequest, cache_dir: Path) -> dict[str, object]:
    """Data-module arguments: the cache, or a mix of it with a second one (items keyed by epoch alike)."""
    if request.param == "one cache":
        return {"cache": str(cache_dir)}
    other = _write(cache_dir.parent / "d", 7, offset=100)
    return {"cache": [str(cache_dir), str(other)], "weights": [1.0, 2.0]}


def test_ranks_get_disjoint_shares_tagged_with_the_epoch() -> None:
    data = list(range(10))
    shares = [EpochSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for s in shares:
        s.set_epoch(4)
    pairs = [list(s) for s in shares]
    assert all(epoch == 4 for share in pairs for epoch, _ in share)
    indices = [[i for _, i in share] for share in pairs]
    assert not set(indices[0]) & set(indices[1]) and sorted(indices[0] + indices[1]) == data
    shares[0].set_epoch(5)
    assert [i for _, i in shares[0]] != indices[0]  # a new order every epoch


def test_a_records_crop_is_a_function_of_seed_epoch_and_record(cache_dir: Path) -> None:
    opened = Cache(cache_dir)
    ds = CacheDataset(opened, opened.indices("train"), (32, 32), train=True)
    assert torch.equal(ds[(2, 3)][0], ds[(2, 3)][0])  # same stream whoever asks, however often
    assert torch.equal(ds[3][0], ds[(0, 3)][0])
    assert not torch.equal(ds[(2, 3)][0], ds[(3, 3)][0])  # a fresh crop every epoch
    other = CacheDataset(opened, opened.indices("train"), (32, 32), train=True)
    other.seed = ds.seed + 1
    assert not torch.equal(ds[(2, 3)][0], other[(2, 3)][0])  # another seed, another crop


def _epoch(dm: MammoDataModule, epoch: int) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    return [images for images, _ in loader]


def test_batches_do_not_depend_on_the_number_of_workers(data: dict[str, object]) -> None:
    serial = MammoDataModule(**data, image_size=(32, 32), batch_size=3, num_workers=0)  # type: ignore[arg-type]
    parallel = MammoDataModule(**data, image_size=(32, 32), batch_size=3, num_workers=2)  # type: ignore[arg-type]
    for epoch in (0, 1):
        a, b = _epoch(serial, epoch), _epoch(parallel, epoch)
        assert len(a) == len(b) >= 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_train_loader_resumes_inside_an_epoch(data: dict[str, object]) -> None:
    dm = MammoDataModule(**data, image_size=(32, 32), batch_size=2, num_workers=0)  # type: ignore[arg-type]
    whole = _epoch(dm, 1)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    it = iter(loader)
    seen = [next(it)[0] for _ in range(2)]
    state = loader.state_dict()
    again = dm.train_dataloader()  # a new process: a fresh loader gets the state and Lightning makes its
    again.load_state_dict(state)  # iterator before it calls set_epoch: the epoch must come with the state
    it = iter(again)
    again.sampler.set_epoch(1)  # type: ignore[attr-defined]
    rest = [images for images, _ in it]
    assert len(seen) + len(rest) == len(whole)
    assert all(torch.equal(x, y) for x, y in zip(seen + rest, whole))
