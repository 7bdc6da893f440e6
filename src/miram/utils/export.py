"""``miram export``: the encoder of any miram checkpoint as safetensors plus a JSON config.

``<out>.safetensors`` holds the encoder's state dict under timm / official-MAE key names (so timm-style
loaders and :func:`miram.utils.weights.load_pretrained` read it); ``<out>.json`` holds the ``ViTConfig``
and provenance, so :func:`load_exported` (and ``--model.encoder`` of ``miram probe | finetune``) rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miram.models.vit import ViTConfig, ViTEncoder
from miram.utils.config import from_dict, to_dict
from miram.utils.rundir import git_commit


def export(checkpoint: str, out: str) -> Path:
    """Write the encoder of ``checkpoint`` (a file or run directory) to ``out`` (``.safetensors`` added).

    Args:
        checkpoint: miram pre-training checkpoint or run directory.
        out: output path; ``<out>.safetensors`` and ``<out>.json`` are written.

    Returns:
        The safetensors path.
    """
    from safetensors.torch import save_file

    from miram.utils.checkpoint import load_encoder

    encoder, meta = load_encoder(checkpoint)
    target = Path(out).with_suffix(".safetensors")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(target), metadata={"format": "miram-encoder"})
    info = {
        "format": "miram-encoder",
        "method": meta.get("method"),
        "encoder_config": to_dict(encoder.config),
        "source": str(checkpoint),
        "git_commit": git_commit(),
    }
    target.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(f"wrote {target} and {target.with_suffix('.json')}")
    return target


def load_exported(path: str | Path) -> tuple[ViTEncoder, dict[str, Any]]:
    """Rebuild an encoder written by :func:`export`.

    Returns:
        The encoder (eval mode) and its metadata (``method``, ``encoder_config``, ...).
    """
    from safetensors.torch import load_file

    file = Path(path).with_suffix(".safetensors")
    info = json.loads(file.with_suffix(".json").read_text())
    encoder = ViTEncoder(from_dict(ViTConfig, info["encoder_config"]))
    encoder.load_state_dict(load_file(str(file)), strict=True)
    return encoder.eval(), info
