"""``miram predict``: class probabilities of a probe or fine-tuning run on a cache split, as CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from miram.checkpoints import Which, load_module, resolve_checkpoint
from miram.eval.classifier import LitClassifier
from miram.eval.data import EvalDataModule
from miram.eval.tasks import task_from_cache


@torch.no_grad()
def predict(
    run: str,
    cache: str,
    label: str,
    split: str = "test",
    out: str | None = None,
    batch_size: int = 64,
    run_checkpoint: Which = "best",
) -> Path:
    """Write ``key, patient_id, target, p_<class>...`` rows for every record of ``split``.

    Args:
        run: probe / fine-tuning run directory or checkpoint.
        cache: prepared cache.
        label: the label column the run was trained on (its targets are written alongside).
        split: train | val | test.
        out: CSV path (default ``<run>/predictions_<split>.csv``).
        batch_size: images per forward pass.
        run_checkpoint: best | last checkpoint of the evaluation run (best: the one its summary.json was
            tested on, by validation AUROC).

    Returns:
        The CSV path.
    """
    model = load_module(run, run_checkpoint)
    if not isinstance(model, LitClassifier):
        raise ValueError(f"{resolve_checkpoint(run, run_checkpoint)}: not a probe or fine-tuning checkpoint")
    h, w = model.encoder.config.img_size
    data = EvalDataModule(cache, label=label, image_size=(h, w), batch_size=batch_size)
    spec = task_from_cache(data.cache, label)
    ds = data.part(split)
    rows = []
    for images, target in data.eval_loader(split):
        probs = model.probs(model.logits(images))
        probs = torch.stack([1 - probs, probs], dim=1) if probs.ndim == 1 else probs
        rows += list(zip(probs.tolist(), target.tolist()))
    path = (
        Path(out)
        if out
        else (Path(run) if Path(run).is_dir() else Path(run).parent) / f"predictions_{split}.csv"
    )
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "patient_id", "target", *[f"p_{c}" for c in spec.classes]])
        for index, (p, t) in zip(ds.indices, rows):
            r = data.cache.records[index]
            writer.writerow([r.key, r.patient_id, t, *[f"{v:.6f}" for v in p]])
    print(f"wrote {len(rows)} predictions to {path}")
    return path
