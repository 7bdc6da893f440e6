"""The phantom benchmark: scratch, MAE, MoCo-v3, MIRAM-nystrom and MIRAM-sdpa on phantom lesions, CPU only.

For each seed: pre-train every method with the same tiny ViT encoder, data and epochs; then evaluate each
encoder (and a randomly initialised one, "scratch") by linear probe (features cached once, BN + linear,
plus kNN) and by full fine-tuning; finally write the comparison (mean ± sd over seeds, mean bootstrap
95 % CIs) to ``docs/results-phantoms.md``.

Usage::

    .venv/bin/python scripts/phantom_benchmark.py --out runs/phantom-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from importlib import resources
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from miram.data.phantom import prepare_phantoms
from miram.eval.compare import load_summaries, markdown_table, save_figure, summarise
from miram.eval.data import EvalDataModule
from miram.eval.finetune import LitFinetune
from miram.eval.probe import LitProbe
from miram.eval.runner import fit_and_test
from miram.eval.tasks import task_from_cache
from miram.train.cli import pretrain

METHODS = {
    "MAE": "mae_tiny.yaml",
    "MoCo-v3": "mocov3_tiny.yaml",
    "MIRAM-nystrom": "miram_tiny_nystrom.yaml",
    "MIRAM-sdpa": "miram_tiny_sdpa.yaml",
}
ORDER = ["scratch", *METHODS]
NOTES_MARKER = "<!-- reading: kept when the page is regenerated -->"
# the encoder every method shares (configs/demo/*_tiny.yaml)
VIT = {"img_size": [64, 64], "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4}


def _trainer(run: Path, epochs: int) -> L.Trainer:
    best = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val/auroc", mode="max")
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=L.pytorch.loggers.CSVLogger(str(run), name="", version=""),
        callbacks=[best],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=5,
    )


def evaluate_encoder(args: argparse.Namespace, cache: str, name: str, encoder: str | None, seed: int) -> None:
    """Linear probe and fine-tuning of one encoder at one seed."""
    spec_data = EvalDataModule(cache, label=args.label, image_size=(64, 64), num_workers=0)
    spec = task_from_cache(spec_data.cache, args.label)
    common = {"task": spec.task, "num_classes": spec.num_classes, "encoder": encoder, "vit": VIT}
    for kind in ("probe", "finetune"):
        run = Path(args.out) / "eval" / f"{kind}_{name}_s{seed}"
        if (run / "summary.json").exists():
            continue
        L.seed_everything(seed, verbose=False)
        data = EvalDataModule(cache, label=args.label, image_size=(64, 64), batch_size=64, num_workers=0)
        if kind == "probe":
            model: LitProbe | LitFinetune = LitProbe(**common, lr=1e-2, num_resamples=args.resamples)
            epochs = args.probe_epochs
        else:
            model = LitFinetune(
                **common,
                lr=1e-3,
                layer_decay=0.75,
                drop_path_rate=0.1,
                warmup_epochs=1,
                num_resamples=args.resamples,
            )
            epochs = args.finetune_epochs
        fit_and_test(model, data, _trainer(run, epochs), run, group=name, augment=False, seed=seed)
        auroc = json.loads((run / "summary.json").read_text())["metrics"]["auroc"]
        print(f"[bench] {kind:8s} {name:14s} seed {seed}: macro AUC {auroc}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the results page."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/phantom-bench", help="cache, runs and figures go here")
    p.add_argument("--num", type=int, default=600, help="phantom crops (70/10/20 train/val/test)")
    p.add_argument("--size", type=int, default=128, help="phantom side (MIRAM x2 scale; encoder sees half)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--label", default="type_pathology", help="cache label to predict")
    p.add_argument("--pretrain_epochs", type=int, default=40)
    p.add_argument("--probe_epochs", type=int, default=50)
    p.add_argument("--finetune_epochs", type=int, default=30)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--workers", type=int, default=1, help="loader processes for pre-training")
    p.add_argument("--doc", default="docs/results-phantoms.md")
    p.add_argument("--report_only", action="store_true", help="rewrite the page from finished runs only")
    args = p.parse_args(argv)
    wall = Path(args.out) / "wall_minutes.txt"
    if args.report_only:
        write_results(args, float(wall.read_text()) if wall.exists() else float("nan"))
        return
    start = time.time()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(args.out)
    cache = out / "phantoms"
    if not (cache / "cache.json").exists():
        prepare_phantoms(out=str(cache), num=args.num, size=args.size)
    configs = resources.files("miram") / "configs" / "demo"
    for seed in args.seeds:
        evaluate_encoder(args, str(cache), "scratch", None, seed)
        for name, config in METHODS.items():
            run = out / "pretrain" / f"{name}_s{seed}"
            if not (run / "checkpoints" / "last.ckpt").exists():
                pretrain(
                    [
                        "--config",
                        str(configs / config),
                        "--seed_everything",
                        str(seed),
                        "--data.cache",
                        str(cache),
                        "--data.num_workers",
                        str(args.workers),
                        "--trainer.max_epochs",
                        str(args.pretrain_epochs),
                        "--out",
                        str(run),
                        "--overwrite",
                        "true",
                    ]
                )
            evaluate_encoder(args, str(cache), name, str(run), seed)
    minutes = (time.time() - start) / 60
    wall.write_text(f"{minutes:.2f}")
    write_results(args, minutes)


def write_results(args: argparse.Namespace, minutes: float) -> None:
    """Write the comparison page (and figure) from the evaluation runs."""
    summaries = [s for s in load_summaries([str(Path(args.out) / "eval")]) if s.get("seed") in args.seeds]
    table = summarise(summaries)
    knn = {("knn", k[1], k[2]): v for k, v in summarise(summaries, "knn").items()}
    fig = save_figure(table, Path(args.out) / "compare.png")
    shown = [a for a in sys.argv[1:] if a != "--report_only"]
    command = ".venv/bin/python scripts/phantom_benchmark.py " + shlex.join(shown)
    pre = [
        Path(args.out) / "pretrain" / f"{m}_s{seed}" / "summary.json" for m in METHODS for seed in args.seeds
    ]
    run_minutes = (
        sum(s.get("seconds", 0.0) for s in summaries)
        + sum(json.loads(f.read_text()).get("seconds", 0.0) for f in pre if f.exists())
    ) / 60
    timing = f"wall time {minutes:.1f} min, " if minutes == minutes else ""
    text = f"""# Phantom benchmark: scratch vs MAE vs MoCo-v3 vs MIRAM (CPU)

