"""Lightning module for MoCo-v3 pre-training (the contrastive baseline of the MIRAM paper)."""

from __future__ import annotations

import warnings
from typing import Any

from miram.config import from_dict, to_dict
from miram.models.mocov3 import MoCoV3, MoCoV3Config, cosine_momentum
from miram.models.vit import ViTConfig
from miram.train.lit_pretrain import LitPretrainBase
from miram.train.optim import OptimConfig


class LitMoCoV3(LitPretrainBase):
    """MoCo-v3 pre-training; the momentum branch follows a cosine schedule over optimiser steps.

    Args:
        model: MoCo-v3 hyperparameters.
        optim: optimiser and schedule (paper: AdamW, base lr 1.5e-4, wd 0.1, 40 warm-up epochs).

    Under DDP set ``trainer.sync_batchnorm: true`` so the projector and predictor BatchNorms see the global
    batch, as in the paper; negatives are gathered across devices by the loss.
    """

    method = "mocov3"
    encoder_prefix = "model.encoder."

    model: MoCoV3

    def __init__(
        self,
        model: MoCoV3Config | dict[str, Any] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optim)
        self.config = from_dict(MoCoV3Config, model) if model is not None else MoCoV3Config()
        self.save_hyperparameters({"model": to_dict(self.config), "optim": to_dict(self.optim)})
        self.model = MoCoV3(self.config)
        self.momentum = self.config.base_momentum

    def encoder_config(self) -> ViTConfig:
        return self.config.encoder

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        want = tuple(self.config.encoder.img_size)
        size = tuple(getattr(dm, "image_size", want))
        if size != want:
            raise ValueError(f"data.image_size is {size} but the MoCo-v3 encoder takes {want} images")
        # The two views are one crop each of the original, cut from the native pixels by the data workers
        # (official MoCo-v3); one crop per image here would make every training view a crop of a crop.
        views, scale = getattr(dm, "views", None), getattr(dm, "scale", None)
        if views is not None and views != 2:
            raise ValueError(
                f"data.views is {views} but MoCo-v3 takes 2: both views are cut from the native pixels by "
                "the data workers (set data.views: 2)"
            )
        crop_scale = tuple(self.config.views.crop_scale)
        if scale is not None and tuple(scale) != crop_scale:
            raise ValueError(
                f"data.scale {tuple(scale)} differs from model.views.crop_scale {crop_scale}: both are the "
                "area range of one view's crop; set them equal"
            )
        if self.trainer.world_size > 1 and not self.config.gather_negatives:
            warnings.warn(
                "MoCo-v3 with gather_negatives=false under DDP uses only the local batch as negatives",
                stacklevel=2,
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Right after each optimiser step, move the momentum branch towards the updated online branch. Here
        # rather than in on_train_batch_end, which runs after the callbacks' on_train_batch_end: a step
        # checkpoint written there would miss this update, and a resumed run would drift.
        super().optimizer_step(*args, **kwargs)
        step = self.trainer.global_step + 1  # the step just taken (Lightning counts it after this hook)
        total = int(self.trainer.estimated_stepping_batches)
        self.momentum = cosine_momentum(step, total, self.config.base_momentum)
        self.model.update_momentum(self.momentum)
        self.log("train/momentum", self.momentum, on_step=True, on_epoch=False)
