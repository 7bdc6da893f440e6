from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from miram.checkpoints import load_encoder
from miram.train.cli import pretrain
from tests.train.conftest import DEMO_CONFIGS

# one epoch of one training and one validation batch
ONE_BATCH = (
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
)


def _args(config: str, cache: str, root: Path, *extra: str) -> list[str]:
    """Arguments of a run under ``root``; its directory is ``root/<config stem>`` unless ``--out`` is in
    ``extra``."""
    out = [] if "--out" in extra else ["--out", str(root / Path(config).stem)]
    return [
        "--config",
        str(DEMO_CONFIGS / config),
        "--data.cache",
        cache,
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "8",
        *out,
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.mark.parametrize("config", ["mae_tiny.yaml", "miram_tiny_nystrom.yaml"])
def test_pretrain_fast_dev_run_from_config(
    config: str, phantom_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = _args(config, phantom_cache, tmp_path, "--trainer.fast_dev_run", "true")
    i = args.index("--out")
    run = pretrain(args[:i] + args[i + 2 :])  # no --out: runs/<config stem>
    assert run == Path("runs") / Path(config).stem


def test_pretrain_writes_a_complete_run_directory(phantom_cache: str, tmp_path: Path) -> None:
    run = pretrain(
        _args(
            "miram_tiny_nystrom.yaml",
            phantom_cache,
            tmp_path,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--out",
            str(tmp_path / "r1"),
        )
    )
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        assert (run / name).exists(), name
    assert len(list(run.glob("figures/recon_*_final_x1.png"))) == 1
    assert len(list(run.glob("figures/recon_*_final_x2.png"))) == 1
    assert list(run.glob("events.out.tfevents*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "miram" and summary["global_step"] == 2
    assert "val/loss_x2" in summary["metrics"]
    encoder, meta = load_encoder(run)
    assert meta["method"] == "miram" and tuple(encoder.config.img_size) == (64, 64)
    assert encoder(torch.randn(1, 1, 64, 64)).shape == (1, 64)


def test_pretrain_refuses_to_overwrite_an_existing_run(phantom_cache: str, tmp_path: Path) -> None:
    args = _args(
        "mae_tiny.yaml",
        phantom_cache,
        tmp_path,
        *ONE_BATCH,
    )
    pretrain(args)
    with pytest.raises(SystemExit, match="already holds"):
        pretrain(args)


def test_pretrain_rejects_mismatched_image_size_before_training(phantom_cache: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.image_size is"):
        pretrain(
            _args(
                "miram_tiny_nystrom.yaml",
                phantom_cache,
                tmp_path,
                "--data.image_size",
                "[64, 64]",
                "--trainer.fast_dev_run",
                "true",
            )
        )


def test_pretrain_rejects_unknown_config_keys(phantom_cache: str, tmp_path: Path) -> None:
    with pytest.raises((SystemExit, ValueError), match="nonsense|unknown"):
        pretrain(_args("mae_tiny.yaml", phantom_cache, tmp_path, "--model.init_args.optim.nonsense", "1"))


def test_reconstruct_command_writes_a_figure_per_scale(phantom_cache: str, tmp_path: Path) -> None:
    from miram.train.reconstruct import reconstruct_command

    run = pretrain(
        _args(
            "miram_tiny_nystrom.yaml",
            phantom_cache,
            tmp_path,
            *ONE_BATCH,
        )
    )
    paths = reconstruct_command(str(run), phantom_cache, out=str(tmp_path / "rec"), num=2)
    assert [Path(p).name for p in paths] == ["reconstruction_x1.png", "reconstruction_x2.png"]
    for p in paths:  # figsize (8, 2 per image) at 80 dpi: 4 panels by 2 images
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (640, 320)


def test_a_configured_logger_is_kept_and_checkpoints_stay_in_the_run(
    phantom_cache: str, tmp_path: Path
) -> None:
    mine = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(tmp_path / "mine")},
    }
    run = pretrain(
        _args(
            "mae_tiny.yaml",
            phantom_cache,
            tmp_path,
            *ONE_BATCH,
            "--trainer.logger",
            json.dumps(mine),
        )
    )
    assert len(list((tmp_path / "mine").rglob("metrics.csv"))) == 1
    assert not (run / "metrics.csv").exists() and not list(run.glob("events.out.tfevents*"))
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "checkpoints" / "best.ckpt").exists()


def test_default_root_dir_is_refused_in_favour_of_out(phantom_cache: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--out"):
        pretrain(_args("mae_tiny.yaml", phantom_cache, tmp_path, "--trainer.default_root_dir", str(tmp_path)))
