"""InfoNCE with cross-device negatives, as used by MoCo-v3.

Chen, Xie & He, *An Empirical Study of Training Self-Supervised Vision Transformers* (arXiv 2104.02057),
Algorithm 1: queries of one view are matched against the momentum keys of the other view; the other keys
of the (global) batch are the negatives; the cross-entropy is scaled by ``2 * tau``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from miram import dist


def info_nce(q: Tensor, k: Tensor, temperature: float = 0.2, gather_negatives: bool = True) -> Tensor:
    """Contrastive loss of queries against keys; the positive of ``q[i]`` is ``k[i]``.

    Args:
        q: queries ``(B, D)`` (gradient flows).
        k: keys ``(B, D)`` (treated as constants).
        temperature: softmax temperature tau.
        gather_negatives: use the keys of every process as negatives (no-op at world size 1).

    Returns:
        Scalar ``2 * tau * CE(q k^T / tau, positives)`` in fp32.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    offset = 0
    if gather_negatives:
        # this process's positives sit at rows [rank * B, (rank + 1) * B) of the gathered keys
        offset = dist.rank() * k.shape[0]
        k = dist.gather(k)
    logits = q @ k.t() / temperature  # (B, world * B)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return 2 * temperature * F.cross_entropy(logits, labels)


def symmetric_info_nce(
    q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, temperature: float = 0.2, gather_negatives: bool = True
) -> tuple[Tensor, Tensor]:
    """The two halves of MoCo-v3's symmetric loss: ``(ctr(q1, k2), ctr(q2, k1))``; their sum is the loss."""
    return (
        info_nce(q1, k2, temperature, gather_negatives),
        info_nce(q2, k1, temperature, gather_negatives),
    )
