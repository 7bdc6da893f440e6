"""Pre-training on whole films of two caches through the real command line (MAE and MIRAM with
``configs/fullfield/films.yaml``), and the training sources carried into the checkpoint and the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_films import build_films, prepare

from miram.checkpoints import export, load_encoder
from miram.train.cli import pretrain

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
ONE_STEP = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "1",
    "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.num_workers", "0",
    "--data.batch_size", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def two_film_caches(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    caches = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"films_{name}")
        caches.append(str(prepare(root, build_films(root / "src"), flip_to="left").root))
    return caches


@pytest.mark.parametrize("method", ["mae", "miram_nystrom", "mocov3"])
def test_fullfield_pretraining_runs_and_records_its_sources(
    method: str, two_film_caches: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = [
        "--config", str(CONFIGS / "paper" / f"{method}.yaml"),
        "--config", str(CONFIGS / "paper" / "cpu" / f"{method}.yaml"),
        "--config", str(CONFIGS / "fullfield" / "films.yaml"),
    ]  # fmt: skip
    run = pretrain(
        [*configs, "--data.cache", json.dumps(two_film_caches), "--data.weights", "[1, 3]",
         "--out", str(tmp_path / method), *ONE_STEP]
    )  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["method"] == {"mae": "mae", "mocov3": "mocov3"}.get(
        method, "miram"
    )
    _, meta = load_encoder(run)
    assert [d["cache"] for d in meta["training_data"]] == two_film_caches
    capsys.readouterr()
    target = export(str(run), str(tmp_path / "encoder"))
    info = json.loads(target.with_suffix(".json").read_text())
    assert [d["source"] for d in info["training_data"]] == ["test-films", "test-films"]
    assert info["restrictions"] == ["test-films: no weights"]
    assert "warning: these weights were trained on test-films: no weights" in capsys.readouterr().err
