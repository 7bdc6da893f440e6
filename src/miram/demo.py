"""``miram demo``: MAE vs MIRAM (Nystrom high-resolution decoder) on built-in phantoms, on the CPU.

Steps: generate phantom lesion crops -> pre-train a tiny MAE and a tiny MIRAM with the same encoder,
data and budget -> linear-probe both encoders with ``miram probe`` (frozen features, BN + linear) on
benign vs malignant -> print AUC, AP and accuracy with bootstrap 95 % confidence intervals, and where
everything was written.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from miram.checkpoints import read_encoder_config
from miram.config import to_dict
from miram.data.cache import Cache
from miram.data.phantom import prepare_phantoms
from miram.eval.cli import probe
from miram.eval.metrics import format_ci
from miram.models.vit import ViTConfig
from miram.train.cli import pretrain

METHODS = {"MAE": "mae_tiny.yaml", "MIRAM (Nystrom x2)": "miram_tiny_nystrom.yaml"}


def _config(name: str) -> str:
    return str(resources.files("miram") / "configs" / "demo" / name)


def linear_probe_run(
    out: str, cache: str, run: str | None = None, vit: ViTConfig | None = None, workers: int = 2
) -> dict[str, dict[str, float]]:
    """``miram probe`` (the demo's probe config) of a run's encoder, or of a random ``vit``: train split ->
    test split metrics with bootstrap intervals."""
    args = [
        "--config",
        _config("probe_tiny.yaml"),
        "--data.cache",
        cache,
        "--out",
        out,
        "--overwrite",
        "true",
    ]
    args += ["--data.num_workers", str(workers)]
    args += ["--run", run] if run is not None else ["--model.vit", json.dumps(to_dict(vit))]
    metrics: dict[str, dict[str, float]] = probe(args)["metrics"]
    return metrics


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
    # the settings are in the name, so a rerun with other settings never meets a cache it would refuse
    cache = str(root / f"phantoms-{num}x{size}")
    console.rule("[bold]1/3 phantom lesion crops")
    if (Path(cache) / "cache.json").exists():
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
                "--out",
                str(root / "runs" / name),
                "--overwrite",
                "true",
            ]
        )
        results[method] = {"run_dir": str(run_dir)}
    console.rule("[bold]3/3 linear probe: benign vs malignant (test split)")
    probes = root / "probes"
    for entry in results.values():
        run = entry["run_dir"]
        entry["probe"] = linear_probe_run(str(probes / Path(run).name), cache, run=run, workers=workers)
    # The same encoder architecture, untrained: what pre-training adds over random features.
    vit = read_encoder_config(results[next(iter(METHODS))]["run_dir"])
    results["scratch (random init)"] = {
        "run_dir": None,
        "probe": linear_probe_run(str(probes / "scratch"), cache, vit=vit, workers=workers),
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
