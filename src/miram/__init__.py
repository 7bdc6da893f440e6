"""miram: multi-scale masked autoencoders with hybrid attention for mammography.

Implements MIRAM (Vo et al., arXiv 2503.07157), with MAE (He et al., arXiv 2111.06377) as its one-scale
case and MoCo-v3 (Chen et al., arXiv 2104.02057) as a contrastive baseline.

The public API (see :mod:`miram.api`): :func:`build_model`, :func:`build_attention`, :func:`list_backends`,
:func:`load_encoder`, :func:`load_module`, :func:`encode` and :func:`export`. They are loaded on first use,
so ``import miram`` (and the ``miram`` command's start-up) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_attention",
    "build_model",
    "encode",
    "export",
    "list_backends",
    "load_encoder",
    "load_module",
]

if TYPE_CHECKING:  # the names as the type checker sees them; at run time __getattr__ loads them
    from miram.api import (
        build_attention,
        build_model,
        encode,
        export,
        list_backends,
        load_encoder,
        load_module,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("miram.api"), name)
    raise AttributeError(f"module 'miram' has no attribute {name!r}")
