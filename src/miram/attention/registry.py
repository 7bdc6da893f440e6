"""Name -> backend class. Filled by ``@register_backend`` when a backend's module is imported; the built-in
modules are imported on first use of the registry rather than at package import, so importing miram stays
cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from miram.attention.base import AttentionBackend, build_config

_BACKENDS: dict[str, type[AttentionBackend]] = {}
_BUILTIN = ("sdpa", "softmax", "nystrom", "linformer", "performer")

B = TypeVar("B", bound=type[AttentionBackend])


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator adding a backend under ``name``; a duplicate name is an error."""

    def wrap(cls: B) -> B:
        if name in _BACKENDS:
            raise ValueError(f"attention backend '{name}' is already registered by {_BACKENDS[name]}")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return wrap


@dataclass
class AttentionSpec:
    """Which attention backend a stack of blocks uses, and its options (the backend's config fields).

    Attributes:
        name: a registered backend: sdpa | softmax | nystrom | linformer | performer.
        options: fields of that backend's config dataclass, e.g. ``{num_landmarks: 64}``.
    """

    name: str = "sdpa"
    options: dict[str, Any] = field(default_factory=dict)


def _load_builtin_backends() -> None:
    for name in _BUILTIN:
        importlib.import_module(f"miram.attention.{name}")


def get_backend(name: str) -> type[AttentionBackend]:
    """The class registered under ``name``."""
    _load_builtin_backends()
    if name not in _BACKENDS:
        raise KeyError(f"unknown attention backend '{name}'; available: {sorted(_BACKENDS)}")
    return _BACKENDS[name]


def list_backends() -> list[str]:
    """Names of all registered backends."""
    _load_builtin_backends()
    return sorted(_BACKENDS)


def build_attention(spec: AttentionSpec | str, dim: int, num_heads: int, **kwargs: Any) -> AttentionBackend:
    """Build a backend from a spec; ``kwargs`` are the shared constructor arguments of AttentionBackend."""
    if isinstance(spec, str):
        spec = AttentionSpec(spec)
    cls = get_backend(spec.name)
    config = build_config(cls.config_cls, dict(spec.options), spec.name)
    return cls(dim, num_heads, config=config, **kwargs)
