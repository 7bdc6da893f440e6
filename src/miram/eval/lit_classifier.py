"""Lightning modules for downstream evaluation: linear probe (frozen encoder) and full fine-tuning.

Both score validation every epoch with macro AUROC (the checkpoint criterion) and keep the test-set
probabilities, metrics and bootstrap intervals in :attr:`LitClassifier.test_result` for the run summary.
Batches are ``(images (B, C, H, W), target)``; :class:`LitProbe` also takes cached features ``(B, D)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miram.eval.finetune import build_encoder, llrd_param_groups, mixup
from miram.eval.linear_probe import class_weights, probe_head
from miram.eval.metrics import Task, classification_metrics
from miram.eval.tasks import evaluate_safe, per_class_metrics
from miram.models.vit import ViTConfig, ViTEncoder
from miram.train.optim import warmup_cosine


class LitClassifier(L.LightningModule):
    """Shared task plumbing: loss with class weights, probabilities, validation and test metrics.

    Args:
        task: binary | multiclass | multilabel.
        num_classes: classes (2 for binary) or labels (multilabel).
        class_weighted: weight the loss by inverse class frequency of the training targets.
        num_resamples: bootstrap resamples of the test intervals.
    """

    method = "classifier"

    def __init__(
        self, task: Task, num_classes: int, class_weighted: bool = True, num_resamples: int = 1000
    ) -> None:
        super().__init__()
        self.task, self.num_classes = task, num_classes
        self.class_weighted, self.num_resamples = class_weighted, num_resamples
        self.register_buffer("loss_weights", torch.ones(num_classes), persistent=False)
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self.test_result: dict[str, Any] = {}

    loss_weights: Tensor
    encoder: ViTEncoder
    source: str  # where the encoder's weights came from: "<method>:<path>" or "scratch"

    def logits(self, x: Tensor) -> Tensor:
        """``(B, ...)`` input -> ``(B, K)`` logits."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and self.class_weighted and dm is not None and hasattr(dm, "train_targets"):
            self.loss_weights = class_weights(dm.train_targets(), self.task, self.num_classes).to(self.device)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Class-weighted cross-entropy (or BCE with ``pos_weight`` for multilabel), in fp32."""
        w = self.loss_weights if self.class_weighted else None
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=w)
        return F.cross_entropy(logits.float(), target.long(), weight=w)

    def probs(self, logits: Tensor) -> Tensor:
        """``(B,)`` positive-class probabilities (binary) or ``(B, K)``."""
        if self.task == "multilabel":
            return logits.float().sigmoid()
        p = logits.float().softmax(-1)
        return p[:, 1] if self.task == "binary" else p

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, target = batch
        loss = self.loss(self.logits(x), target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, target = batch
        logits = self.logits(x)
        self.log(f"{stage}/loss", self.loss(logits, target), on_epoch=True, sync_dist=True)
        self._outputs[stage].append((self.probs(logits).detach().cpu(), target.detach().cpu()))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _collect(self, stage: str) -> tuple[Tensor, Tensor]:
        outs, self._outputs[stage] = self._outputs[stage], []
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def on_validation_epoch_end(self) -> None:
        probs, target = self._collect("val")
        try:
            metrics = classification_metrics(probs, target, self.task, self.num_classes)
        except (ValueError, RuntimeError):  # e.g. a sanity-check batch with one class
            metrics = {"auroc": math.nan, "accuracy": math.nan}
        # NaN AUROC would never be "best"; -1 keeps checkpoint selection well defined
        metrics = {k: (-1.0 if math.isnan(v) else v) for k, v in metrics.items()}
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        probs, target = self._collect("test")
        self.test_result = {
            "probs": probs,
            "target": target,
            "metrics": evaluate_safe(probs, target, self.task, self.num_classes, self.num_resamples),
            "per_class": per_class_metrics(probs, target, self.task, self.num_classes),
        }
        self.log_dict({f"test/{k}": v["value"] for k, v in self.test_result["metrics"].items()})


class LitProbe(LitClassifier):
    """Linear probe: frozen encoder -> pooled features -> BatchNorm (no affine) -> Linear.

    Args:
        task: binary | multiclass | multilabel.
        num_classes: classes or labels.
        encoder: miram checkpoint, run directory or exported encoder; None for a random ``vit``.
        weights: published weights loaded into ``vit``.
        vit: architecture when ``encoder`` is None.
        pool: cls | mean pooling of the encoder tokens.
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
        weights: str | None = None,
        vit: ViTConfig | dict[str, Any] | None = None,
        pool: Literal["cls", "mean"] = "cls",
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        warmup_epochs: float = 0.0,
        class_weighted: bool = True,
        num_resamples: int = 1000,
    ) -> None:
        super().__init__(task, num_classes, class_weighted, num_resamples)
        self.save_hyperparameters()
        self.encoder, self.source = build_encoder(encoder, weights, vit, global_pool=pool)
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
        return _schedule(self, opt, self.hparams["warmup_epochs"])


class LitFinetune(LitClassifier):
    """Full fine-tuning of the encoder with a linear head (MAE / the MIRAM paper's recipe).

    Args:
        task: binary | multiclass | multilabel.
        num_classes: classes or labels.
        encoder: miram checkpoint, run directory or exported encoder; None for ``vit`` from scratch.
        weights: published weights loaded into ``vit``.
        vit: architecture when ``encoder`` is None.
        pool: mean (paper) | cls pooling.
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
        weights: str | None = None,
        vit: ViTConfig | dict[str, Any] | None = None,
        pool: Literal["cls", "mean"] = "mean",
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
        self.encoder, self.source = build_encoder(encoder, weights, vit, drop_path_rate, pool)
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
        return _schedule(self, opt, hp["warmup_epochs"])


def _schedule(module: L.LightningModule, opt: torch.optim.Optimizer, warmup_epochs: float) -> Any:
    # one multiplier for every group keeps the layer-wise ratios fixed along the schedule
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    per_epoch = total / max(module.trainer.max_epochs or 1, 1)
    warmup = min(int(round(warmup_epochs * per_epoch)), total - 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, 0.0))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
