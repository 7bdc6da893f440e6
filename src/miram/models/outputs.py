"""Result containers shared by all pre-training methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LossOutput:
    """What every pre-training model's ``forward`` returns.

    Attributes:
        loss: the scalar to minimise.
        terms: named scalar parts of the loss, logged as ``{stage}/{name}``.
        extras: tensors for visualisation and callbacks (masks, predictions, targets).
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)
