"""Attention backends behind one interface (see ``base.py``) and a registry (see ``registry.py``)."""

from __future__ import annotations

from miram.attention.base import AttentionBackend, AttentionConfig
from miram.attention.registry import (
    AttentionSpec,
    build_attention,
    get_backend,
    list_backends,
    register_backend,
)

__all__ = [
    "AttentionBackend",
    "AttentionConfig",
    "AttentionSpec",
    "build_attention",
    "get_backend",
    "list_backends",
    "register_backend",
]
