"""The public API of ``import miram``: the README example runs, and each function returns what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

import miram
from miram.cli import main
from miram.config import from_dict
from miram.data.phantom import prepare_phantoms
from miram.models.masked_autoencoder import MaskedAutoencoder, MaskedAutoencoderConfig
from miram.models.mocov3 import MoCoV3, MoCoV3Config
from miram.models.vit import ViTConfig
from miram.train.cli import pretrain

REPO = Path(__file__).resolve().parents[1]
TINY = ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``configs`` and a trained ``runs/miram_tiny_nystrom`` (one step), as in the README."""
    root = tmp_path_factory.mktemp("api")
    (root / "configs").symlink_to(REPO / "configs")
    cache = prepare_phantoms(str(root / "phantoms"), num=48, size=128, seed=0)
    pretrain(
        [
            "--config", str(REPO / "configs/demo/miram_tiny_nystrom.yaml"), "--data.cache", cache,
            "--data.num_workers", "0", "--data.batch_size", "8",
            "--out", str(root / "runs/miram_tiny_nystrom"), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--figures.every_n_epochs", "0",
        ]
    )  # fmt: skip
    return root


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README has no Python API example"
    return match.group(1)


def test_readme_example_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    scope: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    assert isinstance(scope["model"], MaskedAutoencoder)
    assert scope["features"].shape == (8, 64)  # type: ignore[attr-defined]
    assert (workdir / "miram-encoder.safetensors").exists() and (workdir / "miram-encoder.json").exists()
    assert type(scope["module"]).__name__ == "LitMaskedAutoencoder"


def test_build_model_composes_configs_as_the_command_line_does(capsys: pytest.CaptureFixture[str]) -> None:
    base, cpu = (str(REPO / f"configs/paper{d}/miram_nystrom.yaml") for d in ("", "/cpu"))
    model = miram.build_model(base, cpu)
    assert isinstance(model, MaskedAutoencoder)
    with pytest.raises(SystemExit):  # --print_config prints, then exits
        main(["pretrain", "--config", base, "--config", cpu, "--data.cache", "CACHE", "--print_config"])
    parsed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["model"]
    assert model.config == from_dict(MaskedAutoencoderConfig, parsed)
    assert model.config.encoder.embed_dim == 64 and model.config.scales[1].attention.name == "nystrom"


def test_build_model_from_config_dataclasses() -> None:
    assert isinstance(miram.build_model(MoCoV3Config(encoder=TINY, out_dim=16)), MoCoV3)
    mae = miram.build_model(MaskedAutoencoderConfig(encoder=TINY))
    assert isinstance(mae, MaskedAutoencoder) and len(mae.config.scales) == 1
    with pytest.raises(TypeError, match="config dataclass"):
        miram.build_model(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class_path"):
        miram.build_model(str(REPO / "configs/paper/probe.yaml"))


def test_build_attention_and_list_backends() -> None:
    assert miram.list_backends() == ["linformer", "nystrom", "performer", "sdpa", "softmax"]
    x = torch.randn(2, 10, 32)
    exact, reference = miram.build_attention("sdpa", 32, 4), miram.build_attention("softmax", 32, 4)
    reference.load_state_dict(exact.state_dict())
    torch.testing.assert_close(exact(x), reference(x), atol=1e-5, rtol=1e-5)


def test_encode_is_eval_mode_batched_and_restores_training() -> None:
    torch.manual_seed(0)
    encoder = miram.build_model(MaskedAutoencoderConfig(encoder=TINY)).encoder
    encoder.config.drop_path_rate = 0.0
    images = torch.randn(5, 1, 32, 32)
    encoder.train()
    whole = miram.encode(encoder, images)
    assert encoder.training and not whole.requires_grad
    torch.testing.assert_close(miram.encode(encoder, images, batch_size=2), whole)
    with torch.no_grad():
        torch.testing.assert_close(whole, encoder.eval()(images))
