"""Lightning module for masked-autoencoder pre-training (MAE and MIRAM)."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from miram.checkpoints import describe, training_data
from miram.config import from_dict, to_dict
from miram.models.masked_autoencoder import MaskedAutoencoder, MaskedAutoencoderConfig
from miram.models.outputs import LossOutput
from miram.models.vit import ViTConfig
from miram.seeding import forked_rng, step_seed
from miram.train.guard import NonFiniteGuard
from miram.train.optim import OptimConfig, absolute_lr, build_optimizer


class LitPretrainBase(L.LightningModule):
    """What every pre-training method shares: logging of loss terms, the optimiser, encoder metadata.

    Subclasses set ``self.model`` (whose ``forward(images)`` returns a LossOutput), ``self.method`` and
    ``encoder_prefix`` (the state-dict prefix of the ViT encoder, for probes and export).
    """

    method = "base"
    encoder_prefix = "model.encoder."
    # Parameter names exempt from weight decay besides biases and 1-D parameters: none. Official MAE
    # pre-training (timm's add_weight_decay without a skip list) decays the cls and mask tokens; the
    # position tables are fixed buffers (docs/decisions.md, "Weight decay").
    weight_decay_exempt: ClassVar[frozenset[str]] = frozenset()
    model: torch.nn.Module

    def __init__(self, optim: OptimConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.optim = from_dict(OptimConfig, optim) if optim is not None else OptimConfig()

    def step(self, images: Tensor) -> LossOutput:
        """Forward pass of the method on a batch of images.

        Under a Trainer, every random draw of the pass (masks, views, drop-path) comes from the stream of
        this batch, rank and epoch (:func:`miram.seeding.step_seed`): ranks differ, and a resumed run
        redraws exactly what the uninterrupted one drew.
        """
        with forked_rng(step_seed(self._trainer), images.device):
            out: LossOutput = self.model(images)
        return out

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        out = self.step(images)
        self.log("train/loss", out.loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log_dict({f"train/{k}": v for k, v in out.terms.items()}, on_step=False, on_epoch=True)
        return out.loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        out = self.step(images)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in out.terms.items()}, sync_dist=True)

    def effective_batch(self) -> int:
        """Samples per optimiser step over all devices."""
        dm = self.trainer.datamodule  # type: ignore[attr-defined]
        per_device = int(getattr(dm, "batch_size", 1))
        return per_device * self.trainer.accumulate_grad_batches * self.trainer.world_size

    def configure_optimizers(self) -> Any:
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(self.trainer.max_epochs or 1, 1)
        eff = self.effective_batch()
        skip = set(self.weight_decay_exempt)
        opt, sched = build_optimizer(self.model, self.optim, eff, total, total / epochs, skip)
        self.print(f"effective batch {eff}, learning rate {absolute_lr(self.optim, eff):.3g}, {total} steps")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_callbacks(self) -> list[Callback]:
        # Every method is guarded against non-finite steps; a guard the trainer already has (the CLI's
        # --guard.*) is kept, since a module callback would replace it.
        if any(isinstance(cb, NonFiniteGuard) for cb in self.trainer.callbacks):  # type: ignore[attr-defined]
            return []
        return [NonFiniteGuard()]

    def encoder_config(self) -> ViTConfig:
        """The encoder's architecture."""
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets probes, export and predict rebuild the encoder from any method's checkpoint.
        checkpoint["miram"] = describe(self, self.method, self.encoder_config(), self.encoder_prefix)
        checkpoint["miram"]["training_data"] = training_data(self)


class LitMaskedAutoencoder(LitPretrainBase):
    """MAE / MIRAM pre-training.

    Args:
        model: the masked autoencoder (encoder, scales, masking, targets).
        optim: optimiser and schedule.
    """

    method = "masked_autoencoder"

    def __init__(
        self,
        model: MaskedAutoencoderConfig | dict[str, Any] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optim)
        self.config = (
            from_dict(MaskedAutoencoderConfig, model) if model is not None else MaskedAutoencoderConfig()
        )
        # Plain dicts, so a checkpoint rebuilds the model without unpickling project classes.
        self.save_hyperparameters({"model": to_dict(self.config), "optim": to_dict(self.optim)})
        self.model = MaskedAutoencoder(self.config)
        self.method = "miram" if len(self.config.scales) > 1 else "mae"

    def encoder_config(self) -> ViTConfig:
        return self.config.encoder

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if getattr(dm, "views", 1) != 1:
            raise ValueError("data.views must be 1 for a masked autoencoder (several views are for MoCo-v3)")
        size = tuple(getattr(dm, "image_size", self.config.data_size))
        if size != self.config.data_size:
            raise ValueError(
                f"data.image_size is {size} but the model needs {self.config.data_size} "
                f"(encoder img_size {tuple(self.config.encoder.img_size)} x largest scale factor "
                f"{self.config.max_factor})"
            )
