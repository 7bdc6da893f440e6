"""Everything miram knows about checkpoints, in one place.

- **Run directories**: ``<run>/checkpoints/{best,last}.ckpt``; :func:`resolve_checkpoint` says which file a
  caller gets.
- **Safe reading**: :func:`read_checkpoint` reads Lightning checkpoints, torch files, safetensors and Hugging
  Face model directories without running pickled code.
- **Key prefixes**: :func:`state_under` strips a module prefix (and the ``_orig_mod.`` of ``torch.compile``).
- **The ``miram`` metadata** every miram LightningModule writes into its checkpoints (:func:`metadata`):
  method, class path, encoder config and prefix. From it :func:`load_encoder` rebuilds the ViT encoder of any
  run, and :func:`load_module` rebuilds the whole LightningModule.
- **Export**: :func:`export` writes an encoder as ``.safetensors`` (timm / official-MAE key names) plus a JSON
  config; :func:`load_exported` reads it back.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from miram.config import from_dict, to_dict
from miram.models.vit import ViTConfig, ViTEncoder
from miram.provenance import git_commit

if TYPE_CHECKING:
    import lightning as L

COMPILE_PREFIX = "_orig_mod."  # added by torch.compile to every key of a compiled module
EXPORT_FORMAT = "miram-encoder"
# files that stand for a model directory (Hugging Face layout, or a directory holding an export)
MODEL_DIR_FILES = ("model.safetensors", "pytorch_model.bin", "encoder.safetensors")

Which = Literal["best", "last"]


class UnsafeCheckpointError(ValueError):
    """A checkpoint that can only be read by running arbitrary pickled code."""


def resolve_checkpoint(path: str | Path, which: Which = "last") -> Path:
    """The checkpoint file a path stands for.

    Args:
        path: a checkpoint file, or a run directory holding ``checkpoints/``.
        which: for a run directory: ``last`` (the final checkpoint: what the paper evaluates, and the default
            everywhere except ``miram predict``) or ``best`` (``best.ckpt``, or ``last.ckpt`` when the run
            kept no best, e.g. it had no validation).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or run directory")
    if not path.is_dir():
        return path
    names = ("best.ckpt", "last.ckpt") if which == "best" else ("last.ckpt",)
    for name in names:
        candidate = path / "checkpoints" / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{path}: no {' or '.join('checkpoints/' + n for n in names)} in this run directory"
    )


def _model_dir_file(path: Path) -> Path | None:
    return next((path / n for n in MODEL_DIR_FILES if (path / n).exists()), None)


