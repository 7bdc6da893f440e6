"""Guarded numerics: an optimiser step with a non-finite loss or gradient is skipped on every rank.

Where it sits in Lightning's step (automatic optimisation): forward -> ``on_before_backward`` (the loss is
checked here, per micro-batch) -> backward (DDP all-reduces the gradients) -> fp16 only: the grad scaler
unscales -> ``on_before_optimizer_step`` (gradients checked here, the decision taken) -> gradient clipping
(``trainer.gradient_clip_val``) -> ``optimizer.step()``.

A skipped step clears the gradients (``set_to_none``), so AdamW leaves every parameter and its moments
untouched: no update, no weight decay, no step count. The learning-rate schedule still advances (like a
step the fp16 grad scaler skips). The decision is all-reduced, so every rank skips together even when
only one of them sees the fault (a rank-local loss, or sharded gradients).

Under fp16 (a grad scaler), non-finite *gradients* with a finite loss are the scaler's normal overflow
probe: the scaler skips that step and lowers its scale, so the guard neither skips nor counts it. A
non-finite loss is always counted.

After ``max_bad_steps`` consecutive skipped steps the run stops with :class:`NonFiniteError`, naming the
step and the last good checkpoint: when a streak begins, the newest checkpoint is copied to
``last-good.ckpt`` beside it, since ``last.ckpt`` may be rewritten during the streak (with non-finite
weights, if a parameter is what went bad).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


class NonFiniteError(RuntimeError):
    """Too many consecutive optimiser steps had a non-finite loss or gradient."""


def grad_norm(grads: list[Tensor]) -> Tensor:
    """Total 2-norm of ``grads`` in fp32 (NaN or inf when any gradient is); 0 when there are none."""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm([g.detach() for g in grads])
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def newest_checkpoint(trainer: L.Trainer) -> str | None:
    """The most recently written checkpoint that the trainer's checkpoint callbacks know of."""
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for attr in ("last_model_path", "best_model_path"):
            path = getattr(cb, attr, "")
            if path and Path(path).is_file():
                paths.append(Path(path))
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None


def keep_good_checkpoint(trainer: L.Trainer) -> str | None:
    """Copy the newest checkpoint to ``last-good.ckpt`` beside it and return that path.

    Called when a streak of bad steps begins: ``last.ckpt`` may be rewritten during the streak, with
    poisoned weights if a parameter went non-finite. Rank 0 copies; every rank returns the path.
    """
    newest = newest_checkpoint(trainer)
    if newest is None:
        return None
    keep = Path(newest).with_name("last-good.ckpt")
    if Path(newest) != keep and trainer.is_global_zero:
        tmp = keep.with_suffix(".ckpt.tmp")
        shutil.copyfile(newest, tmp)
        os.replace(tmp, keep)  # atomic: never a half-written last-good.ckpt
    trainer.strategy.barrier("miram.guard.keep_good_checkpoint")
    return str(keep)


class NonFiniteGuard(Callback):
    """Skip, count and log optimiser steps whose loss or gradients are not finite; stop after a streak.

    Args:
        max_bad_steps: K; the run stops after K consecutive skipped steps (0: never stop).
        log_grad_norm: log ``train/grad_norm``, the total gradient norm before clipping (free: the check
            computes it).

    Logs ``train/skipped_steps`` (skipped so far in this run, all causes) every step.
    """

    def __init__(self, max_bad_steps: int = 10, log_grad_norm: bool = True) -> None:
        if max_bad_steps < 0:
            raise ValueError(f"max_bad_steps must be >= 0, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.log_grad_norm = log_grad_norm
        self.skipped = 0  # steps skipped in this run
        self.consecutive = 0  # the current streak
        self.good_checkpoint: str | None = None  # newest checkpoint when the streak began
        self._loss_bad: Tensor | None = None  # any micro-batch of this step had a non-finite loss

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()  # stays on the device: no sync here
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = grad_norm(grads).to(pl_module.device)
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.zeros((), dtype=torch.bool)
        self._loss_bad = None
        local = torch.stack([loss_bad.to(pl_module.device), ~torch.isfinite(norm)]).float()
        # Ranks with a bad loss, ranks with bad gradients: the one host sync of the step.
        n_loss, n_grad = (int(x) for x in trainer.strategy.reduce(local, reduce_op="sum").tolist())
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if n_grad and not n_loss and scaler is not None:
            return  # fp16 overflow: the grad scaler skips this step and lowers its scale
        if not (n_loss or n_grad):
            self.consecutive = 0
            if self.log_grad_norm:
                pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
            return

        optimizer.zero_grad(set_to_none=True)  # optimizer.step() is now a no-op for every parameter
        if self.consecutive == 0:
            self.good_checkpoint = keep_good_checkpoint(trainer)
        self.skipped += 1
        self.consecutive += 1
        step = trainer.global_step
        what = " and ".join(
            s
            for s, n in (
                (f"non-finite loss on {n_loss} rank(s)", n_loss),
                (f"non-finite gradients (norm {float(norm):g})", n_grad),
            )
            if n
        )
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        rank_zero_warn(
            f"step {step}: {what}; optimiser step skipped on every rank "
            f"({self.consecutive} in a row, {self.skipped} in this run)"
        )
        if self.max_bad_steps and self.consecutive >= self.max_bad_steps:
            first = step - self.consecutive + 1
            raise NonFiniteError(
                f"step {step}: {self.consecutive} consecutive optimiser steps had a non-finite loss or "
                f"gradient (first at step {first}; last was {what}); last good checkpoint: "
                f"{self.good_checkpoint or 'none written yet'}. Resume from it with a lower learning rate or "
                "trainer.gradient_clip_val, or check the data; guard.max_bad_steps sets the limit"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
