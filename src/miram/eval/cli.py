"""``miram probe`` and ``miram finetune``: LightningCLI over the evaluation modules and the labelled cache.

Each run writes one directory ``<run.root>/<run.name>`` (as ``miram pretrain`` does): ``config.yaml``,
``checkpoints/`` (``best.ckpt`` by validation macro AUROC, ``last.ckpt``), ``metrics.csv``, ``figures/``
(confusion matrix, ROC, PR) and ``summary.json`` with the test metrics and bootstrap 95 % intervals.
The task (binary / multiclass / multilabel, number of classes) is read from the cache's label column, and
the input size from the encoder checkpoint, so a command line needs only the encoder, cache and label::

    miram probe --config configs/paper/probe.yaml --model.encoder runs/mae \\
        --data.cache CACHE --data.label pathology
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from miram.eval.data import EvalDataModule
from miram.eval.lit_classifier import LitClassifier, LitFinetune, LitProbe
from miram.eval.runner import fit_and_test
from miram.eval.tasks import task_from_cache
from miram.train.cli import RunDirCLI


class EvalCLI(RunDirCLI):
    """RunDirCLI plus evaluation options; fills the task and input size in from the cache and encoder."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--eval.group", type=str | None, default=None, help="row name in `miram compare`")
        parser.add_argument(
            "--eval.augment", type=bool, default=False, help="probe: augmented images, not cached features"
        )
        parser.add_argument(
            "--eval.per_patient", type=bool, default=False, help="also report per-patient metrics"
        )
        parser.add_argument("--eval.knn_k", type=int, default=20, help="probe: kNN neighbours (0 = off)")

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        cfg = self.config
        from miram.data.cache import Cache

        spec = task_from_cache(Cache(cfg.data.cache), cfg.data.label)
        cfg.model.task, cfg.model.num_classes = spec.task, spec.num_classes
        if cfg.model.encoder is not None:
            from miram.eval.finetune import open_encoder

            encoder, _ = open_encoder(cfg.model.encoder)
            cfg.data.image_size = tuple(encoder.config.img_size)
        elif cfg.model.vit is not None and "img_size" in dict(cfg.model.vit):
            cfg.data.image_size = tuple(dict(cfg.model.vit)["img_size"])


def _callbacks() -> list[Any]:
    return [
        # RunDirCLI adds the progress bar unless --trainer.enable_progress_bar false
        ModelCheckpoint(filename="best", monitor="val/auroc", mode="max", save_last=True, save_top_k=1),
    ]


def _run(model_class: type[LitClassifier], argv: Sequence[str] | None, description: str) -> dict[str, Any]:
    cli = EvalCLI(
        model_class,
        EvalDataModule,
        run=False,
        args=list(sys.argv[1:] if argv is None else argv),
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": _callbacks(), "log_every_n_steps": 10},
        parser_kwargs={"description": description},
    )
    e = cli.config.eval
    return fit_and_test(
        cli.model,
        cli.datamodule,
        cli.trainer,
        cli.run_dir,
        group=e.group,
        augment=e.augment,
        per_patient=e.per_patient,
        knn_k=e.knn_k,
        seed=cli.config.get("seed_everything"),
    )


def probe(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``miram probe``: linear probe (BN without affine + linear) of a frozen encoder, plus kNN."""
    return _run(LitProbe, argv, "Linear probe (and kNN) of a frozen encoder on a cache label.")


def finetune(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``miram finetune``: full fine-tuning with layer-wise lr decay, drop-path, warm-up + cosine."""
    return _run(LitFinetune, argv, "Fine-tune an encoder on a cache label.")
