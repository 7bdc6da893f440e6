"""Every config in configs/ loads through the real command line and trains one step on phantoms: paper
configs composed with their CPU override (configs/paper/cpu/), demo configs as they are. Batches are cut to
4 images and one batch per split, so each config costs a few seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from miram.eval.cli import finetune, probe
from miram.train.cli import pretrain
from tests.train.conftest import DEMO_CONFIGS, REPO

PAPER = REPO / "configs" / "paper"
PRETRAIN_PAPER = ["mae", "miram_sdpa", "miram_nystrom", "miram_linformer", "miram_performer", "mocov3"]
PRETRAIN_DEMO = ["mae_tiny", "miram_tiny_nystrom", "miram_tiny_sdpa", "mocov3_tiny"]
ONE_STEP = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "1",
    "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.num_workers", "0",
    "--data.batch_size", "4",
]  # fmt: skip


def _configs(name: str, paper: bool) -> list[str]:
    if paper:
        return ["--config", str(PAPER / f"{name}.yaml"), "--config", str(PAPER / "cpu" / f"{name}.yaml")]
    return ["--config", str(DEMO_CONFIGS / f"{name}.yaml")]


def test_every_config_is_covered() -> None:
    demo = {p.stem for p in DEMO_CONFIGS.glob("*.yaml")}
    paper = {p.stem for p in PAPER.glob("*.yaml")}
    assert demo == {*PRETRAIN_DEMO, "probe_tiny"}
    assert paper == {*PRETRAIN_PAPER, "probe", "finetune"}
    assert {p.stem for p in (PAPER / "cpu").glob("*.yaml")} == paper
    # the full-field override trains MAE and MIRAM one step in tests/data/test_fullfield_run.py
    assert {p.name for p in (REPO / "configs").iterdir() if p.is_dir()} == {"demo", "paper", "fullfield"}
    assert {p.stem for p in (REPO / "configs" / "fullfield").glob("*.yaml")} == {"films"}


@pytest.mark.parametrize(
    ("name", "paper"), [(n, True) for n in PRETRAIN_PAPER] + [(n, False) for n in PRETRAIN_DEMO]
)
def test_pretrain_config_trains_one_step(name: str, paper: bool, phantom_cache: str, tmp_path: Path) -> None:
    run = pretrain(
        [*_configs(name, paper), "--data.cache", phantom_cache, "--out", str(tmp_path / name), *ONE_STEP]
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1
    assert summary["method"] == ("mocov3" if "mocov3" in name else "mae" if "mae" in name else "miram")
    assert math.isfinite(summary["metrics"]["val/loss"])


@pytest.fixture(scope="module")
def pretrained(phantom_cache: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step run of the CPU MAE: the encoder the evaluation configs read."""
    out = tmp_path_factory.mktemp("every_config") / "mae"
    return pretrain([*_configs("mae", True), "--data.cache", phantom_cache, "--out", str(out), *ONE_STEP])


@pytest.mark.parametrize(("name", "paper"), [("probe", True), ("finetune", True), ("probe_tiny", False)])
def test_eval_config_trains_one_step(
    name: str, paper: bool, pretrained: Path, phantom_cache: str, tmp_path: Path
) -> None:
    command = finetune if name == "finetune" else probe
    summary = command(
        [
            *_configs(name, paper),
            "--run", str(pretrained),
            "--data.cache", phantom_cache,
            "--data.label", "pathology",
            "--out", str(tmp_path / name),
            "--model.num_resamples", "10",
            "--trainer.limit_test_batches", "1",
            *ONE_STEP,
        ]
    )  # fmt: skip
    assert summary["kind"] == ("finetune" if name == "finetune" else "probe") and summary["method"] == "mae"
    assert 0.0 <= summary["metrics"]["auroc"]["value"] <= 1.0
