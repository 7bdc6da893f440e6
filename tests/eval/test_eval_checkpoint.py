"""Evaluation as the paper does it: the final pre-training checkpoint by default (``best`` on request), the
checkpoints a summary records, and MAE's fine-tuning pool ``fc_norm(mean(tokens))`` without the final norm."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F

from miram.config import to_dict
from miram.data.phantom import prepare_phantoms
from miram.eval.cli import probe
from miram.eval.finetune import LitFinetune
from miram.eval.probe import LitProbe
from miram.models.vit import ViTConfig, ViTEncoder

VIT = ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _save_run(run: Path, encoders: dict[str, ViTEncoder]) -> None:
    """A pre-training run directory: ``checkpoints/<name>.ckpt`` holding each encoder and miram metadata."""
    (run / "checkpoints").mkdir(parents=True)
    for name, encoder in encoders.items():
        meta = {
            "method": "mae",
            "encoder_config": to_dict(encoder.config),
            "encoder_prefix": "model.encoder.",
        }
        state = {f"model.encoder.{k}": v for k, v in encoder.state_dict().items()}
        torch.save({"state_dict": state, "miram": meta}, run / "checkpoints" / f"{name}.ckpt")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ViTEncoder]]:
    torch.manual_seed(0)
    encoders = {"best": ViTEncoder(VIT), "last": ViTEncoder(VIT)}
    for encoder in encoders.values():  # non-trivial final norms, so dropping or keeping them shows
        torch.nn.init.normal_(encoder.norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(encoder.norm.bias, 0.0, 0.3)
    run = tmp_path_factory.mktemp("eval_ckpt") / "mae"
    _save_run(run, encoders)
    return run, encoders


def _by_hand(encoder: ViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """Block outputs of all tokens ``(B, 1 + N, D)``, before any final norm."""
    x = encoder.embed_patches(images)
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for block in encoder.blocks:
        x = block(x)
    return x


def test_mean_fc_norm_pool_is_fc_norm_of_the_mean_without_the_final_norm() -> None:
    torch.manual_seed(1)
    encoder = ViTEncoder(replace(VIT, global_pool="mean_fc_norm")).eval()
    keys = set(encoder.state_dict())
    assert {"fc_norm.weight", "fc_norm.bias"} <= keys and not any(k.startswith("norm.") for k in keys)
    torch.nn.init.normal_(encoder.fc_norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(encoder.fc_norm.bias, 0.0, 0.3)
    images = torch.randn(3, 1, 32, 32)
    tokens = _by_hand(encoder, images)
    ln = encoder.fc_norm
    expected = F.layer_norm(tokens[:, 1:].mean(1), (32,), ln.weight, ln.bias, eps=1e-6)
    torch.testing.assert_close(encoder(images), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_the_other_pools_read_the_normalised_tokens(pool: Literal["mean", "cls"]) -> None:
    torch.manual_seed(2)
    encoder = ViTEncoder(replace(VIT, global_pool=pool)).eval()
    torch.nn.init.normal_(encoder.norm.weight, 1.0, 0.3)
    images = torch.randn(3, 1, 32, 32)
    normed = encoder.norm(_by_hand(encoder, images))
    expected = normed[:, 1:].mean(1) if pool == "mean" else normed[:, 0]
    torch.testing.assert_close(encoder(images), expected, atol=1e-6, rtol=1e-5)


def test_finetuning_pools_as_mae_on_the_pretrained_blocks(
    pretrained: tuple[Path, dict[str, ViTEncoder]],
) -> None:
    run, encoders = pretrained
    model = LitFinetune(task="binary", num_classes=2, encoder=str(run), drop_path_rate=0.0).eval()
    assert model.hparams["pool"] == "mean_fc_norm"
    encoder, source = model.encoder, encoders["last"]
    assert isinstance(encoder.norm, torch.nn.Identity)  # the pre-trained final norm is not used
    torch.testing.assert_close(encoder.fc_norm.weight, torch.ones(32))  # fresh, as in MAE fine-tuning
    torch.testing.assert_close(encoder.fc_norm.bias, torch.zeros(32))
    images = torch.randn(2, 1, 32, 32)
    expected = F.layer_norm(_by_hand(source, images)[:, 1:].mean(1), (32,), eps=1e-6)
    torch.testing.assert_close(encoder(images), expected, atol=1e-5, rtol=1e-5)
    # the pool the fine-tuning used before this change stays available
    mean = LitFinetune(task="binary", num_classes=2, encoder=str(run), pool="mean").encoder.eval()
    torch.testing.assert_close(mean(images), source.norm(_by_hand(source, images))[:, 1:].mean(1))


@pytest.mark.parametrize("which", ["last", "best"])
def test_a_run_directory_gives_its_last_checkpoint_unless_best_is_asked(
    pretrained: tuple[Path, dict[str, ViTEncoder]], which: str
) -> None:
    run, encoders = pretrained
    kwargs = {} if which == "last" else {"encoder_checkpoint": "best"}
    model = LitProbe(task="binary", num_classes=2, encoder=str(run), **kwargs)  # type: ignore[arg-type]
    images = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.encoder(images), encoders[which].eval()(images))
    assert model.source.checkpoint == str(run / "checkpoints" / f"{which}.ckpt")
    assert model.source.which == which


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepare_phantoms(str(tmp_path_factory.mktemp("eval_ckpt_cache") / "c"), num=40, size=32, seed=0)


@pytest.mark.parametrize("which", [None, "best"])
def test_probe_summary_records_the_checkpoints_it_used(
    pretrained: tuple[Path, dict[str, ViTEncoder]], cache: str, tmp_path: Path, which: str | None
) -> None:
    run, _ = pretrained
    out = tmp_path / "probe"
    argv = ["--run", str(run), "--data.cache", cache, "--data.label", "pathology", "--data.num_workers", "0"]
    argv += [
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
    ]
    argv += ["--model.num_resamples", "10", "--eval.knn_k", "0", "--out", str(out)]
    summary = probe(argv + (["--run_checkpoint", which] if which else []))
    assert summary == json.loads((out / "summary.json").read_text())
    expected = which or "last"
    assert summary["encoder_checkpoint"] == str(run / "checkpoints" / f"{expected}.ckpt")
    assert summary["encoder_checkpoint_which"] == expected
    assert summary["tested_checkpoint"] == str(out / "checkpoints" / "best.ckpt")
    assert summary["tested"] == "best val/auroc" and Path(summary["tested_checkpoint"]).is_file()
