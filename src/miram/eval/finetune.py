"""Fine-tuning building blocks: the encoder source, layer-wise learning-rate decay groups and mixup.

Layer-wise decay follows BEiT / MAE fine-tuning: parameter groups whose learning rate is scaled by
``decay ** (depth + 1 - layer)``, where the patch embedding, cls token and position table are layer 0,
block ``i`` is layer ``i + 1`` and the final norm and head are layer ``depth + 1``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from miram.models.vit import ViTConfig, ViTEncoder
from miram.utils.config import from_dict


def open_encoder(path: str | Path) -> tuple[ViTEncoder, dict[str, Any]]:
    """A trained encoder and its metadata from a miram checkpoint, run directory or exported
    ``.safetensors`` (see :mod:`miram.utils.export`)."""
    if Path(path).suffix == ".safetensors":
        from miram.utils.export import load_exported

        return load_exported(path)
    from miram.utils.checkpoint import load_encoder

    return load_encoder(path)


def build_encoder(
    encoder: str | None = None,
    weights: str | None = None,
    vit: ViTConfig | dict[str, Any] | None = None,
    drop_path_rate: float | None = None,
    global_pool: Literal["cls", "mean"] | None = None,
) -> tuple[ViTEncoder, str]:
    """The encoder to evaluate, and a short description of where it came from.

    Args:
        encoder: miram checkpoint, run directory or exported ``.safetensors``; None for ``vit`` from scratch.
        weights: published weights (official MAE, timm, Hugging Face ViTMAE) loaded into ``vit``.
        vit: architecture for ``weights`` or scratch (ignored when ``encoder`` is given).
        drop_path_rate: overrides the architecture's stochastic depth.
        global_pool: overrides the pooling of :meth:`ViTEncoder.forward`.
    """
    source = "scratch"
    if encoder is not None:
        loaded, meta = open_encoder(encoder)
        config, state, source = loaded.config, loaded.state_dict(), f"{meta.get('method', '?')}:{encoder}"
    else:
        config = from_dict(ViTConfig, vit) if vit is not None else ViTConfig()
        state = None
    overrides: dict[str, Any] = {}
    if drop_path_rate is not None:
        overrides["drop_path_rate"] = drop_path_rate
    if global_pool is not None:
        overrides["global_pool"] = global_pool
    model = ViTEncoder(replace(config, **overrides))
    if state is not None:
        model.load_state_dict(state)
    if weights is not None:
        from miram.utils.weights import load_pretrained

        load_pretrained(model, weights)
        source = f"weights:{weights}"
    return model, source


def layer_id(name: str, depth: int) -> int:
    """Layer index of an encoder parameter name for layer-wise decay."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def llrd_param_groups(
    encoder: ViTEncoder, head: nn.Module, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning rates; biases and 1-D parameters get no weight decay.

    Returns:
        Groups with ``params``, ``lr``, ``weight_decay`` and ``lr_scale`` (kept so schedules can rescale).
    """
    depth = encoder.config.depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named = [(n, p) for n, p in encoder.named_parameters()] + [
        (f"head.{n}", p) for n, p in head.named_parameters()
    ]
    for name, p in named:
        if not p.requires_grad:
            continue
        layer = depth + 1 if name.startswith("head.") else layer_id(name, depth)
        no_decay = p.ndim <= 1 or name.endswith(".bias") or name in ("cls_token", "pos_embed")
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[key] = {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def mixup(
    images: Tensor, target: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mix each image with a random partner (Zhang et al., 2018).

    Returns:
        Mixed images ``(B, C, H, W)``, the targets, the partners' targets and the weight ``lam`` of the first;
        the loss is ``lam * L(target) + (1 - lam) * L(partner)``.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1 - lam) * images[perm], target, target[perm], lam
