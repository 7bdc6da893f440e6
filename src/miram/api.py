"""The public Python API, re-exported by :mod:`miram`: build a model, build an attention backend, load a
trained encoder, and get its features for a batch.

    import miram, torch
    model = miram.build_model("configs/demo/miram_tiny_nystrom.yaml")    # a MaskedAutoencoder
    attention = miram.build_attention("nystrom", dim=64, num_heads=4)   # (B, N, 64) -> (B, N, 64)
    encoder, meta = miram.load_encoder("runs/miram_tiny_nystrom")        # run dir, .ckpt or .safetensors
    features = miram.encode(encoder, torch.rand(8, 1, 64, 64))           # (8, D)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

# re-exported (``name as name``): with build_model and encode below, the API of ``import miram``
from miram.attention import build_attention as build_attention
from miram.attention import list_backends as list_backends
from miram.checkpoints import export as export
from miram.checkpoints import load_encoder as load_encoder
from miram.checkpoints import load_module as load_module
from miram.models.masked_autoencoder import MaskedAutoencoder, MaskedAutoencoderConfig
from miram.models.mocov3 import MoCoV3, MoCoV3Config


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``delta`` over ``base``: mappings merge key by key, everything else (lists included) is replaced,
    as when ``miram pretrain`` reads several ``--config`` files."""
    out = dict(base)
    for key, value in delta.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def build_model(*configs: str | Path | MaskedAutoencoderConfig | MoCoV3Config) -> MaskedAutoencoder | MoCoV3:
    """Build an untrained pre-training model.

    Args:
        configs: a model config dataclass, or ``miram pretrain`` YAML files applied in order (a base file and
            its overrides, e.g. ``configs/paper/mae.yaml, configs/paper/cpu/mae.yaml``).

    Returns:
        The MAE / MIRAM :class:`MaskedAutoencoder` or the :class:`MoCoV3` model.
    """
    if len(configs) == 1 and isinstance(configs[0], MaskedAutoencoderConfig):
        return MaskedAutoencoder(configs[0])
    if len(configs) == 1 and isinstance(configs[0], MoCoV3Config):
        return MoCoV3(configs[0])
    if not configs or not all(isinstance(c, (str, Path)) for c in configs):
        raise TypeError("build_model takes one config dataclass, or one or more YAML paths")
    merged: dict[str, Any] = {}
    for path in configs:
        merged = _merge(merged, yaml.safe_load(Path(path).read_text()) or {})  # type: ignore[arg-type]
    spec = merged.get("model")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{configs[-1]}: no model.class_path; not a miram pretrain config")
    module_name, _, class_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    model: MaskedAutoencoder | MoCoV3 = cls(**spec.get("init_args", {})).model
    return model


@torch.no_grad()
def encode(encoder: nn.Module, images: Tensor, batch_size: int | None = None) -> Tensor:
    """Pooled features of a batch, in eval mode and without gradients.

    Args:
        encoder: a ViT encoder, ``(B, C, H, W) -> (B, D)`` (e.g. from :func:`load_encoder`).
        images: ``(B, C, H, W)`` normalised images at the encoder's input size.
        batch_size: forward this many images at a time (default: all at once).

    Returns:
        ``(B, D)`` float32 features on the images' device.
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    step = batch_size or images.shape[0]
    out = [encoder(images[i : i + step].to(device)).float() for i in range(0, images.shape[0], step)]
    encoder.train(was_training)
    return torch.cat(out).to(images.device)
