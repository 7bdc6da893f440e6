"""``miram demo``: MAE vs MIRAM (Nystrom high-resolution decoder) on built-in phantoms, on the CPU.

Steps: generate phantom lesion crops -> pre-train a tiny MAE and a tiny MIRAM with the same encoder,
data and budget -> linear-probe both encoders (frozen features, BN + linear) on benign vs malignant ->
print AUC, AP and accuracy with bootstrap 95 % confidence intervals, and where everything was written.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from miram.data.cache import Cache
from miram.data.datamodule import MammoDataModule
from miram.data.phantom import prepare_phantoms
from miram.eval.features import extract_features
from miram.eval.linear_probe import ProbeConfig, predict_probs, train_linear_probe
from miram.eval.metrics import evaluate, format_ci
from miram.eval.tasks import task_from_cache
from miram.models.vit import ViTEncoder
from miram.train.cli import pretrain
from miram.utils.checkpoint import load_encoder

METHODS = {"MAE": "mae_tiny.yaml", "MIRAM (Nystrom x2)": "miram_tiny_nystrom.yaml"}


def _config(name: str) -> str:
    return str(resources.files("miram") / "configs" / "demo" / name)


def linear_probe_run(
    encoder: ViTEncoder, cache: str, label: str = "pathology", workers: int = 2, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Linear-probe a frozen encoder on ``label``: train split -> test split metrics with CIs."""
    data = MammoDataModule(
        cache,
        image_size=encoder.config.img_size,
        batch_size=128,
        num_workers=workers,
        label=label,
        pretrain_only=False,
    )
    spec = task_from_cache(data.cache, label)
    train_x, train_y = extract_features(encoder, data.eval_loader("train"))
    test_x, test_y = extract_features(encoder, data.eval_loader("test"))
    head = train_linear_probe(
        train_x, train_y, spec.task, spec.num_classes, ProbeConfig(epochs=100), seed=seed
    )
    return evaluate(predict_probs(head, test_x, spec.task), test_y, spec.task, spec.num_classes, seed=seed)


def demo(
    out: str = "miram-demo", num: int = 1500, size: int = 128, epochs: int = 8, workers: int = 2
) -> dict[str, Any]:
    """Run the end-to-end demo.

    Args:
        out: directory for the phantom cache, the runs and the results.
        num: phantom crops to generate (70 % train, 10 % val, 20 % test).
        size: phantom side in pixels (the MIRAM x2 scale; the encoder sees half of it).
        epochs: pre-training epochs per method.
        workers: data-loader processes.

    Returns:
        The results written to ``<out>/results.json``.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console()
    start = time.time()
    root = Path(out)
    cache = str(root / "phantoms")
    console.rule("[bold]1/3 phantom lesion crops")
    if (root / "phantoms" / "cache.json").exists() and len(Cache(cache)) == num:
        console.print(f"reusing {cache}")
    else:
        prepare_phantoms(cache, num=num, size=size, seed=0)
    results: dict[str, Any] = {}
    for i, (method, config) in enumerate(METHODS.items()):
        console.rule(f"[bold]2/3 pre-training {method} ({i + 1}/{len(METHODS)})")
        name = config.removesuffix(".yaml")
        run_dir = pretrain(
            [
                "--config",
                _config(config),
                "--data.cache",
                cache,
                "--data.num_workers",
                str(workers),
                "--trainer.max_epochs",
                str(epochs),
                "--run.root",
                str(root / "runs"),
                "--run.name",
                name,
                "--run.overwrite",
                "true",
            ]
        )
        results[method] = {"run_dir": str(run_dir)}
    console.rule("[bold]3/3 linear probe: benign vs malignant (test split)")
    for entry in results.values():
        entry["probe"] = linear_probe_run(load_encoder(entry["run_dir"])[0], cache, workers=workers)
    # The same encoder, untrained: what pre-training adds over random features.
    scratch = load_encoder(results[next(iter(METHODS))]["run_dir"])[0]
    scratch.load_state_dict(ViTEncoder(scratch.config).state_dict())
    results["scratch (random init)"] = {
        "run_dir": None,
        "probe": linear_probe_run(scratch, cache, workers=workers),
    }

    table = Table(title="Linear probe on phantoms, benign vs malignant (95 % bootstrap CI, 1000 resamples)")
    for col in ("method", "AUC", "AP", "accuracy"):
        table.add_column(col)
    for method, entry in results.items():
        p = entry["probe"]
        table.add_row(method, format_ci(p["auroc"]), format_ci(p["ap"]), format_ci(p["accuracy"]))
    console.print(table)
    n_test = len(Cache(cache).indices("test"))
    console.print(
        f"test crops: {n_test}; pre-training: {epochs} epochs each on the train split, same encoder"
    )
    for method, entry in results.items():
        if entry["run_dir"]:
            console.print(f"{method}: run {entry['run_dir']}  figures {entry['run_dir']}/figures")
    results["seconds"] = round(time.time() - start, 1)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    console.print(f"results: {root / 'results.json'}  ({results['seconds']} s)")
    return results
