"""Full fine-tuning of an encoder with a linear head (MAE / the MIRAM paper's recipe): layer-wise
learning-rate decay, drop-path, mixup, warm-up + cosine.

Layer-wise decay follows BEiT / MAE fine-tuning: parameter groups whose learning rate is scaled by
``decay ** (depth + 1 - layer)``, where the patch embedding, cls token and position table are layer 0,
block ``i`` is layer ``i + 1`` and the final norm and head are layer ``depth + 1``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from miram.checkpoints import Which
from miram.eval.classifier import LitClassifier, build_encoder, warmup_cosine_schedule
from miram.eval.metrics import Task
from miram.models.vit import Pool, ViTConfig, ViTEncoder


def layer_id(name: str, depth: int) -> int:
    """Layer index of an encoder parameter name for layer-wise decay."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def llrd_param_groups(
    encoder: ViTEncoder, head: nn.Module, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning rates; biases and 1-D parameters get no weight decay.

    Returns:
        Groups with ``params``, ``lr``, ``weight_decay`` and ``lr_scale`` (kept so schedules can rescale).
    """
    depth = encoder.config.depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named = [(n, p) for n, p in encoder.named_parameters()] + [
        (f"head.{n}", p) for n, p in head.named_parameters()
    ]
    for name, p in named:
        if not p.requires_grad:
            continue
        layer = depth + 1 if name.startswith("head.") else layer_id(name, depth)
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name in ("cls_token", "pos_embed")
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[key] = {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def mixup(
    images: Tensor, target: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mix each image with a random partner (Zhang et al., 2018).

    Returns:
        Mixed images ``(B, C, H, W)``, the targets, the partners' targets and the weight ``lam`` of the first;
        the loss is ``lam * L(target) + (1 - lam) * L(partner)``.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[perm], target, target[perm], lam


class LitFinetune(LitClassifier):
    """Full fine-tuning of the encoder with a linear head (MAE / the MIRAM paper's recipe).

    Args:
        task: binary | multiclass | multilabel.
        num_classes: classes or labels.
        encoder: miram checkpoint, run directory or exported encoder; None for ``vit`` from scratch.
        encoder_checkpoint: which checkpoint of a run directory ``encoder``: last (the final pre-training
            epoch, as the paper evaluates) | best (lowest pre-training validation loss).
        weights: published weights loaded into ``vit``.
        vit: architecture when ``encoder`` is None.
        pool: mean_fc_norm (MAE and the paper: ``fc_norm(mean(patch tokens))`` without the final norm, fc_norm
            fresh) | mean (mean of the normalised patch tokens) | cls.
        drop_path_rate: stochastic depth of the encoder.
        optimizer: adamw, or adam with L2 weight decay (the paper's code).
        lr: peak learning rate of the head; layer ``l`` gets ``lr * layer_decay ** (depth + 1 - l)``.
        layer_decay: layer-wise learning-rate decay (1 = off).
        weight_decay: weight decay (none on biases, norms, tokens).
        warmup_epochs: linear warm-up, then half-cycle cosine to 0, per step.
        mixup_alpha: Beta(alpha, alpha) mixup of training batches; 0 = off.
        head_init_std: truncated-normal std of the head weights (MAE: 2e-5).
        class_weighted: inverse-frequency loss weights.
        num_resamples: bootstrap resamples for test intervals.
    """

    method = "finetune"

    def __init__(
        self,
        task: Task = "binary",
        num_classes: int = 2,
        encoder: str | None = None,
        encoder_checkpoint: Which = "last",
        weights: str | None = None,
        vit: ViTConfig | dict[str, Any] | None = None,
        pool: Pool = "mean_fc_norm",
        drop_path_rate: float = 0.1,
        optimizer: Literal["adamw", "adam"] = "adamw",
        lr: float = 1e-4,
        layer_decay: float = 0.75,
        weight_decay: float = 0.05,
        warmup_epochs: float = 2.0,
        mixup_alpha: float = 0.0,
        head_init_std: float = 2e-5,
        class_weighted: bool = True,
        num_resamples: int = 1000,
    ) -> None:
        super().__init__(task, num_classes, class_weighted, num_resamples)
        self.save_hyperparameters()
        self.encoder, self.source = build_encoder(
            encoder, weights, vit, drop_path_rate, pool, which=encoder_checkpoint
        )
        self.head = nn.Linear(self.encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, target = batch
        alpha = self.hparams["mixup_alpha"]
        if alpha <= 0:
            return super().training_step(batch, batch_idx)
        mixed, ta, tb, lam = mixup(images, target, alpha)
        logits = self.logits(mixed)
        loss = lam * self.loss(logits, ta) + (1 - lam) * self.loss(logits, tb)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = llrd_param_groups(self.encoder, self.head, hp["lr"], hp["weight_decay"], hp["layer_decay"])
        if hp["optimizer"] == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=hp["lr"])
        else:
            opt = torch.optim.AdamW(groups, lr=hp["lr"])
        return warmup_cosine_schedule(self, opt, hp["warmup_epochs"])
