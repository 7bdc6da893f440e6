"""What makes a pre-training run resumable exactly, from any checkpoint, after any kill.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the checkpoint's own directory,
  flushes it to disk and renames it over the old one (``os.replace``, atomic on POSIX). A kill at any point
  leaves either the previous complete file or the new complete file, never a truncated one. (Lightning's
  default writes through ``fsspec``, whose local "transaction" stages the file in ``/tmp`` and then moves it:
  across file systems that move is a copy, and a kill during the copy truncates ``last.ckpt``.)
- :func:`step_checkpoint` saves ``last.ckpt`` every N optimiser steps, besides the run directory's epoch-end
  checkpoints, so a pre-empted run loses at most N steps.
- :class:`RngStates` puts the global RNG states of every rank into the checkpoint and gives each rank its
  own back on resume. miram's own draws do not depend on them (they come from per-batch streams,
  :mod:`miram.seeding`); they are there for code outside those streams, e.g. a user's callback.

The rest of an exact resume is Lightning's: model, optimiser, LR scheduler, precision scaler, loop
counters, callback states (Performer redraw schedule; the features themselves are model buffers) and the
training loader's position (``torchdata``'s ``StatefulDataLoader``, see :mod:`miram.data.sampling`).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from miram.dist import gather_object

TMP_PREFIX = ".tmp-"  # partial checkpoints (a kill during the write) start with this; safe to delete


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic on a local file system (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(checkpoint, Path(path))


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets a plain file's mode
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the checkpoint
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def remove_partial_writes(directory: Path) -> list[Path]:
    """Delete the temporary files that writes cut short by a kill left in ``directory``; returns them.

    Call it only while nothing writes there (before training starts).
    """
    partial = sorted(directory.glob(TMP_PREFIX + "*")) if directory.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)  # several ranks may clean up at once
    return partial


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_checkpoint(dirpath: Path, every_n_train_steps: int) -> ModelCheckpoint:
    """A checkpoint callback that rewrites ``dirpath/last.ckpt`` every ``every_n_train_steps`` steps."""
    return ModelCheckpoint(
        dirpath=dirpath,
        every_n_train_steps=every_n_train_steps,
        save_top_k=0,  # only last.ckpt; the best checkpoint is the epoch-end callback's
        save_last=True,
        enable_version_counter=False,  # share last.ckpt with the epoch-end callback, never last-v1.ckpt
    )


def rng_state() -> dict[str, Any]:
    """This process's global RNG states: Python, NumPy, torch CPU and every CUDA device.

    Only tensors and plain numbers, so checkpoints stay loadable with ``torch.load(weights_only=True)``.
    """
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states written by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngStates(L.Callback):
    """Checkpoint the global RNG states of every rank (``checkpoint["rng_states"]``, one entry per rank) and
    restore each rank's own when training resumes.

    A resume on a different number of ranks keeps the states that ``seed_everything`` set for the ranks
    the checkpoint does not cover.
    """

    KEY = "rng_states"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning builds the checkpoint on every rank and writes rank 0's, so rank 0 collects them all.
        checkpoint[self.KEY] = gather_object(rng_state())

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(self.KEY) or []
        self._pending = states[trainer.global_rank] if trainer.global_rank < len(states) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Restored as late as possible: building the loaders and restoring the loops draw from them.
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
