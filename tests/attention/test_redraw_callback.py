"""The Performer feature-redraw callback: schedule, rank-shared seed, checkpointed state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from torch import nn

from miram.attention import build_attention
from miram.train.callbacks_attention import FeatureRedraw, redraw_attention_features


class _Strategy:
    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj


def _model() -> nn.Sequential:
    return nn.Sequential(
        build_attention("performer", 32, 2),
        build_attention("sdpa", 32, 2),
        build_attention("performer", 32, 2),
    )


def test_redraw_attention_features_is_seeded_and_distinct_per_layer() -> None:
    a, b = _model(), _model()
    assert redraw_attention_features(a, 3) == 2
    redraw_attention_features(b, 3)
    torch.testing.assert_close(a[0].features, b[0].features)
    assert not torch.equal(a[0].features, a[2].features)


def test_feature_redraw_follows_the_schedule() -> None:
    model = _model()
    callback = FeatureRedraw(interval=2, seed=5)
    trainer = SimpleNamespace(global_step=0, strategy=_Strategy())
    history = []
    for step in [0, 1, 2, 2, 3, 4]:  # step 2 twice: gradient accumulation
        trainer.global_step = step
        before = model[0].features.clone()
        callback.on_train_batch_start(trainer, model, None, 0)  # type: ignore[arg-type]
        history.append(not torch.equal(before, model[0].features))
    assert history == [False, False, True, False, False, True]
    restored = FeatureRedraw(interval=2, seed=5)
    restored.load_state_dict(callback.state_dict())
    assert restored.last_step == 4


def test_feature_redraw_runs_in_a_trainer(tmp_path: Any) -> None:
    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.attn = build_attention("performer", 16, 2, head_dim=8)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.attn(batch).square().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = Tiny()
    initial = model.attn.features.clone()
    data = torch.utils.data.DataLoader(torch.randn(8, 5, 16), batch_size=2)
    trainer = L.Trainer(
        max_steps=4, callbacks=[FeatureRedraw(interval=2)], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, data)
    assert not torch.equal(initial, model.attn.features)
