"""``miram pretrain``, and the run-directory convention every LightningCLI command of miram follows.

Every run writes one directory, ``--out`` (default ``runs/<stem of the last --config>``): the resolved
``config.yaml``, ``checkpoints/`` (``last.ckpt`` and ``best.ckpt``), ``metrics.csv``, TensorBoard events,
``figures/`` and ``summary.json``. ``--ckpt_path last`` resumes the run in ``--out``.

The run directory is derived from the parsed options, so it is handed to the Trainer's constructor (as
``default_root_dir``, the checkpoint directory and the default loggers) rather than written into the parsed
config or patched into a built Trainer. A logger or callback the user configures is kept as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from miram.data.datamodule import MammoDataModule
from miram.train.callbacks import ReconstructionFigures, RunSummary
from miram.train.guard import NonFiniteGuard
from miram.train.lit_pretrain import LitPretrainBase
from miram.train.resume import AtomicCheckpointIO, RngStates, remove_partial_writes, step_checkpoint


class RunDirCLI(LightningCLI):
    """LightningCLI that places everything a run writes in one run directory, ``--out``.

    Subclasses say what the best checkpoint is (``monitor``, ``mode``) and may add options.
    """

    monitor, mode = "val/loss", "min"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--out", type=str | None, default=None, help="run directory (default: runs/<last config's stem>)"
        )
        parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing run directory")

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        if cfg.trainer.get("default_root_dir") is not None:
            raise SystemExit("miram: trainer.default_root_dir: the run directory is --out; set that instead")
        self.run_dir = Path(cfg.out) if cfg.out else Path("runs") / (_config_stem(cfg) or "run")
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if last.exists() and cfg.get("ckpt_path") is None and not cfg.overwrite:
            raise SystemExit(
                f"miram: --out: run directory {self.run_dir} already holds {last}; pass --ckpt_path last to "
                "resume (miram pretrain), another --out for a new run, or --overwrite true to replace it"
            )

    def run_callbacks(self) -> list[Callback]:
        """Callbacks that depend on the run directory: the checkpoint callback and the progress bar."""
        checkpoints = ModelCheckpoint(
            dirpath=self.run_dir / "checkpoints",
            filename="best",
            monitor=self.monitor,
            mode=self.mode,
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,  # last.ckpt is rewritten in place, never last-v1.ckpt
        )
        trainer = self.config.trainer
        bar = [] if trainer.get("enable_progress_bar") is False else [RichProgressBar(leave=True)]
        return [checkpoints, *bar]

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = self.config_init.trainer
        run = str(self.run_dir)
        kwargs["default_root_dir"] = run
        if trainer.get("logger") in (None, True):  # not configured: the run directory's CSV + TensorBoard
            kwargs["logger"] = [
                CSVLogger(run, name="", version=""),
                TensorBoardLogger(run, name="", version=""),
            ]
        kwargs["callbacks"] = [*(trainer.get("callbacks") or []), *self.run_callbacks()]
        plugins = trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # a configured CheckpointIO is kept
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


class PretrainCLI(RunDirCLI):
    """RunDirCLI for pre-training: exact resume (``--ckpt_path last``, ``last.ckpt`` every
    ``--ckpt_every_n_steps`` steps and at every epoch end) and reconstruction figures (``--figures.*``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="checkpoint to resume, or 'last' (of --out)"
        )
        parser.add_argument(
            "--ckpt_every_n_steps",
            type=int,
            default=1000,
            help="also rewrite last.ckpt every N optimiser steps (0: at epoch ends only)",
        )
        parser.add_lightning_class_args(ReconstructionFigures, "figures")
        parser.add_lightning_class_args(NonFiniteGuard, "guard")  # --guard.max_bad_steps K

    def run_callbacks(self) -> list[Callback]:
        every = int(self.config.ckpt_every_n_steps)
        if every < 0:
            raise SystemExit(f"miram: --ckpt_every_n_steps must be >= 0, got {every}")
        steps = [step_checkpoint(self.run_dir / "checkpoints", every)] if every else []
        return [*super().run_callbacks(), *steps, RngStates()]

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if self.config.ckpt_path == "last" and not last.exists():
            raise SystemExit(f"miram: --ckpt_path: nothing to resume: {last} does not exist")
        if self.config.ckpt_path is not None:  # nothing writes yet: every rank is still starting
            remove_partial_writes(last.parent)


def _config_stem(cfg: Any) -> str | None:
    configs = cfg.get("config") or []
    return Path(str(configs[-1])).stem if configs else None


def pretrain(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (``--config FILE`` ... and dotted overrides), train, and return the run directory."""
    cli = PretrainCLI(
        LitPretrainBase,
        MammoDataModule,
        subclass_mode_model=True,
        run=False,
        args=None if argv is None else list(argv),  # None: sys.argv
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [LearningRateMonitor(logging_interval="step"), RunSummary()],
            "log_every_n_steps": 10,
        },
        parser_kwargs={"description": "Pre-train MIRAM, MAE or MoCo-v3 on a prepared cache."},
    )
    ckpt_path = cli.config.ckpt_path
    if ckpt_path == "last":  # this run's own file: Lightning's "last" would pick the newest of any callback
        ckpt_path = str(cli.run_dir / "checkpoints" / "last.ckpt")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.run_dir
