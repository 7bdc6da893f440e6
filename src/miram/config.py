"""Typed config dataclasses <-> plain dicts (for checkpoints, summaries and YAML)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Recursively turn dataclasses (and tuples) into plain JSON/YAML-friendly values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)  # type: ignore[arg-type]
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        items = [_convert(args[0] if args else Any, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)  # type: ignore[arg-type]
    return value


def from_dict(cls: type[T], data: dict[str, Any] | T) -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys are an error naming them."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"cannot build {cls.__name__} from {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})
