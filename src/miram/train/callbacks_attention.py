"""Training-loop side of attention backends: the Performer feature redraw schedule.

FAVOR+ features "should be periodically redrawn" (Choromanski et al. 2021). The backends never change
state in ``forward`` (``performer-pytorch`` redraws there, which broke DataParallel, issue #61); this
callback redraws them between optimizer steps instead, from a seed that every rank shares, so all
replicas keep identical features. The features are buffers, hence checkpointed with the model, and the
callback checkpoints its own position in the schedule.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from miram.attention.base import AttentionBackend


def redraw_attention_features(module: nn.Module, seed: int) -> int:
    """Redraw the random features of every attention backend inside ``module``.

    Layers draw in module order from one CPU generator seeded with ``seed``, so each layer gets
    different features and every process that passes the same seed gets the same ones.

    Returns:
        how many backends were redrawn.
    """
    generator = torch.Generator().manual_seed(seed)
    count = 0
    for sub in module.modules():
        if isinstance(sub, AttentionBackend) and sub.random_features:
            sub.redraw_features(generator)
            count += 1
    return count


class FeatureRedraw(L.Callback):
    """Redraw random attention features every ``interval`` optimizer steps.

    Args:
        interval: optimizer steps between redraws (the Performer paper's setting is 1000).
        seed: base seed; the redraw at step s uses ``seed + s``, broadcast from rank 0.
    """

    def __init__(self, interval: int = 1000, seed: int = 0) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval, self.seed = interval, seed
        self.last_step = 0  # the step of the latest redraw; guards gradient accumulation and resume

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == 0 or step % self.interval or step == self.last_step:
            return
        seed = int(trainer.strategy.broadcast(self.seed + step, src=0))  # identical on every rank
        redraw_attention_features(pl_module, seed)
        self.last_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = int(state_dict["last_step"])
