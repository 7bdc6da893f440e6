"""Probes run on a collection's labels with the existing tasks machinery: a density probe on a prepared
VinDr-Mammo tree (whole films, evaluated whole), its summary naming the collection."""

from __future__ import annotations

import json
from pathlib import Path

from trees_vindr import build_vindr_tree

from miram.checkpoints import load_encoder
from miram.data.cache import Cache
from miram.data.collections.vindr import prepare_vindr
from miram.eval.cli import probe
from miram.eval.compare import compare
from miram.eval.tasks import task_from_cache


def test_density_probe_on_a_vindr_cache(tmp_path: Path) -> None:
    root = build_vindr_tree(tmp_path / "vindr", n_patients=10)
    cache = prepare_vindr(
        str(root), str(tmp_path / "cache"), max_size=256, val_fraction=0.5, workers=0, progress=False
    )
    spec = task_from_cache(Cache(cache), "density")
    assert (spec.task, spec.classes) == ("multiclass", ["A", "B", "C", "D"])
    vit = {"img_size": [64, 32], "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    summary = probe(
        [
            "--data.cache", str(cache), "--data.label", "density", "--data.num_workers", "0",
            "--data.batch_size", "8", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--model.vit", json.dumps(vit), "--model.num_resamples", "10",
            "--out", str(tmp_path / "runs" / "p"),
        ]
    )  # fmt: skip
    assert summary["collection"] == "vindr-mammo" and summary["task"] == "multiclass"
    assert summary["classes"] == ["A", "B", "C", "D"] and 0.0 <= summary["metrics"]["auroc"]["value"] <= 1.0
    assert "probe, `vindr-mammo / density`" in compare(str(tmp_path / "runs"))
    # the probed encoder now carries what it was trained on: here only the probe's cache (a scratch encoder)
    _, meta = load_encoder(tmp_path / "runs" / "p")
    assert [(d["source"], d["cache"]) for d in meta["training_data"]] == [("vindr-mammo", str(cache))]
