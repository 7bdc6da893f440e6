"""Distributed helpers: no-ops on one process; under a 2-process gloo group the InfoNCE negatives are the
keys of both processes (slow tier)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from miram import dist as mdist
from miram.losses.contrastive import info_nce


def test_helpers_without_process_group() -> None:
    x = torch.randn(3, 4)
    assert mdist.world_size() == 1 and mdist.rank() == 0 and mdist.gather(x) is x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, q: torch.Tensor, k: torch.Tensor, out: dict[int, float]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    half = q.shape[0] // 2
    sl = slice(rank * half, (rank + 1) * half)
    out[rank] = float(info_nce(q[sl], k[sl], 0.2, gather_negatives=True))
    dist.destroy_process_group()


@pytest.mark.slow
def test_info_nce_gathers_negatives_across_processes() -> None:
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), q, k, out), nprocs=2, join=True)
    # reference: each rank's 4 queries against all 8 keys, positives at the rank's offset
    qn, kn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=1)
    logits = qn @ kn.t() / 0.2
    for rank in range(2):
        rows = slice(rank * 4, (rank + 1) * 4)
        ref = 0.4 * torch.nn.functional.cross_entropy(logits[rows], torch.arange(4) + 4 * rank)
        assert out[rank] == pytest.approx(float(ref), rel=1e-5)
        local = info_nce(q[rows], k[rows], 0.2)  # without the other process's keys: a different loss
        assert float(local) != pytest.approx(out[rank], rel=1e-3)
