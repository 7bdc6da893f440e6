"""Reproducible random streams that differ across ranks, workers and batches.

Every random draw of a training run comes from a stream named by a tuple of integers: the run's seed, what
the draw is for (:class:`Stream`), and where it happens (rank, epoch, batch index or record index). A stream's
seed is a hash of that tuple (:func:`derive_seed`), so

- two ranks, two workers or two batches never share a stream (the fault of seeding every rank alike);
- a given seed and world size reproduce every draw exactly, whatever the worker count;
- a run resumed mid-epoch draws exactly what the uninterrupted run drew, without replaying anything: the
  stream of batch ``b`` of epoch ``e`` is a function of ``(seed, rank, e, b)`` alone.

Code that only knows the global RNG (kornia's augmentation, dropout, drop-path) runs inside
:func:`forked_rng`, which seeds the global generators of the CPU and of the tensor's device for the block
and restores them afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

if TYPE_CHECKING:
    import lightning as L

SEED_ENV = "PL_GLOBAL_SEED"  # where Lightning's seed_everything publishes the run's seed to every rank


class Stream(IntEnum):
    """What a random draw is for; part of every stream key, so uses never share a stream."""

    CROP = 1  # random-resized-crop geometry of one record (data workers)
    FLIP = 2  # on-device flips of one training batch
    TRAIN_STEP = 3  # everything random in one training forward: masks, MoCo-v3 views, drop-path
    VAL_STEP = 4  # the same in validation (fixed across epochs, so validation losses compare)
    WORKER = 5  # a loader worker's global RNGs (nothing of miram's draws from them)
    MIX = 6  # which records of one cache fill its share of an epoch of several caches
    EVAL_CROP = 7  # the fixed in-breast crop of a film outside training (the same every epoch)


def run_seed() -> int:
    """The run's seed: the one ``seed_everything`` chose (``seed_everything:`` in a config), else 0.

    Lightning publishes it in ``PL_GLOBAL_SEED``, which its DDP launcher hands to every rank and which data
    workers inherit; 0 keeps unseeded runs rank-consistent (the samplers of all ranks must agree).
    """
    return int(os.environ.get(SEED_ENV, "0"))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer ``keys`` (a hash: neighbouring keys give unrelated streams)."""
    entropy = [int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextmanager
def forked_rng(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with the global CPU generator (and ``device``'s, if CUDA) seeded with ``seed``.

    The generators' states before the block are restored after it, so the block neither reads nor advances
    the surrounding streams. ``seed=None`` runs the block on the global generators as they are.
    """
    if seed is None:
        yield
        return
    device = torch.device(device)
    cuda: list[int] = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        # only these: torch.manual_seed would also reseed CUDA devices that fork_rng does not restore
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def train_position(trainer: L.Trainer, upcoming: bool = False) -> tuple[int, int]:
    """``(epoch, batch index within the epoch)`` of the training batch being processed.

    Both are restored by a mid-epoch resume. ``upcoming=True`` names the batch being fetched and moved to the
    device (``on_after_batch_transfer`` runs before Lightning counts it as ready).
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return trainer.current_epoch, progress.ready - (0 if upcoming else 1)


def step_seed(trainer: L.Trainer | None) -> int | None:
    """Seed of the forward pass in progress: training batches by ``(rank, epoch, batch)``, validation batches
    by ``(rank, batch)``; None outside fitting (tests, notebooks, figures), which keeps the global RNG.
    """
    if trainer is None:
        return None
    if trainer.training:
        epoch, batch = train_position(trainer)
        return derive_seed(run_seed(), Stream.TRAIN_STEP, trainer.global_rank, epoch, batch)
    if trainer.validating or trainer.sanity_checking:
        fitting = trainer.state.fn == TrainerFn.FITTING
        loop = trainer.fit_loop.epoch_loop.val_loop if fitting else trainer.validate_loop
        batch = loop.batch_progress.current.ready - 1
        return derive_seed(run_seed(), Stream.VAL_STEP, trainer.global_rank, batch)
    return None
