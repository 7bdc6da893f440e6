"""``miram predict``: class probabilities of a probe or fine-tuning run on a cache split, as CSV."""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import torch

from miram.eval.data import EvalDataModule
from miram.eval.lit_classifier import LitClassifier, LitFinetune, LitProbe
from miram.eval.tasks import task_from_cache


def load_classifier(run: str) -> LitClassifier:
    """The best (else last) checkpoint of a ``miram probe | finetune`` run directory, or a checkpoint file."""
    path = Path(run)
    if path.is_dir():
        path = next(
            (p for p in (path / "checkpoints" / n for n in ("best.ckpt", "last.ckpt")) if p.exists()), path
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cls = LitProbe if "head.0.running_mean" in ckpt["state_dict"] else LitFinetune
    # LightningCLI adds private keys (``_instantiator``); keep the constructor's arguments only
    params = inspect.signature(cls.__init__).parameters
    hp = {k: v for k, v in dict(ckpt["hyper_parameters"]).items() if k in params}
    # the checkpoint holds the trained encoder: build the architecture only, then load every weight
    source = hp.pop("encoder", None)
    model = cls(**{**hp, "encoder": None, "weights": None, "vit": _vit_config(ckpt, source)})
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _vit_config(ckpt: dict[str, object], source: str | None) -> object:
    hp = ckpt["hyper_parameters"]
    if isinstance(hp, dict) and hp.get("vit") is not None:
        return hp["vit"]
    if source is None:
        raise ValueError("checkpoint records neither an encoder nor a ViT config")
    from miram.eval.finetune import build_encoder

    return build_encoder(source)[0].config


@torch.no_grad()
def predict(
    run: str, cache: str, label: str, split: str = "test", out: str | None = None, batch_size: int = 64
) -> Path:
    """Write ``key, patient_id, target, p_<class>...`` rows for every record of ``split``.

    Args:
        run: probe / fine-tuning run directory or checkpoint.
        cache: prepared cache.
        label: the label column the run was trained on (its targets are written alongside).
        split: train | val | test.
        out: CSV path (default ``<run>/predictions_<split>.csv``).
        batch_size: images per forward pass.

    Returns:
        The CSV path.
    """
    model = load_classifier(run)
    h, w = model.encoder.config.img_size
    data = EvalDataModule(cache, label=label, image_size=(h, w), batch_size=batch_size)
    spec = task_from_cache(data.cache, label)
    ds = data.dataset(split, train=False)
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
