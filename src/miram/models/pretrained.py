"""Import published ViT weights into :class:`~miram.models.vit.ViTEncoder` from local files.

Formats recognised from the key names:

- ``timm``: timm / official-MAE encoder names (``patch_embed.proj``, ``blocks.i.attn.qkv``, ...), also
  under a ``model`` / ``state_dict`` wrapper (official MAE checkpoints keep them under ``model``; their
  ``decoder_*`` and ``mask_token`` keys are ignored) and behind a prefix such as ``module.base_encoder.``
  (MoCo-v3) or ``model.encoder.`` (miram Lightning checkpoints).
- ``hf``: Hugging Face ViT / ViTMAE (``vit.embeddings.patch_embeddings.projection``,
  ``vit.encoder.layer.N.attention.attention.query``, ...), from ``model.safetensors`` or
  ``pytorch_model.bin``; a directory holding ``config.json`` gives the source grid.

Conversions: RGB patch weights are summed to one input channel (exact for a gray image replicated to three
channels under the same normalisation); position tables are resampled to the target ``(gh, gw)``; heads and
decoders are dropped and listed. Files are read with ``torch.load(weights_only=True)`` or safetensors only; a
pickle that needs arbitrary code is refused (:func:`miram.checkpoints.read_checkpoint` reads every file).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from miram.checkpoints import read_checkpoint
from miram.layers.pos_embed import resample_pos_embed
from miram.models.vit import ViTEncoder

ANCHOR = "patch_embed.proj.weight"  # present in every timm-style encoder state dict
HF_ANCHOR = "embeddings.patch_embeddings.projection.weight"
# encoder parts of published checkpoints that our encoder has no place for (classification heads etc.)
DROPPED = re.compile(r"^(head|fc_norm|decoder|mask_token|pre_logits|dist_token|head_dist|norm_pre|pooler)")
NC_NOTE = (
    "official MAE / MoCo-v3 weights (and timm '*.mae' weights) are CC-BY-NC-4.0: non-commercial use only"
)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        format: ``timm`` or ``hf``.
        prefix: prefix stripped from the source keys.
        missing: encoder keys the source did not provide (left at their initial values).
        unexpected: source keys that matched no encoder key.
        ignored: source keys dropped on purpose (decoders, heads, mask tokens).
        notes: conversions applied (channel sums, grid resampling) and warnings.
    """

    format: str
    prefix: str = ""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"format {self.format}" + (f", prefix '{self.prefix}'" if self.prefix else "")]
        for name in ("missing", "unexpected", "ignored"):
            keys: list[str] = getattr(self, name)
            if keys:
                lines.append(f"{name} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        return "\n".join(lines + self.notes)


def _unwrap(obj: dict[str, Any]) -> dict[str, Tensor]:
    """The tensor dict inside common wrappers (``model``, ``state_dict``, ``module``)."""
    for key in ("model", "state_dict", "module"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
            return _unwrap(inner)
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def _hf_to_timm(sd: dict[str, Tensor], prefix: str) -> tuple[dict[str, Tensor], list[str]]:
    """Rename Hugging Face ViT/ViTMAE encoder keys (after ``prefix``) to timm names; q, k, v are fused."""
    out: dict[str, Tensor] = {}
    rest: list[str] = []
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    layer = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.output.dense": "attn.proj",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
    }
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            rest.append(key)
            continue
        k = key[len(prefix) :]
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", k)
        if k in simple:
            out[simple[k]] = value
        elif m and m.group(2).startswith("attention.attention."):
            part = m.group(2).rsplit(".", 1)[1]  # query | key | value
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[part] = value
        elif m and m.group(2) in layer:
            out[f"blocks.{m.group(1)}.{layer[m.group(2)]}.{m.group(3)}"] = value
        else:
            rest.append(key)
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"layer {i}: incomplete attention {kind} (found {sorted(parts)})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out, rest


def _hf_grid(path: Path) -> tuple[int, int] | None:
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.exists():
        return None
    c = json.loads(config.read_text())
    size, patch = c.get("image_size"), c.get("patch_size")
    if size is None or patch is None:
        return None
    h, w = (size, size) if isinstance(size, int) else size
    p = (patch, patch) if isinstance(patch, int) else patch
    return h // p[0], w // p[1]


def _source_grid(
    num: int, target: tuple[int, int], given: tuple[int, int] | None, report: LoadReport
) -> tuple[int, int]:
    if given is not None:
        if given[0] * given[1] != num:
            raise ValueError(
                f"source_grid {given} has {given[0] * given[1]} cells; the position table has {num}"
            )
        return given
    if num == target[0] * target[1]:
        report.notes.append(f"source grid assumed equal to the target {target} (same token count)")
        return target
    side = math.isqrt(num)
    if side * side == num:
        return side, side
    raise ValueError(
        f"cannot infer the source grid of a {num}-token position table; pass source_grid=(gh, gw)"
    )


def convert_state_dict(
    obj: dict[str, Any],
    encoder: ViTEncoder,
    source_grid: tuple[int, int] | None = None,
) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a checkpoint onto ``encoder``'s key names, channels and grid.

    Args:
        obj: the loaded checkpoint (any format above).
        encoder: the target encoder (read only).
        source_grid: ``(gh, gw)`` of the source position table, when it is neither square nor the target's.

    Returns:
        The converted state dict (only keys the encoder has) and the report.
    """
    sd = _unwrap(obj)
    hf = next((k[: -len(HF_ANCHOR)] for k in sd if k.endswith(HF_ANCHOR)), None)
    if hf is not None:
        report = LoadReport("hf", prefix=hf)
        sd, rest = _hf_to_timm(sd, hf)
        report.ignored += rest
    else:
        # the online encoder, not a momentum copy (MoCo checkpoints hold both)
        prefixes = sorted(
            (k[: -len(ANCHOR)] for k in sd if k.endswith(ANCHOR)), key=lambda p: ("momentum" in p, len(p))
        )
        prefix = prefixes[0] if prefixes else None
        if prefix is None:
            raise ValueError(f"no ViT encoder found: no key ends with '{ANCHOR}' or '{HF_ANCHOR}'")
        report = LoadReport("timm", prefix=prefix)
        report.ignored += [k for k in sd if not k.startswith(prefix)]
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if (
        any(k.startswith(("decoder", "mask_token")) for k in report.ignored + list(sd))
        or "base_encoder" in report.prefix
    ):
        report.notes.append(f"note: {NC_NOTE}")
    report.ignored += [report.prefix + k for k in sd if DROPPED.match(k)]
    sd = {k: v for k, v in sd.items() if not DROPPED.match(k)}

    own = encoder.state_dict()
    w = sd.get(ANCHOR)
    c_target = own[ANCHOR].shape[1]
    if w is not None and w.shape[1] != c_target:
        if c_target == 1:
            sd[ANCHOR] = w.sum(dim=1, keepdim=True)
            report.notes.append(f"patch projection: {w.shape[1]} input channels summed to 1")
        elif w.shape[1] == 1:
            sd[ANCHOR] = w.repeat(1, c_target, 1, 1) / c_target
            report.notes.append(f"patch projection: 1 input channel spread over {c_target}")
        else:
            raise ValueError(f"cannot map {w.shape[1]} input channels onto {c_target}")
    pos = sd.get("pos_embed")
    if pos is not None:
        target_grid = encoder.grid_size
        num_prefix = pos.shape[1] - _grid_tokens(pos.shape[1], target_grid, source_grid)
        if num_prefix == 0:
            # timm's no_embed_class tables hold grid positions only; our cls row is zero (MAE convention)
            pos = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
            report.notes.append("position table without a cls row: a zero cls row was added")
        grid = _source_grid(pos.shape[1] - 1, target_grid, source_grid, report)
        if grid != target_grid:
            report.notes.append(f"position table resampled from grid {grid} to {target_grid} (bicubic)")
        sd["pos_embed"] = resample_pos_embed(pos, grid, target_grid)
    missing = [k for k in own if k not in sd]
    report.unexpected = [report.prefix + k for k in sd if k not in own]
    report.missing = missing
    converted = {k: v for k, v in sd.items() if k in own}
    for k, v in converted.items():
        if v.shape != own[k].shape:
            raise ValueError(
                f"{k}: checkpoint shape {tuple(v.shape)} does not fit the encoder's {tuple(own[k].shape)}"
            )
    return converted, report


def _grid_tokens(num: int, target: tuple[int, int], given: tuple[int, int] | None) -> int:
    """How many rows of a ``num``-row position table are grid positions (the rest are prefix rows)."""
    if given is not None:
        return given[0] * given[1]

    def fits(n: int) -> bool:
        return n == target[0] * target[1] or math.isqrt(n) ** 2 == n

    # a cls row is the common case (MAE, timm, HF); only a table that fits without one lacks it
    return num if fits(num) and not fits(num - 1) else num - 1


def load_pretrained(
    encoder: ViTEncoder,
    path: str | Path,
    source_grid: tuple[int, int] | None = None,
    strict: bool = False,
) -> LoadReport:
    """Load published weights from a local file into ``encoder`` (in place).

    Args:
        encoder: the target encoder.
        path: checkpoint file or Hugging Face model directory (local only; nothing is downloaded).
        source_grid: ``(gh, gw)`` of the checkpoint's position table, when it is neither square nor the
            target's (read from ``config.json`` for Hugging Face directories).
        strict: raise if any encoder key is missing or any source key is unexpected.

    Returns:
        The load report (also emitted as a warning when keys are missing or unexpected).
    """
    p = Path(path)
    obj = read_checkpoint(p)
    grid = source_grid or (_hf_grid(p) if any(k.endswith(HF_ANCHOR) for k in _unwrap(obj)) else None)
    sd, report = convert_state_dict(obj, encoder, grid)
    if strict and (report.missing or report.unexpected):
        raise ValueError(f"{p}: strict load failed\n{report}")
    encoder.load_state_dict(sd, strict=False)
    if report.missing or report.unexpected or any(n.startswith("note:") for n in report.notes):
        warnings.warn(f"{p}: {report}", stacklevel=2)
    return report
