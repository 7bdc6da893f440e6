"""Linear probe of a frozen encoder: pooled features -> BatchNorm without affine parameters -> linear.

The parameter-free BatchNorm standardises the frozen features so one learning rate suits every encoder
(MAE's linear-probing recipe; MoCo-v3 issue #20).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from miram.checkpoints import Which
from miram.eval.classifier import LitClassifier, build_encoder, warmup_cosine_schedule
from miram.eval.metrics import Task
from miram.models.vit import Pool, ViTConfig


def probe_head(dim: int, num_outputs: int) -> nn.Sequential:
    """BatchNorm1d(affine=False, eps=1e-6) -> Linear, head initialised with std 0.01."""
    linear = nn.Linear(dim, num_outputs)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


class LitProbe(LitClassifier):
    """Linear probe: frozen encoder -> pooled features -> BatchNorm (no affine) -> Linear.

    Args:
        task: binary | multiclass | multilabel.
        num_classes: classes or labels.
        encoder: miram checkpoint, run directory or exported encoder; None for a random ``vit``.
        encoder_checkpoint: which checkpoint of a run directory ``encoder``: last (the final pre-training
            epoch, as the paper evaluates) | best (lowest pre-training validation loss).
        weights: published weights loaded into ``vit``.
        vit: architecture when ``encoder`` is None.
        pool: cls | mean | mean_fc_norm pooling of the encoder tokens (see ``ViTConfig.global_pool``).
        lr: Adam learning rate (paper: 1e-2).
        weight_decay: L2 on the head.
        warmup_epochs: linear warm-up before the cosine decay.
        class_weighted: inverse-frequency loss weights.
        num_resamples: bootstrap resamples for test intervals.

    Batches may hold images ``(B, C, H, W)`` (augmented on the fly) or cached features ``(B, D)``.
    """

    method = "probe"

    def __init__(
        self,
        task: Task = "binary",
        num_classes: int = 2,
        encoder: str | None = None,
        encoder_checkpoint: Which = "last",
        weights: str | None = None,
        vit: ViTConfig | dict[str, Any] | None = None,
        pool: Pool = "cls",
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        warmup_epochs: float = 0.0,
        class_weighted: bool = True,
        num_resamples: int = 1000,
    ) -> None:
        super().__init__(task, num_classes, class_weighted, num_resamples)
        self.save_hyperparameters()
        self.encoder, self.source = build_encoder(
            encoder, weights, vit, global_pool=pool, which=encoder_checkpoint
        )
        self.encoder.requires_grad_(False).eval()
        self.head = probe_head(self.encoder.embed_dim, num_classes)

    def train(self, mode: bool = True) -> LitProbe:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout / drop-path, whatever Lightning asks
        return self

    def logits(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            with torch.no_grad():
                x = self.encoder(x)
        return self.head(x.float())

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(
            self.head.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        return warmup_cosine_schedule(self, opt, self.hparams["warmup_epochs"])
