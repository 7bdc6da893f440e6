"""Several caches in one pre-training run: fixed shares of every epoch, and pooled intensity statistics.

An epoch of a mix is as long as all the caches' training records together; cache ``c`` fills the share
``w_c / sum(w)`` of it (largest-remainder rounding). Within its share a cache serves its records in passes,
each pass a fresh permutation keyed by ``(seed, epoch, cache, pass)``: a cache weighted above its size is
repeated (every record once before any twice), one weighted below it serves a different subset each epoch.
With weights proportional to the sizes every record appears exactly once per epoch. Items are asked for by
``(epoch, i)`` like :class:`~miram.data.datamodule.CacheDataset`, so the mix is resumable in an epoch too.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from miram.seeding import Stream, derive_seed


def shares(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Items of each cache in one epoch of ``sum(sizes)`` items: proportional to ``weights``, largest
    remainder rounding, at least one for a positive weight.

    Raises:
        ValueError: a weight count that differs from the caches', a negative weight, or all zero.
    """
    if len(weights) != len(sizes):
        raise ValueError(f"data.weights has {len(weights)} entries for {len(sizes)} caches")
    if any(not w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"data.weights must be non-negative and not all zero, got {list(weights)}")
    total, wsum = sum(sizes), float(sum(weights))
    exact = [total * w / wsum for w in weights]
    # a positive weight keeps one item even when its share rounds to none; the others pay for it
    counts = [max(int(np.floor(x)), 1 if w > 0 else 0) for x, w in zip(exact, weights)]
    for c in sorted(range(len(exact)), key=lambda c: counts[c] - exact[c])[: max(total - sum(counts), 0)]:
        counts[c] += 1
    while sum(counts) > total:
        counts[int(np.argmax(counts))] -= 1
    return counts


def pooled_stats(stats: Sequence[dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """Mean and std of the mixture whose component ``c`` (mean, std) has weight ``weights[c]`` (law of total
    variance): what normalises the mixed batches, so every cache's pixels go through the same affine map."""
    p = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    mean = np.asarray([s["mean"] for s in stats], dtype=np.float64)
    std = np.asarray([s["std"] for s in stats], dtype=np.float64)
    m = float((p * mean).sum())
    var = float((p * (std**2 + mean**2)).sum()) - m * m
    return {"mean": m, "std": max(var, 0.0) ** 0.5}


class MixDataset(Dataset[Any]):
    """Training records of several datasets in fixed shares of each epoch.

    Args:
        parts: the caches' training datasets (each indexed by ``(epoch, i)``).
        weights: relative share of each part in an epoch.
        seed: the run's seed (the permutations of every epoch derive from it).
    """

    def __init__(self, parts: Sequence[Any], weights: Sequence[float], seed: int) -> None:
        self.parts, self.seed = list(parts), seed
        self.counts = shares([len(p) for p in self.parts], weights)
        self.offsets = np.cumsum([0, *self.counts]).tolist()
        self._perms: dict[tuple[int, int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, epoch: int, i: int) -> tuple[int, int]:
        """``(part, position in that part)`` of item ``i`` of epoch ``epoch``."""
        c = bisect.bisect_right(self.offsets, i) - 1
        n = len(self.parts[c])
        turn, k = divmod(i - self.offsets[c], n)
        key = (epoch, c, turn)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 64:  # a worker walks through few (epoch, part, pass) at a time
                self._perms.clear()
            perm = self._perms[key] = np.random.default_rng(
                derive_seed(self.seed, Stream.MIX, epoch, c, turn)
            ).permutation(n)
        return c, int(perm[k])

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        c, k = self.locate(epoch, i)
        return self.parts[c][(epoch, k)]
