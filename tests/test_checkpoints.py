"""miram.checkpoints: which file a run directory gives, safe reading, prefixes, metadata, rebuilds, export;
and the command line's one-line errors."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from miram.checkpoints import (
    describe,
    load_encoder,
    load_exported,
    load_module,
    read_checkpoint,
    read_encoder_config,
    resolve_checkpoint,
    state_under,
)
from miram.cli import main
from miram.models.masked_autoencoder import MaskedAutoencoderConfig
from miram.models.vit import ViTConfig
from miram.train.lit_pretrain import LitMaskedAutoencoder

TINY = ViTConfig(img_size=(32, 16), patch_size=8, embed_dim=32, depth=1, num_heads=2)


def _run_dir(root: Path, names: tuple[str, ...]) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    for name in names:
        (root / "checkpoints" / name).write_bytes(b"")
    return root


def test_run_directory_resolution(tmp_path: Path) -> None:
    both = _run_dir(tmp_path / "both", ("best.ckpt", "last.ckpt"))
    assert resolve_checkpoint(both) == both / "checkpoints" / "last.ckpt"  # the final one by default
    assert resolve_checkpoint(both, "best") == both / "checkpoints" / "best.ckpt"
    last_only = _run_dir(tmp_path / "last_only", ("last.ckpt",))
    assert resolve_checkpoint(last_only, "best") == last_only / "checkpoints" / "last.ckpt"  # no best kept
    best_only = _run_dir(tmp_path / "best_only", ("best.ckpt",))
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        resolve_checkpoint(best_only)
    assert resolve_checkpoint(both / "checkpoints" / "last.ckpt") == both / "checkpoints" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_state_under_strips_prefix_and_compile_prefix() -> None:
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    state = {"model.encoder.w": a, "model._orig_mod.encoder.b": b, "model.decoder.w": c}
    assert state_under(state, "model.encoder.") == {"w": a, "b": b}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MAE checkpoint written by Lightning (so its ``miram`` metadata comes from on_save_checkpoint)."""
    root = tmp_path_factory.mktemp("ckpt")
    lit = LitMaskedAutoencoder(model=MaskedAutoencoderConfig(encoder=TINY))
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(lit)
    trainer.save_checkpoint(root / "mae.ckpt")
    return root / "mae.ckpt"


def test_metadata_records_class_and_encoder(saved: Path) -> None:
    meta = read_checkpoint(saved)["miram"]
    assert meta["class_path"] == "miram.train.lit_pretrain.LitMaskedAutoencoder"
    assert meta["method"] == "mae" and meta["encoder_prefix"] == "model.encoder."
    assert meta["encoder_config"]["img_size"] == [32, 16]
    assert read_encoder_config(saved) == TINY


def test_load_module_and_load_encoder_give_the_saved_weights(saved: Path) -> None:
    state = read_checkpoint(saved)["state_dict"]
    module = load_module(saved)
    assert isinstance(module, LitMaskedAutoencoder) and not module.training
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    encoder, meta = load_encoder(saved)
    assert meta["method"] == "mae"
    torch.testing.assert_close(encoder.state_dict()["pos_embed"], state["model.encoder.pos_embed"])


def test_describe_keeps_rebuild_overrides() -> None:
    lit = LitMaskedAutoencoder(model=MaskedAutoencoderConfig(encoder=TINY))
    meta = describe(lit, "mae", TINY, "model.encoder.", {"vit": TINY})
    assert meta["init_overrides"]["vit"]["embed_dim"] == 32


def test_a_checkpoint_without_metadata_is_named_in_the_error(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="plain.ckpt: not a miram checkpoint"):
        load_module(tmp_path / "plain.ckpt")


def test_export_command_round_trip_and_one_line_errors(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--run", str(saved), "--out", str(tmp_path / "enc")]) == 0
    encoder, info = load_exported(tmp_path / "enc.safetensors")
    assert info["source"] == str(saved) and info["method"] == "mae"
    x = torch.randn(2, 1, 32, 16)
    torch.testing.assert_close(encoder(x), load_encoder(saved)[0](x))

    capsys.readouterr()
    assert main(["export", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("miram: error: ") and "missing: no such checkpoint" in err and "Traceback" not in err
    )
    with pytest.raises(FileNotFoundError):
        main(["export", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--debug"])
    (tmp_path / "lonely.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no lonely.json beside it"):
        load_encoder(tmp_path / "lonely.safetensors")
