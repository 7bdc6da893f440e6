"""``miram probe`` and ``miram finetune``: LightningCLI over the evaluation modules and the labelled cache.

Each run writes one directory, ``--out`` (as ``miram pretrain`` does): ``config.yaml``, ``checkpoints/``
(``best.ckpt`` by validation macro AUROC, ``last.ckpt``), ``metrics.csv``, ``figures/`` (confusion matrix,
ROC, PR) and ``summary.json`` with the test metrics and bootstrap 95 % intervals. The encoder under
evaluation is ``--run``; for a run directory its final checkpoint (``--run_checkpoint last``, the paper's
protocol) or ``--run_checkpoint best`` (lowest pre-training validation loss). Derived values are linked,
not typed in: the task and class count come from the cache's label column, the input size from the
encoder, so a command line needs only the run, cache and label::

    miram probe --config configs/paper/probe.yaml --run runs/mae --data.cache CACHE --data.label pathology
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

from miram.checkpoints import read_encoder_config
from miram.config import from_dict
from miram.data.cache import Cache
from miram.eval.classifier import LitClassifier
from miram.eval.data import EvalDataModule
from miram.eval.finetune import LitFinetune
from miram.eval.probe import LitProbe
from miram.eval.runner import fit_and_test
from miram.eval.tasks import task_from_cache
from miram.models.vit import ViTConfig
from miram.train.cli import RunDirCLI


def task_of_label(cache: str, label: str) -> str:
    """binary | multiclass | multilabel, from the label column of the cache."""
    return task_from_cache(Cache(cache), label).task


def classes_of_label(cache: str, label: str) -> int:
    """Number of classes (labels, for multilabel) of the label column of the cache."""
    return task_from_cache(Cache(cache), label).num_classes


def input_size(run: str | None, vit: Any) -> tuple[int, int]:
    """The encoder's input size: from the run, else from ``model.vit``, else the ViTConfig default."""
    if run is not None:
        config = read_encoder_config(run)
    elif vit is not None:
        # a dict as given, or the parser's Namespace of the ViTConfig (class_path / init_args)
        fields = vit.as_dict() if isinstance(vit, Namespace) else dict(vit)
        config = from_dict(ViTConfig, fields.get("init_args", fields))
    else:
        config = ViTConfig()
    h, w = config.img_size
    return int(h), int(w)


class EvalCLI(RunDirCLI):
    """RunDirCLI plus the encoder under evaluation (``--run``), evaluation options (``--eval.*``) and the
    values derived from the cache and the encoder."""

    monitor, mode = "val/auroc", "max"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--run",
            type=str | None,
            default=None,
            help="encoder to evaluate: a miram run directory, checkpoint or exported .safetensors "
            "(none: model.weights or model.vit from scratch)",
        )
        parser.add_argument(
            "--run_checkpoint",
            type=Literal["last", "best"],
            default="last",
            help="which checkpoint of a --run directory: last (the final pre-training epoch, as the paper "
            "evaluates) or best (lowest pre-training validation loss)",
        )
        parser.link_arguments("run", "model.encoder")
        parser.link_arguments("run_checkpoint", "model.encoder_checkpoint")
        label = ("data.cache", "data.label")
        parser.link_arguments(label, "model.task", compute_fn=task_of_label)
        parser.link_arguments(label, "model.num_classes", compute_fn=classes_of_label)
        parser.link_arguments(("run", "model.vit"), "data.image_size", compute_fn=input_size)
        parser.add_argument("--eval.group", type=str | None, default=None, help="row name in `miram compare`")
        parser.add_argument(
            "--eval.augment", type=bool, default=False, help="probe: augmented images, not cached features"
        )
        parser.add_argument(
            "--eval.per_patient", type=bool, default=False, help="also report per-patient metrics"
        )
        parser.add_argument("--eval.knn_k", type=int, default=20, help="probe: kNN neighbours (0 = off)")


def _run(model_class: type[LitClassifier], argv: Sequence[str] | None, description: str) -> dict[str, Any]:
    cli = EvalCLI(
        model_class,
        EvalDataModule,
        run=False,
        args=None if argv is None else list(argv),  # None: sys.argv
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"log_every_n_steps": 10},
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
