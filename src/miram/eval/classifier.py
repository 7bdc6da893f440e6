"""What the linear probe and fine-tuning share: the encoder under evaluation, class-weighted losses,
validation and test metrics, and the warm-up + cosine schedule.

Both score validation every epoch with macro AUROC (the checkpoint criterion) and keep the test-set
probabilities, metrics and bootstrap intervals in :attr:`LitClassifier.test_result` for the run summary.
Batches are ``(images (B, C, H, W), target)``; the probe also takes cached features ``(B, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from miram import dist as mdist
from miram.checkpoints import Which, describe, load_encoder, resolve_checkpoint, training_data
from miram.config import from_dict, to_dict
from miram.eval.gather import distinct_samples, gather_in_order
from miram.eval.metrics import Task, classification_metrics, evaluate_safe, per_class_metrics
from miram.models.pretrained import load_pretrained
from miram.models.vit import Pool, ViTConfig, ViTEncoder
from miram.train.optim import warmup_cosine


@dataclass
class EncoderSource:
    """Where the encoder under evaluation came from (recorded in every evaluation's ``summary.json``).

    Attributes:
        description: ``"<method>:<path>"``, ``"weights:<path>"`` or ``"scratch"``.
        checkpoint: the file its weights were read from (a run directory resolved to its checkpoint file), or
            None for a randomly initialised encoder.
        which: for a run directory, which of its checkpoints was taken (``last`` | ``best``); else None.
        training_data: what the encoder was trained on (caches, sources, licences), as its checkpoint or
            export recorded it.
    """

    description: str = "scratch"
    checkpoint: str | None = None
    which: Which | None = None
    training_data: list[dict[str, Any]] = field(default_factory=list)


def build_encoder(
    encoder: str | None = None,
    weights: str | None = None,
    vit: ViTConfig | dict[str, Any] | None = None,
    drop_path_rate: float | None = None,
    global_pool: Pool | None = None,
    which: Which = "last",
) -> tuple[ViTEncoder, EncoderSource]:
    """The encoder to evaluate, and where it came from.

    Args:
        encoder: miram checkpoint, run directory or exported ``.safetensors``; None for ``vit`` from scratch.
        weights: published weights (official MAE, timm, Hugging Face ViTMAE) loaded into ``vit``.
        vit: architecture for ``weights`` or scratch (ignored when ``encoder`` is given).
        drop_path_rate: overrides the architecture's stochastic depth.
        global_pool: overrides the pooling of :meth:`ViTEncoder.forward`. ``mean_fc_norm`` drops the
            encoder's final norm and adds a fresh ``fc_norm`` (unit weight, zero bias), as MAE fine-tuning
            does.
        which: for a run directory ``encoder``: ``last`` (the final pre-training checkpoint, as the paper
            evaluates) or ``best`` (lowest pre-training validation loss).
    """
    source = EncoderSource()
    if encoder is not None:
        file = resolve_checkpoint(encoder, which)
        loaded, meta = load_encoder(file)
        config, state = loaded.config, loaded.state_dict()
        source = EncoderSource(
            f"{meta.get('method', '?')}:{encoder}",
            str(file),
            which if Path(encoder).is_dir() else None,
            list(meta.get("training_data") or []),
        )
    else:
        config = from_dict(ViTConfig, vit) if vit is not None else ViTConfig()
        state = None
    overrides: dict[str, Any] = {}
    if drop_path_rate is not None:
        overrides["drop_path_rate"] = drop_path_rate
    if global_pool is not None:
        overrides["global_pool"] = global_pool
    model = ViTEncoder(replace(config, **overrides))
    if state is not None:
        own = model.state_dict()
        # a change of pooling moves the final norm (norm <-> fc_norm): the other one starts fresh
        fresh = [k for k in own if k not in state and k.startswith(("norm.", "fc_norm."))]
        state = {k: v for k, v in state.items() if k in own or not k.startswith(("norm.", "fc_norm."))}
        model.load_state_dict({**state, **{k: own[k] for k in fresh}})
    if weights is not None:
        load_pretrained(model, weights)
        source = EncoderSource(f"weights:{weights}", str(weights))
    return model, source


def class_weights(target: Tensor, task: Task, num_classes: int) -> Tensor:
    """total / (count_c * K) per class (multiclass), or negatives / positives per label (multilabel)."""
    if task == "multilabel":
        pos = target.float().sum(0).clamp_min(1)
        return (target.shape[0] - pos) / pos
    counts = torch.bincount(target.long(), minlength=num_classes).float().clamp_min(1)
    return counts.sum() / (counts * num_classes)


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
    source: EncoderSource  # where the encoder's weights came from

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
        """This stage's probabilities and targets from every rank, in dataset order, each sample once (the
        DistributedSampler's padding dropped): the metrics equal one process's, on every rank."""
        outs, self._outputs[stage] = self._outputs[stage], []
        probs, target = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        if mdist.world_size() == 1:
            return probs, target
        total = distinct_samples(
            self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        )
        return gather_in_order(probs, total, self.device), gather_in_order(target, total, self.device)

    def on_validation_epoch_end(self) -> None:
        probs, target = self._collect("val")
        try:
            metrics = classification_metrics(probs, target, self.task, self.num_classes)
        except (ValueError, RuntimeError):  # e.g. a sanity-check batch with one class
            metrics = {"auroc": math.nan, "accuracy": math.nan}
        # NaN AUROC would never be "best"; -1 keeps checkpoint selection well defined
        metrics = {k: (-1.0 if math.isnan(v) else v) for k, v in metrics.items()}
        # equal on every rank (computed from the gathered outputs); the max makes the agreement explicit
        self.log_dict(
            {f"val/{k}": v for k, v in metrics.items()}, prog_bar=True, sync_dist=True, reduce_fx="max"
        )

    def on_test_epoch_end(self) -> None:
        probs, target = self._collect("test")
        self.test_result = {
            "probs": probs,
            "target": target,
            "metrics": evaluate_safe(probs, target, self.task, self.num_classes, self.num_resamples),
            "per_class": per_class_metrics(probs, target, self.task, self.num_classes),
        }
        values = {f"test/{k}": v["value"] for k, v in self.test_result["metrics"].items()}
        self.log_dict(values, sync_dist=True, reduce_fx="max")  # equal on every rank, as for val

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The encoder's weights are in the checkpoint: a rebuild needs its architecture, not its source.
        rebuild = {"encoder": None, "weights": None, "vit": to_dict(self.encoder.config)}
        checkpoint["miram"] = describe(self, self.method, self.encoder.config, "encoder.", rebuild)
        # the encoder now carries what it was pre-trained on and what it was tuned on
        checkpoint["miram"]["training_data"] = self.source.training_data + training_data(self)


def warmup_cosine_schedule(
    module: L.LightningModule, opt: torch.optim.Optimizer, warmup_epochs: float
) -> Any:
    # one multiplier for every group keeps the layer-wise ratios fixed along the schedule
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    per_epoch = total / max(module.trainer.max_epochs or 1, 1)
    warmup = min(int(round(warmup_epochs * per_epoch)), total - 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup, 0.0))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
