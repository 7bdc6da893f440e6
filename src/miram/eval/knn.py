"""Weighted k-nearest-neighbour classification of frozen features (Wu et al., CVPR 2018), the usual
training-free check of a self-supervised encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from miram.eval.metrics import Task


@torch.no_grad()
def knn_probs(
    train_features: Tensor,
    train_target: Tensor,
    features: Tensor,
    task: Task,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> Tensor:
    """Class probabilities from the ``k`` most cosine-similar training samples, weighted by ``exp(s / T)``.

    Args:
        train_features: ``(Nt, D)``.
        train_target: ``(Nt,)`` class indices or ``(Nt, K)`` multi-hot.
        features: ``(N, D)`` queries.
        task: binary | multiclass | multilabel.
        num_classes: K.
        k: neighbours.
        temperature: similarity temperature.

    Returns:
        ``(N,)`` positive-class probabilities (binary) or ``(N, K)``.
    """
    a = F.normalize(train_features.float(), dim=1)
    b = F.normalize(features.float(), dim=1)
    sims, idx = (b @ a.t()).topk(min(k, a.shape[0]), dim=1)  # (N, k)
    weights = (sims / temperature).exp()
    if task == "multilabel":
        votes = train_target.float()[idx]  # (N, k, K)
    else:
        votes = F.one_hot(train_target.long()[idx], num_classes).float()
    probs = (weights[..., None] * votes).sum(1) / weights.sum(1, keepdim=True)
    return probs[:, 1] if task == "binary" else probs
