"""``miram pretrain``: LightningCLI over the pre-training modules and the cache DataModule.

Every run writes one directory ``<run.root>/<run.name>``: the resolved ``config.yaml``, ``checkpoints/``
(``last.ckpt`` and ``best.ckpt`` by validation loss), ``metrics.csv``, TensorBoard events, ``figures/`` and
``summary.json``. ``--ckpt_path last`` resumes the run of the same name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from miram.data.datamodule import MammoDataModule
from miram.train.callbacks import ReconstructionFigures, RunSummary
from miram.train.lit_pretrain import LitPretrainBase


class RunDirCLI(LightningCLI):
    """LightningCLI that places everything a run writes in one run directory."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run.root", type=str, default="runs", help="parent of run directories")
        parser.add_argument(
            "--run.name", type=str, default=None, help="run directory name (default: config stem)"
        )
        parser.add_argument(
            "--run.overwrite", type=bool, default=False, help="replace an existing run directory"
        )
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="checkpoint to resume, or 'last'"
        )
        # a configurable callback: --figures.every_n_epochs, --figures.num_images
        parser.add_lightning_class_args(ReconstructionFigures, "figures")

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        name = cfg.run.name or _config_stem(cfg) or "run"
        run_dir = Path(cfg.run.root) / name
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.exists() and cfg.ckpt_path is None and not cfg.run.overwrite:
            raise SystemExit(
                f"miram: run directory {run_dir} already holds {last}; pass --ckpt_path last to resume, "
                "--run.name to start another run, or --run.overwrite true to replace it"
            )
        if cfg.ckpt_path == "last" and not last.exists():
            raise SystemExit(f"miram: nothing to resume: {last} does not exist")
        cfg.trainer.default_root_dir = str(run_dir)
        self.run_dir = run_dir

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        if self.config.trainer.get("enable_progress_bar") is not False:
            self.trainer_defaults["callbacks"] = [
                *self.trainer_defaults["callbacks"],
                RichProgressBar(leave=True),
            ]
        trainer = super().instantiate_trainer(**kwargs)
        run = str(self.run_dir)
        if (
            trainer.loggers
            and isinstance(trainer.loggers[0], TensorBoardLogger)
            and len(trainer.loggers) == 1
        ):
            # the default logger; replace it by the run directory's CSV + TensorBoard pair
            trainer.loggers = [
                CSVLogger(run, name="", version=""),
                TensorBoardLogger(run, name="", version=""),
            ]
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(self.run_dir / "checkpoints")
        return trainer


def _config_stem(cfg: Any) -> str | None:
    configs = cfg.get("config") or []
    return Path(str(configs[-1])).stem if configs else None


def default_callbacks() -> list[Any]:
    """Callbacks every pre-training run gets."""
    return [
        ModelCheckpoint(filename="best", monitor="val/loss", mode="min", save_last=True, save_top_k=1),
        LearningRateMonitor(logging_interval="step"),
        RunSummary(),
    ]


def pretrain(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (``--config FILE`` and dotted overrides), train, and return the run directory."""
    cli = RunDirCLI(
        LitPretrainBase,
        MammoDataModule,
        subclass_mode_model=True,
        run=False,
        args=list(sys.argv[1:] if argv is None else argv),
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": default_callbacks(), "log_every_n_steps": 10},
        parser_kwargs={"description": "Pre-train MIRAM, MAE or MoCo-v3 on a prepared cache."},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    return cli.run_dir