def read_checkpoint(path: str | Path, which: Which = "last", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint without running pickled code.

    Args:
        path: a ``.safetensors`` file, a torch file (``.ckpt``, ``.pth``, ``.pt``, ``.bin``), a run directory
            (see :func:`resolve_checkpoint`) or a model directory holding one of ``MODEL_DIR_FILES``.
        which: ``last`` | ``best``, for a run directory.
        mmap: map the tensors of a torch file instead of reading them (for callers that need only its
            metadata: a pre-training checkpoint with optimiser state is gigabytes).

    Returns:
        The loaded object (a dict of tensors, or a dict wrapping one).

    Raises:
        UnsafeCheckpointError: the file needs objects that ``weights_only`` loading does not allow.
    """
    path = Path(path)
    inner = _model_dir_file(path) if path.is_dir() and not (path / "checkpoints").is_dir() else None
    file = inner or resolve_checkpoint(path, which)
    if file.suffix == ".safetensors":
        return dict(load_file(str(file), device="cpu"))
    try:
        # MAE's training script stores its argparse.Namespace of options; that class is harmless.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        why = str(err).splitlines()[0] if str(err) else "weights_only load failed"
        raise UnsafeCheckpointError(
            f"{file}: refusing to load: the file contains pickled objects that could run arbitrary code "
            f"({why}). If you trust its origin, load it yourself with torch.load(weights_only=False) and "
            "save only the tensors (torch.save(state_dict) or safetensors.torch.save_file), then pass that "
            "file."
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{file}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def state_under(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state_dict`` under ``prefix``, with the prefix (and any compile prefix) removed."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace(COMPILE_PREFIX, "")
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
    return out


def describe(
    module: torch.nn.Module,
    method: str,
    encoder_config: ViTConfig,
    encoder_prefix: str,
    init_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``miram`` metadata a LightningModule writes into its checkpoints (``on_save_checkpoint``).

    Args:
        module: the LightningModule (its class path is recorded, so :func:`load_module` can rebuild it).
        method: mae | miram | mocov3 | probe | finetune.
        encoder_config: the ViT encoder's architecture.
        encoder_prefix: the state-dict prefix of the encoder's weights.
        init_overrides: constructor arguments that replace the saved hyperparameters on rebuild (e.g. a
            classifier's encoder source, whose weights are in the checkpoint already).
    """
    cls = type(module)
    return {
        "method": method,
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "encoder_config": to_dict(encoder_config),
        "encoder_prefix": encoder_prefix,
        "init_overrides": to_dict(init_overrides or {}),
    }


def training_data(module: Any) -> list[dict[str, Any]]:
    """What a LightningModule is being trained on: its datamodule's :meth:`provenance` (each cache's path,
    source and licence entry), or ``[]`` outside a Trainer."""
    trainer = getattr(module, "_trainer", None)
    provenance = getattr(getattr(trainer, "datamodule", None), "provenance", None)
    return list(provenance()) if callable(provenance) else []


def restrictions(data: list[dict[str, Any]]) -> list[str]:
    """The licence notices of training sources that forbid publishing trained weights (EMBED, clause 5)."""
    notices = []
    for item in data:
        licence = item.get("licence") or {}
        if licence.get("weights_restricted"):
            notice = f"{item.get('source')}: {licence.get('notice', licence.get('name', 'restricted'))}"
            if notice not in notices:
                notices.append(notice)
    return notices


def metadata(ckpt: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """The ``miram`` metadata of a loaded checkpoint; ``source`` names it in the error."""
    meta = ckpt.get("miram")
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: not a miram checkpoint (no 'miram' metadata)")
    return meta


def read_encoder_config(path: str | Path, which: Which = "last") -> ViTConfig:
    """The encoder architecture of a run, checkpoint or export, without building the encoder or reading its
    weights (the eval CLI asks for it while parsing, before the encoder is loaded)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return from_dict(ViTConfig, json.loads(p.with_suffix(".json").read_text())["encoder_config"])
    file = resolve_checkpoint(p, which)
    return from_dict(ViTConfig, metadata(read_checkpoint(file, mmap=True), file)["encoder_config"])


def load_encoder(path: str | Path, which: Which = "last") -> tuple[ViTEncoder, dict[str, Any]]:
    """Rebuild the ViT encoder of a miram run directory, checkpoint (any method, probes and fine-tuning runs
    included) or ``miram export`` file.

    Returns:
        The encoder (eval mode) and its metadata (``method``, ``encoder_config``, ...).
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_exported(p)
    file = resolve_checkpoint(p, which)
    ckpt = read_checkpoint(file)
    meta = metadata(ckpt, file)
    encoder = ViTEncoder(from_dict(ViTConfig, meta["encoder_config"]))
    encoder.load_state_dict(state_under(ckpt["state_dict"], meta["encoder_prefix"]), strict=True)
    return encoder.eval(), dict(meta)


def load_module(path: str | Path, which: Which = "last") -> L.LightningModule:
    """Rebuild the LightningModule of a miram run directory or checkpoint from the class path it records,
    with every weight loaded (eval mode)."""
    file = resolve_checkpoint(path, which)
    ckpt = read_checkpoint(file)
    meta = metadata(ckpt, file)
    module_name, _, class_name = meta["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    # LightningCLI adds private keys (``_instantiator``): keep the constructor's arguments only
    params = inspect.signature(cls.__init__).parameters
    hparams = {k: v for k, v in dict(ckpt.get("hyper_parameters", {})).items() if k in params}
    module: L.LightningModule = cls(**{**hparams, **meta.get("init_overrides", {})})
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def export(run: str, out: str, run_checkpoint: Which = "last") -> Path:
    """``miram export``: the encoder of a run or checkpoint as ``<out>.safetensors`` plus ``<out>.json``.

    The safetensors file holds the encoder's state dict under timm / official-MAE key names (so timm-style
    loaders and :func:`miram.models.pretrained.load_pretrained` read it); the JSON holds the ``ViTConfig`` and
    provenance, so :func:`load_exported` (and ``--run`` of every command) rebuild it. The JSON also lists
    what the encoder was trained on (``training_data``: caches, sources, licences) and the ``restrictions``
    of any source whose licence forbids publishing weights trained on it (EMBED), which are also printed.

    Args:
        run: a miram run directory or checkpoint file (pre-training, probe or fine-tuning).
        out: output path; ``.safetensors`` and ``.json`` are written beside each other.
        run_checkpoint: last | best checkpoint of a run directory.

    Returns:
        The safetensors path.
    """
    encoder, meta = load_encoder(run, run_checkpoint)
    target = Path(out).with_suffix(".safetensors")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(target), metadata={"format": EXPORT_FORMAT})
    data = list(meta.get("training_data") or [])
    info = {
        "format": EXPORT_FORMAT,
        "method": meta.get("method"),
        "encoder_config": to_dict(encoder.config),
        "source": str(resolve_checkpoint(run, run_checkpoint)),
        "git_commit": git_commit(),
        "training_data": data,
        "restrictions": restrictions(data),
    }
    target.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(f"wrote {target} and {target.with_suffix('.json')}")
    for notice in info["restrictions"]:
        print(f"miram: warning: these weights were trained on {notice}", file=sys.stderr)
    return target


def load_exported(path: str | Path) -> tuple[ViTEncoder, dict[str, Any]]:
    """Rebuild an encoder written by :func:`export`.

    Returns:
        The encoder (eval mode) and its metadata (``method``, ``encoder_config``, ...).
    """
    file = Path(path).with_suffix(".safetensors")
    config = file.with_suffix(".json")
    if not config.exists():
        raise FileNotFoundError(
            f"{file}: no {config.name} beside it; an export is the pair written by miram export"
        )
    info = json.loads(config.read_text())
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{file.with_suffix('.json')}: not a miram encoder export (format {info.get('format')})"
        )
    encoder = ViTEncoder(from_dict(ViTConfig, info["encoder_config"]))
    encoder.load_state_dict(read_checkpoint(file), strict=True)
    return encoder.eval(), info
