"""Guarded numerics (issue 11, item 3): faults injected into a tiny MAE run on one process.

Here the reduction runs at world size 1; the 2-process case (a NaN on one rank skips the step on both
through the all-reduced decision) is in test_guard_ddp.py (slow tier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from miram.train.guard import NonFiniteError, NonFiniteGuard
from miram.train.lit_pretrain import LitMaskedAutoencoder

TINY = {
    "encoder": {"img_size": [16, 16], "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2},
    "scales": [{"factor": 1, "depth": 1, "embed_dim": 16, "num_heads": 2}],
}
OPTIM = {"lr": 1e-3, "warmup_epochs": 0}


def tiny_module() -> LitMaskedAutoencoder:
    return LitMaskedAutoencoder(model=TINY, optim=OPTIM)


def loader(num_batches: int, batch: int = 4, nan_batches: tuple[int, ...] = ()) -> DataLoader[Any]:
    images = torch.rand(num_batches * batch, 1, 16, 16)
    for i in nan_batches:
        images[i * batch] = float("nan")  # one image of the batch
    return DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=batch)


class Snapshots(Callback):
    """Parameters and optimiser step counts after every training batch."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []
        self.opt_steps: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.params.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})
        state = trainer.optimizers[0].state
        self.opt_steps.append(max((float(s["step"]) for s in state.values()), default=0.0))


class PoisonParameter(Callback):
    """Set one weight to NaN before training batch ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if idx == self.at:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def trainer(tmp_path: Path, callbacks: list[Callback], steps: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kwargs,
    )


def test_every_pretraining_module_brings_a_guard(tmp_path: Path) -> None:
    t = trainer(tmp_path, [], 1)
    t.fit(tiny_module(), loader(1))
    assert sum(isinstance(c, NonFiniteGuard) for c in t.callbacks) == 1
    # one the trainer already has (the CLI's --guard.*) is kept, not replaced
    mine = NonFiniteGuard(max_bad_steps=3)
    t = trainer(tmp_path, [mine], 1)
    t.fit(tiny_module(), loader(1))
    assert [c for c in t.callbacks if isinstance(c, NonFiniteGuard)] == [mine]


@pytest.mark.parametrize("clip", [None, 0.5])
def test_poisoned_batch_skips_one_step(tmp_path: Path, clip: float | None) -> None:
    snaps, guard = Snapshots(), NonFiniteGuard(max_bad_steps=2)
    t = trainer(tmp_path, [snaps, guard], 4, gradient_clip_val=clip)
    with pytest.warns(UserWarning, match=r"step 1: non-finite loss on 1 rank\(s\) and non-finite gradients"):
        t.fit(tiny_module(), loader(4, nan_batches=(1,)))
    assert guard.skipped == 1 and guard.consecutive == 0 and t.global_step == 4
    p = snaps.params
    # batch 1 changed nothing (no update, no weight decay, no AdamW step); batches 0, 2 and 3 did
    assert all(torch.equal(p[0][k], p[1][k]) for k in p[0])
    assert any(not torch.equal(p[1][k], p[2][k]) for k in p[1])
    assert snaps.opt_steps == [1.0, 1.0, 2.0, 3.0]
    assert all(torch.isfinite(v).all() for v in p[3].values())
    assert float(t.callback_metrics["train/skipped_steps"]) == 1.0
    assert torch.isfinite(t.callback_metrics["train/grad_norm"])


def test_poisoned_parameter_stops_after_k_steps(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    snaps, guard = Snapshots(), NonFiniteGuard(max_bad_steps=3)
    t = trainer(tmp_path, [snaps, PoisonParameter(at=2), guard, ckpt], 10)
    good = str(tmp_path / "ckpt" / "last-good.ckpt")
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(NonFiniteError) as err:
        t.fit(tiny_module(), loader(10))
    message = str(err.value)
    assert message.startswith("step 4: 3 consecutive optimiser steps") and "first at step 2" in message
    assert f"last good checkpoint: {good}" in message
    assert guard.skipped == 3 and snaps.opt_steps == [1.0, 2.0, 2.0, 2.0]
    saved = torch.load(good, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2  # written after the second (last good) step, before the poison
    # last.ckpt was rewritten during the streak, with the poisoned weight
    bad = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not all(torch.isfinite(v).all() for v in bad["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_fp16_overflow_is_left_to_the_grad_scaler(tmp_path: Path) -> None:
    """Under fp16 non-finite gradients with a finite loss are the scaler's overflow probe: not counted."""

    class Overflow(Callback):  # after backward, before the scaler unscales: what an fp16 overflow looks like
        def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.global_step == 0:
                grad = next(p.grad for p in pl_module.parameters() if p.grad is not None)
                grad.view(-1)[0] = float("inf")

    guard = NonFiniteGuard(max_bad_steps=1)
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin itself keeps fp16 and a GradScaler
    t = trainer(tmp_path, [Overflow(), guard], 2, plugins=[MixedPrecision("16-mixed", "cpu")])
    t.fit(tiny_module(), loader(2))
    assert guard.skipped == 0 and t.global_step == 2
    assert t.precision_plugin.scaler.get_scale() < 2.0**16  # type: ignore[attr-defined]  # lowered: step skipped
