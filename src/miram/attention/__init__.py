"""Attention backends behind one interface (see ``base.py``) and a registry (see ``registry.py``)."""

from __future__ import annotations

import importlib

from miram.attention.base import AttentionBackend, AttentionConfig
from miram.attention.registry import (
    AttentionSpec,
    build_attention,
    get_backend,
    list_backends,
    register_backend,
)

# Imported on first registry use rather than at package import, so importing miram stays cheap.
_BUILTIN = ("sdpa", "softmax", "nystrom", "linformer", "performer")


def _load_builtin_backends() -> None:
    for name in _BUILTIN:
        try:
            importlib.import_module(f"miram.attention.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"miram.attention.{name}":
                raise


__all__ = [
    "AttentionBackend",
    "AttentionConfig",
    "AttentionSpec",
    "build_attention",
    "get_backend",
    "list_backends",
    "register_backend",
]
