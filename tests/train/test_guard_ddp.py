"""Guarded numerics under DDP (issue 11, item 3), slow tier: 2 gloo processes, a NaN on one rank only.

The dataset holds one NaN image where an unshuffled DistributedSampler (sample i goes to rank i % 2)
puts it: rank 1's batch ``K``; rank 0's batch ``K`` is finite, and so is its loss. The guard's
all-reduced decision must make both ranks skip that optimiser step together: afterwards the weights are
the same on both ranks and unchanged by step K, both count one skipped step, the training goes on, and
rank 0's warning says the non-finite loss was on one rank (which rank 0 can only know from the reduction).
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from miram.train.guard import NonFiniteGuard
from tests.train.test_guard import Snapshots, tiny_module

pytestmark = pytest.mark.slow

WORLD, BATCH, STEPS, K = 2, 4, 4, 1


def poisoned_loader(rank: int) -> DataLoader[Any]:
    """Rank ``rank``'s shard of a dataset whose one NaN image is in rank 1's batch ``K``."""
    images = torch.rand(WORLD * BATCH * STEPS, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    images[WORLD * BATCH * K + 1] = float("nan")  # rank 1's first sample of its batch K
    data = TensorDataset(images, torch.zeros(len(images)))
    # Lightning's own sampler would shuffle the training set; this one deals sample i to rank i % WORLD
    sampler = DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=False)
    return DataLoader(data, batch_size=BATCH, sampler=sampler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, root: Path, out: Any) -> None:
    env = {"WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights (DDP would broadcast rank 0's anyway)
    snaps, guard = Snapshots(), NonFiniteGuard(max_bad_steps=2)
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp",
        max_steps=STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[snaps, guard, ckpt],
        default_root_dir=root,
        use_distributed_sampler=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_module(), poisoned_loader(rank))
    out[rank] = {
        "params": snaps.params,
        "opt_steps": snaps.opt_steps,
        "skipped": guard.skipped,
        "consecutive": guard.consecutive,
        "good": guard.good_checkpoint,
        "global_step": trainer.global_step,
        "warnings": [str(w.message) for w in caught],
    }


def test_nan_on_one_rank_skips_the_step_on_both(tmp_path: Path) -> None:
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), tmp_path, out), nprocs=WORLD, join=True)
    r0, r1 = out[0], out[1]
    for r in (r0, r1):
        assert r["skipped"] == 1 and r["consecutive"] == 0 and r["global_step"] == STEPS
        # step K changed nothing (no AdamW step either); the steps before and after it did
        p = r["params"]
        assert all(torch.equal(p[K - 1][k], p[K][k]) for k in p[K])
        assert any(not torch.equal(p[K][k], p[K + 1][k]) for k in p[K])
        assert r["opt_steps"] == [1.0, 1.0, 2.0, 3.0]
        assert all(torch.isfinite(v).all() for v in p[-1].values())
        assert r["good"] == str(tmp_path / "ckpt" / "last-good.ckpt")
    # the ranks stay in step: the same weights after every step, the skipped one included
    for a, b in zip(r0["params"], r1["params"], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # rank 0's own loss was finite: it learnt of rank 1's through the all-reduced flag
    assert any(f"step {K}: non-finite loss on 1 rank(s)" in w for w in r0["warnings"]), r0["warnings"]
    saved = torch.load(tmp_path / "ckpt" / "last-good.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == K  # the checkpoint written after the last good step
