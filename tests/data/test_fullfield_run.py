"""Pre-training on whole films of two caches through the real command line (MAE, MIRAM and MoCo-v3 with
``configs/fullfield/films.yaml``), the training sources carried into the checkpoint and the export, and (slow
tier) a mix of film caches under two gloo processes resumed exactly after a SIGKILL."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from test_films import build_films, prepare

from miram.checkpoints import export, load_encoder
from miram.train.cli import pretrain
from tests.train.test_every_config import ONE_STEP

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


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


@pytest.fixture(scope="module")
def two_larger_film_caches(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two film caches of 6 training and 2 validation films each."""
    caches = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"films_{name}")
        films = build_films(root / "src")
        for film in films:
            film.split = "val" if film.key.endswith("rmlo") else "train"
        caches.append(str(prepare(root, films, flip_to="left").root))
    return caches


@pytest.mark.slow
def test_fullfield_mix_under_two_gloo_processes_resumes_exactly_after_sigkill(
    two_larger_film_caches: list[str], tmp_path: Path
) -> None:
    # 12 training films mixed 1:2, 1 per batch on each of 2 ranks: 6 steps per epoch, so a kill that lands a
    # step or two after the one asked for is still inside the epoch; the resumed run must end with exactly the
    # weights and optimiser state of an uninterrupted one
    from tests.train.test_resume import MIRAM, _assert_same_state, _kill_after_step, _load, _mid_epoch, _run

    max_steps = 10
    kill_at = random.Random().choice([1, 2, 3])  # the resumed run then crosses into the second epoch

    def command(run: Path) -> list[str]:
        return [
            *MIRAM, "--config", str(CONFIGS / "demo" / "mae_tiny.yaml"),
            "--config", str(CONFIGS / "fullfield" / "films.yaml"),
            "--data.cache", json.dumps(two_larger_film_caches), "--data.weights", "[1, 2]",
            "--data.num_workers", "0", "--data.batch_size", "1",
            "--trainer.strategy", "ddp", "--trainer.devices", "2",
            "--trainer.max_steps", str(max_steps), "--trainer.max_epochs", "-1", "--ckpt_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--out", str(run),
        ]  # fmt: skip

    ref_run, run = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = subprocess.Popen(
        command(ref_run), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    killed = _kill_after_step(command(run), run / "checkpoints" / "last.ckpt", kill_at)
    assert 0 < killed["global_step"] < max_steps and _mid_epoch(killed, 6), killed["global_step"]
    _run([*command(run), "--ckpt_path", "last"])
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:] if reference.stderr else ""
    _assert_same_state(_load(run / "checkpoints" / "last.ckpt"), _load(ref_run / "checkpoints" / "last.ckpt"))
