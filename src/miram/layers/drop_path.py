"""Stochastic depth (Huang et al. 2016): drop a residual branch per sample."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Zero the branch for a random subset of samples and rescale the rest by 1/keep."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
