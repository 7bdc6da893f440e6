"""Weight import round trips built from our own encoder: timm/MAE, MoCo prefixes, Hugging Face names,
grayscale conversion, non-square grids, and the refusal of unsafe pickles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from miram.checkpoints import UnsafeCheckpointError, read_checkpoint
from miram.layers.pos_embed import resample_pos_embed
from miram.models.pretrained import convert_state_dict, load_pretrained
from miram.models.vit import ViTConfig, ViTEncoder

BASE = ViTConfig(img_size=(64, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


def encoder(**kw: object) -> ViTEncoder:
    return ViTEncoder(replace(BASE, **kw)).eval()  # type: ignore[arg-type]


def randomised(enc: ViTEncoder) -> ViTEncoder:
    # a learned-looking position table, so resampling and copying are visible
    with torch.no_grad():
        enc.pos_embed.normal_()
    return enc


def to_hf(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our keys -> Hugging Face ViTMAE keys (the inverse of the importer's mapping)."""
    out = {
        "vit.embeddings.cls_token": sd["cls_token"],
        "vit.embeddings.position_embeddings": sd["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "vit.layernorm.weight": sd["norm.weight"],
        "vit.layernorm.bias": sd["norm.bias"],
        "decoder.decoder_embed.weight": torch.zeros(4, 4),
    }
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense"}
    names |= {"mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(depth):
        pre = f"vit.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{pre}{theirs}.{kind}"] = sd[f"blocks.{i}.{ours}.{kind}"]
            q, k, v = sd[f"blocks.{i}.attn.qkv.{kind}"].chunk(3, dim=0)
            for part, t in (("query", q), ("key", k), ("value", v)):
                out[f"{pre}attention.attention.{part}.{kind}"] = t.contiguous()
    return out


def test_mae_checkpoint_rgb_to_gray(tmp_path: Path) -> None:
    rgb = randomised(encoder(in_chans=3))
    sd = rgb.state_dict() | {"decoder_embed.weight": torch.zeros(2, 2), "mask_token": torch.zeros(1, 1, 32)}
    torch.save({"model": sd, "epoch": 3}, tmp_path / "mae.pth")
    gray = encoder()
    report = load_pretrained(gray, tmp_path / "mae.pth")
    assert report.format == "timm" and not report.missing and not report.unexpected
    assert {"decoder_embed.weight", "mask_token"} <= set(report.ignored)
    assert any("summed" in n for n in report.notes)
    x = torch.randn(2, 1, 64, 32)
    torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


def test_non_square_grid_is_resampled(tmp_path: Path) -> None:
    src = randomised(encoder())  # grid (8, 4)
    torch.save(src.state_dict(), tmp_path / "vit.pt")
    dst = encoder(img_size=(32, 64))  # grid (4, 8): same token count, different grid
    report = load_pretrained(dst, tmp_path / "vit.pt", source_grid=(8, 4))
    expected = resample_pos_embed(src.pos_embed, (8, 4), (4, 8))
    torch.testing.assert_close(dst.pos_embed, expected)
    assert any("resampled" in n for n in report.notes)
    torch.testing.assert_close(dst.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    bigger = encoder(img_size=(128, 64))
    with pytest.raises(ValueError, match="source_grid"):
        load_pretrained(bigger, tmp_path / "vit.pt")
    load_pretrained(bigger, tmp_path / "vit.pt", source_grid=(8, 4))
    assert bigger.pos_embed.shape == (1, 1 + 16 * 8, 32)


def test_mocov3_prefix_picks_online_encoder_and_reports_keys() -> None:
    online, momentum = randomised(encoder()), randomised(encoder())
    sd = {f"module.base_encoder.{k}": v for k, v in online.state_dict().items()}
    sd |= {f"module.momentum_encoder.{k}": v for k, v in momentum.state_dict().items()}
    sd["module.base_encoder.head.weight"] = torch.zeros(3, 32)
    del sd["module.base_encoder.norm.bias"]
    sd["module.base_encoder.extra.weight"] = torch.zeros(1)
    converted, report = convert_state_dict({"state_dict": sd}, encoder())
    assert report.prefix == "module.base_encoder."
    assert report.missing == ["norm.bias"]
    assert report.unexpected == ["module.base_encoder.extra.weight"]
    assert "module.base_encoder.head.weight" in report.ignored
    torch.testing.assert_close(converted["pos_embed"], online.pos_embed)


def test_hugging_face_vitmae_round_trip(tmp_path: Path) -> None:
    src = randomised(encoder())
    save_file(to_hf(src.state_dict(), depth=2), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"image_size": [64, 32], "patch_size": 8}))
    dst = encoder()
    report = load_pretrained(dst, tmp_path, strict=True)
    assert report.format == "hf" and "decoder.decoder_embed.weight" in report.ignored
    x = torch.randn(2, 1, 64, 32)
    torch.testing.assert_close(dst(x), src(x))


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run",))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "evil": Payload()}, tmp_path / "bad.pth")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        read_checkpoint(tmp_path / "bad.pth")
