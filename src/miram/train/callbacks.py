"""Training callbacks: reconstruction figures and the run summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from miram.provenance import git_commit
from miram.train.reconstruct import save_reconstruction_figure


class ReconstructionFigures(L.Callback):
    """Every ``every_n_epochs`` epochs (and after the last), save per-scale reconstruction figures of a fixed
    validation batch to ``<run>/figures/recon_e{epoch}_x{f}.png``.

    Args:
        every_n_epochs: period in epochs.
        num_images: samples per figure.
    """

    def __init__(self, every_n_epochs: int = 5, num_images: int = 4) -> None:
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.written: list[Path] = []

    def _batch(self, trainer: L.Trainer) -> torch.Tensor | None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        if dm is None:
            return None
        images: torch.Tensor = dm.images("val", self.num_images)
        return images

    def _save(self, trainer: L.Trainer, module: L.LightningModule, tag: str) -> None:
        model = getattr(module, "model", None)
        if not trainer.is_global_zero or model is None or not hasattr(model, "decoders"):
            return
        images = self._batch(trainer)
        if images is None:
            return
        was_training = model.training
        model.eval()
        out = Path(trainer.default_root_dir) / "figures" / f"recon_{tag}.png"
        self.written += save_reconstruction_figure(model, images.to(module.device), out)
        model.train(was_training)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0 and epoch != trainer.max_epochs:
            self._save(trainer, pl_module, f"e{epoch:03d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, f"e{trainer.current_epoch:03d}_final")


class RunSummary(L.Callback):
    """Write ``<run>/summary.json`` at the end of fitting: method, checkpoints, final metrics, timing."""

    def __init__(self) -> None:
        self.start = time.time()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.time()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        run = Path(trainer.default_root_dir)
        ckpt = trainer.checkpoint_callback
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
        }
        summary: dict[str, Any] = {
            "kind": "pretrain",
            "method": getattr(pl_module, "method", type(pl_module).__name__),
            "run_dir": str(run),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "seconds": round(time.time() - self.start, 1),
            "metrics": metrics,
            "best_checkpoint": getattr(ckpt, "best_model_path", "") or None,
            "last_checkpoint": str(run / "checkpoints" / "last.ckpt"),
            "git_commit": git_commit(),
            "precision": str(trainer.precision),
            "devices": trainer.world_size,
        }
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
