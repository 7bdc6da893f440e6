"""Distributed helpers that degrade to no-ops without a process group (world size 1).

Library code calls these instead of ``torch.distributed`` so that every path runs on one device, in tests
and in notebooks, without ``init_process_group`` (the failure mode of moco-v3#15).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` ``(B, ...)`` from every process along dim 0 -> ``(world * B, ...)``.

    No gradient flows through the result (it is used for momentum-encoder keys, which have none). All
    processes must pass the same shape. Returns ``tensor`` itself at world size 1.
    """
    n = world_size()
    if n == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(n)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_object(obj: object) -> list[object]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` at world size 1. A collective: every
    process must call it."""
    n = world_size()
    if n == 1:
        return [obj]
    parts: list[object] = [None] * n
    dist.all_gather_object(parts, obj)
    return parts
