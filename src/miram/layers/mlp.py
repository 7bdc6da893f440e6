"""Transformer feed-forward: Linear -> GELU -> Linear (timm names ``fc1``, ``fc2``)."""

from __future__ import annotations

from torch import Tensor, nn


class Mlp(nn.Module):
    """Two-layer GELU MLP on ``(..., D)``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
