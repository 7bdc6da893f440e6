"""Evaluation outputs of every rank, back in dataset order, each sample once.

Under DDP Lightning evaluates through a ``DistributedSampler(shuffle=False)``: with ``W`` ranks, sample
``i`` goes to rank ``i % W`` and rank ``r``'s ``j``-th sample is sample ``j * W + r``. When ``W`` does not
divide the dataset the sampler pads it by repeating the first samples, so the positions ``>= len(dataset)``
are duplicates. :func:`gather_in_order` gathers every rank's rows and undoes both (:func:`unshard`), so
metrics computed from its result equal those of one process, bootstrap intervals included. At world size 1
it returns its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from miram import dist as mdist


def unshard(parts: Sequence[Tensor], total: int | None = None) -> Tensor:
    """Rows of ``parts[r]`` (rank ``r``'s outputs, in its sampler's order) back in dataset order.

    Rank ``r``'s ``j``-th row is global position ``j * W + r``; positions ``>= total`` are the sampler's
    padding and are dropped (``total=None`` keeps them). Ranks may have seen different numbers of rows only
    as a round-robin deal leaves them (the lower ranks at most one more), e.g. a partial sanity check.
    """
    w = len(parts)
    if w == 0:
        raise ValueError("unshard: no parts")
    lengths = [p.shape[0] for p in parts]
    if any(a < b for a, b in zip(lengths, lengths[1:], strict=False)) or lengths[0] - lengths[-1] > 1:
        raise ValueError(f"unshard: rows per rank {lengths} are not a round-robin deal")
    out = parts[0].new_empty((sum(lengths), *parts[0].shape[1:]))
    for r, p in enumerate(parts):
        out[r::w] = p
    return out if total is None else out[:total]


def gather_rows(x: Tensor) -> list[Tensor]:
    """Every rank's ``x`` ``(B_r, ...)`` in rank order (``B_r`` may differ); ``[x]`` at world size 1.

    A collective: every rank must call it, with the same trailing shape and dtype. ``x`` must be on the
    device the process group communicates on (CUDA for NCCL).
    """
    n = mdist.world_size()
    if n == 1:
        return [x]
    lengths = mdist.gather(torch.tensor([x.shape[0]], device=x.device)).tolist()
    longest = max(lengths)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    rows = mdist.gather(padded).view(n, longest, *x.shape[1:])
    return [rows[r, :length] for r, length in enumerate(lengths)]


def distinct_samples(loader: Any) -> int | None:
    """How many distinct samples ``loader``'s ``DistributedSampler`` deals (its dataset's length); None for
    a loader without one (a single process).

    Raises:
        ValueError: the sampler shuffles, or there is no ``DistributedSampler`` under a process group (the
            order of the ranks' outputs could not be restored).
    """
    if isinstance(loader, (list, tuple)):
        if len(loader) != 1:
            raise ValueError(f"evaluation expects one dataloader per stage, got {len(loader)}")
        loader = loader[0]
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        if sampler.shuffle:
            raise ValueError("evaluation under DDP needs an unshuffled DistributedSampler")
        return len(sampler.dataset)  # type: ignore[arg-type]
    if mdist.world_size() > 1:
        raise ValueError(
            "evaluation under DDP needs Lightning's DistributedSampler on the evaluation loaders "
            "(Trainer(use_distributed_sampler=True), the default)"
        )
    return None


def gather_in_order(x: Tensor, total: int | None, device: torch.device | str = "cpu") -> Tensor:
    """Every rank's rows of ``x`` in dataset order, the sampler's padding dropped (see :func:`unshard`);
    ``x`` itself at world size 1. Communicates on ``device``; returns a tensor on ``x``'s device."""
    if mdist.world_size() == 1:
        return x
    parts = gather_rows(x.to(device))
    return unshard(parts, total).to(x.device)
