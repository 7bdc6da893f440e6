"""Fit, select the best validation-AUROC checkpoint, test, and write the evaluation run's summary.

The summary (``<run>/summary.json``) holds the test metrics with bootstrap 95 % intervals, per-class AUROC
and AP, optional per-patient metrics, (for probes) kNN metrics and, for multi-label tasks, the same
metrics under the MIRAM authors' scoring; ``miram compare`` reads it. It also records which checkpoint
file the encoder came from (``encoder_checkpoint``; for a run directory the final one by default,
``encoder_checkpoint_which``) and which weights of the evaluation run were tested (``tested_checkpoint``,
``tested``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L

from miram.eval.aggregate import aggregate_by_patient
from miram.eval.classifier import LitClassifier
from miram.eval.data import EvalDataModule
from miram.eval.features import FeatureDataModule
from miram.eval.figures import save_eval_figures
from miram.eval.knn import knn_probs
from miram.eval.metrics import evaluate_authors_multilabel, evaluate_safe
from miram.eval.probe import LitProbe
from miram.eval.tasks import task_from_cache
from miram.provenance import git_commit


def fit_and_test(
    model: LitClassifier,
    data: EvalDataModule,
    trainer: L.Trainer,
    run_dir: str | Path,
    group: str | None = None,
    augment: bool = True,
    per_patient: bool = False,
    knn_k: int = 20,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train ``model``, test the best checkpoint and write ``summary.json`` and figures to ``run_dir``.

    Args:
        model: a probe or fine-tuning module.
        data: the labelled data.
        trainer: a trainer whose checkpoint callback (if any) monitors ``val/auroc``.
        run_dir: the run directory.
        group: name of the compared entry (default: the encoder's pre-training method).
        augment: probes only: train on augmented images; otherwise on features cached once per split.
        per_patient: also report metrics with probabilities averaged per patient.
        knn_k: neighbours of the kNN evaluation (probes only; 0 = off).
        seed: recorded in the summary.

    Returns:
        The summary.
    """
    start = time.time()
    run = Path(run_dir)
    spec = task_from_cache(data.cache, data.label or "")
    is_probe = isinstance(model, LitProbe)
    features = FeatureDataModule(data, model.encoder) if is_probe else None
    dm: L.LightningDataModule = features if features is not None and not augment else data
    trainer.fit(model, datamodule=dm)
    ckpt: Any = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or ""
    trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)
    result = model.test_result
    method = model.source.description.split(":", 1)[0]
    summary: dict[str, Any] = {
        "kind": model.method,
        "method": method,
        "group": group or method,
        "encoder": model.source.description,
        # the file the encoder's weights came from, and (for a run directory) which of its checkpoints
        "encoder_checkpoint": model.source.checkpoint,
        "encoder_checkpoint_which": model.source.which,
        "label": spec.label,
        # the collection the labels come from (cache.json source), so compare keeps collections apart
        "collection": data.cache.info.get("source"),
        "cache": str(data.cache.root),
        "task": spec.task,
        "classes": spec.classes,
        "seed": seed,
        "run_dir": str(run),
        "metrics": result["metrics"],
        "per_class": result["per_class"],
        "best_checkpoint": best or None,
        # the weights of this evaluation run that were tested: its best validation-AUROC checkpoint, or the
        # final weights when it kept none
        "tested_checkpoint": best or None,
        "tested": "best val/auroc" if best else "final weights",
        "best_val_auroc": float(ckpt.best_model_score)
        if getattr(ckpt, "best_model_score", None) is not None
        else None,
        "epochs": trainer.current_epoch,
        "hparams": {
            k: v for k, v in dict(model.hparams).items() if isinstance(v, (int, float, str, bool, type(None)))
        },
        "git_commit": git_commit(),
    }
    if spec.task == "multilabel":  # beside the multi-hot metrics, the paper's scoring (paper.md §5.5)
        summary["authors_scoring"] = evaluate_authors_multilabel(
            result["probs"], result["target"], model.num_resamples
        )
    if per_patient:
        probs, target, ids = aggregate_by_patient(
            result["probs"], result["target"], data.patient_ids("test"), spec.task
        )
        summary["per_patient"] = evaluate_safe(
            probs, target, spec.task, spec.num_classes, model.num_resamples
        )
        summary["num_patients"] = len(ids)
    if features is not None and knn_k > 0:
        tx, ty = features.split("train")
        x, y = features.split("test")
        probs = knn_probs(tx, ty, x, spec.task, spec.num_classes, k=knn_k)
        summary["knn"] = evaluate_safe(probs, y, spec.task, spec.num_classes, model.num_resamples)
    figs = save_eval_figures(
        result["probs"], result["target"], spec.task, spec.classes, run / "figures", summary["group"]
    )
    summary["figures"] = [str(f) for f in figs]
    summary["seconds"] = round(time.time() - start, 1)
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