Synthetic phantom lesion crops (`miram prepare phantoms`, {args.num} crops of {args.size} px; the encoder
sees 64×64), label `{args.label}`. Every method pre-trains the same ViT (patch 8, width 64, depth 4,
4 heads) for {args.pretrain_epochs} epochs with its `configs/demo/*_tiny.yaml` recipe; "scratch" is the
same ViT randomly initialised. Linear probe: frozen encoder, features cached once, BatchNorm (no affine)
+ linear, Adam 1e-2, {args.probe_epochs} epochs (kNN, k = 20, on the same features). Fine-tuning: whole
network, `fc_norm(mean of tokens)` pooling (MAE's), AdamW 1e-3 with layer decay 0.75, drop-path 0.1,
1 warm-up epoch then cosine, class-weighted loss, {args.finetune_epochs} epochs. Every pre-trained encoder is
its run's final checkpoint (`last.ckpt`, as the paper evaluates); MoCo-v3's two views are each one crop
(area 0.08–1) of the native pixels. The test split is scored with the evaluation's checkpoint of best
validation macro AUC. Seeds {args.seeds}: each seed re-runs pre-training and evaluation. Cells: mean ± sd
over seeds [mean of the per-seed bootstrap 95 % CIs, {args.resamples} resamples].
Bold marks the best mean. Phantoms are a plumbing and sanity benchmark, not evidence about mammograms.

Command ({timing}sum of run times {run_minutes:.1f} min; {platform.machine()} CPU, {os.cpu_count()} cores,
{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} when the page was written):

```
{command}
```

{markdown_table(table, ORDER)}
{markdown_table(knn, ORDER) if knn else ""}
Figure: `{fig}` (macro AUC, mean ± sd).
Compare any runs again with `miram compare --run {Path(args.out) / "eval"}`.
"""
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    # a hand-written reading below the marker survives a rewrite of the generated part
    kept = doc.read_text().partition(NOTES_MARKER)[2] if doc.exists() else ""
    doc.write_text(text + (f"\n{NOTES_MARKER}{kept}" if kept else ""))
    print(text)


if __name__ == "__main__":
    main()
