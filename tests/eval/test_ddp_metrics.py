"""Probe and fine-tune metrics under DDP equal one process's (issue 11, item 4), slow tier: 2 gloo processes.

11 validation and 11 test samples: the DistributedSampler deals 6 to each rank, rank 1's last one a
repeat of sample 0. A probe on cached features runs one epoch with learning rate 0 and BatchNorm
momentum 0, so its weights are the same in both runs and every difference would come from how the
outputs are collected. Compared with one process: val/* as logged on each rank (what ModelCheckpoint
monitors) and the checkpoint's best score, test/*, the bootstrap intervals and test_result's probabilities
and targets, all exactly (both runs compute the metrics from the same tensors in the same order).
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from miram.eval.metrics import classification_metrics
from miram.eval.probe import LitProbe

pytestmark = pytest.mark.slow

DIM = 16
VIT = {"img_size": [16, 16], "patch_size": 8, "embed_dim": DIM, "depth": 1, "num_heads": 2}
N = 11


def split(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = 10 * torch.randn(N, DIM, generator=g)
    y = torch.tensor([0, 1] * (N // 2) + [1])  # both classes
    return TensorDataset(x, y)


def run(root: Path) -> dict[str, Any]:
    """Fit one epoch (keeping the best val/auroc checkpoint), then test; on one process or on each rank."""
    torch.manual_seed(0)  # the same head everywhere
    model = LitProbe(task="binary", num_classes=2, vit=VIT, lr=0.0, num_resamples=200)
    model.head[0].momentum = 0.0  # the BatchNorm's running statistics stay where they start
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", monitor="val/auroc", mode="max")
    distributed = "WORLD_SIZE" in os.environ
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2 if distributed else 1,
        strategy="ddp" if distributed else "auto",
        max_epochs=1,
        num_sanity_val_steps=1,  # a partial pass through the gathering too
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt],
        default_root_dir=root,
    )
    val = DataLoader(split(1), batch_size=4)
    trainer.fit(model, DataLoader(split(0), batch_size=4), val)
    val_logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = float(ckpt.best_model_score) if ckpt.best_model_score is not None else math.nan
    trainer.test(model, DataLoader(split(2), batch_size=4), verbose=False)
    test_logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return {"val": val_logged, "best": best, "test": test_logged, "result": model.test_result}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, root: Path, out: Any) -> None:
    env = {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    torch.set_num_threads(1)
    out[rank] = run(root)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_eval_metrics_under_ddp_equal_one_process(tmp_path: Path) -> None:
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), tmp_path / "ddp", out), nprocs=2, join=True)
    ref = run(tmp_path / "one")
    assert set(ref["val"]) >= {"val/auroc", "val/accuracy", "val/loss"}
    assert ref["result"]["probs"].shape == (N,)
    for rank in range(2):
        got = out[rank]
        # every sample once, in dataset order: the probabilities are the very same numbers
        assert torch.equal(got["result"]["target"], ref["result"]["target"])
        assert torch.equal(got["result"]["probs"], ref["result"]["probs"])
        for k, v in ref["val"].items():
            if k != "val/loss":  # a DDP mean of per-rank batch means (padding included): not the metric
                assert got["val"][k] == v, (rank, k)
        assert got["best"] == ref["best"] == ref["val"]["val/auroc"]
        assert got["test"].keys() == ref["test"].keys()
        for k, v in ref["test"].items():
            if k != "test/loss":
                assert same(got["test"][k], v), (rank, k)
        print(f"rank {rank}: val/loss {got['val']['val/loss']:.6f}, one process {ref['val']['val/loss']:.6f}")
        for name, m in ref["result"]["metrics"].items():
            for part in ("value", "lo", "hi"):  # point value and bootstrap interval
                assert same(got["result"]["metrics"][name][part], m[part]), (rank, name, part)
        assert got["result"]["per_class"] == ref["result"]["per_class"]
    # what rank 0 alone scored before the gathering (its 6 samples) is not the whole set's AUROC
    rank0 = torch.arange(0, N, 2)
    probs, target = ref["result"]["probs"], ref["result"]["target"]
    local = classification_metrics(probs[rank0], target[rank0], "binary")["auroc"]
    assert local != pytest.approx(ref["result"]["metrics"]["auroc"]["value"], abs=1e-3)
