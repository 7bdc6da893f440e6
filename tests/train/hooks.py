"""Test-only pieces for ``miram pretrain`` subprocesses (``--trainer.callbacks+``, or run as a script).

- :class:`RecordDraws` saves, per rank and optimiser step, the batch the model saw (crops and flips) and the
  random draws of its forward (MAE/MIRAM masks, MoCo-v3 views).
- Run as ``python -m tests.train.hooks HANG_AT ARGS...``: ``miram pretrain ARGS...`` whose ``HANG_AT``-th
  ``torch.save`` writes half its bytes into its target file and then hangs, so a test can SIGKILL the run
  in the middle of a checkpoint write.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn


class RecordDraws(L.Callback):
    """Write ``out/rank{r}_step{s}.pt``: the batch's ``images``, and the forward's ``mask`` or views.

    Args:
        out: directory to write to.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Tensor] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        model: nn.Module = pl_module.model  # type: ignore[assignment]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if trainer.training:
                extras = output.extras
                for key in ("mask", "view1", "view2"):
                    if key in extras:
                        self.record[key] = extras[key].detach().cpu().clone()

        model.register_forward_hook(hook)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.record = {"images": batch[0].detach().cpu().clone()}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        torch.save(self.record, self.out / f"rank{trainer.global_rank}_step{trainer.global_step}.pt")


def _hang_on_save(hang_at: int) -> None:
    """Make the ``hang_at``-th ``torch.save`` write half of its bytes to its target and hang."""
    real_save = torch.save
    calls = 0

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < hang_at or isinstance(f, io.BytesIO):
            real_save(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        if isinstance(f, (str, Path)):
            f = open(f, "wb")  # noqa: SIM115 - left open on purpose: the process is killed while writing
        f.write(data[: len(data) // 2])
        f.flush()
        print(f"HANGING in checkpoint write {calls}", flush=True)
        time.sleep(600)

    torch.save = save  # type: ignore[assignment]


if __name__ == "__main__":
    from miram.cli import main

    _hang_on_save(int(sys.argv[1]))
    main(["pretrain", *sys.argv[2:]])
