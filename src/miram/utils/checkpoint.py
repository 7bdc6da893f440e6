"""Loading encoders from miram checkpoints. The only place that knows checkpoint key prefixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from miram.models.vit import ViTConfig, ViTEncoder
from miram.utils.config import from_dict

COMPILE_PREFIX = "_orig_mod."  # added by torch.compile to every key of a compiled module


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run directory (``best.ckpt``, else ``last.ckpt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            candidate = path / "checkpoints" / name
            if candidate.exists():
                return candidate
        raise FileNotFoundError(
            f"{path}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this run directory"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    file = resolve_checkpoint(path)
    try:
        ckpt: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError subclasses and RuntimeError here
        raise ValueError(
            f"{file}: refusing to load: not a weights-only checkpoint ({err.__class__.__name__}); "
            "only load pickles you trust, with torch.load(weights_only=False), and export them to safetensors"
        ) from err
    return ckpt


def encoder_state(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The encoder's entries of a full state dict, with ``prefix`` (and any compile prefix) removed."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace(COMPILE_PREFIX, "")
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
    return out


def load_encoder(path: str | Path) -> tuple[ViTEncoder, dict[str, Any]]:
    """Rebuild the ViT encoder of a miram pre-training checkpoint, run directory or ``miram export`` file.

    Returns:
        The encoder (eval mode) and the checkpoint's ``miram`` metadata (method, encoder config, prefix).
    """
    if Path(path).suffix == ".safetensors":
        from miram.utils.export import load_exported

        return load_exported(path)
    file = resolve_checkpoint(path)
    ckpt = load_checkpoint(file)
    meta = ckpt.get("miram")
    if meta is None:
        raise ValueError(f"{file}: not a miram pre-training checkpoint (no 'miram' metadata)")
    encoder = ViTEncoder(from_dict(ViTConfig, meta["encoder_config"]))
    state = encoder_state(ckpt["state_dict"], meta["encoder_prefix"])
    result = encoder.load_state_dict(state, strict=True)
    del result
    return encoder.eval(), dict(meta)
