"""BatchNorm over the global batch of every process, on any device (CPU/gloo included).

``torch.nn.SyncBatchNorm`` refuses CPU tensors, so MoCo-v3 under CPU DDP (tests, small clusters) would
normalise each rank's shard on its own and compute something else than one process with the whole batch.
This BatchNorm1d all-reduces its statistics (and, in backward, their gradients)
in training mode under a process group, and is a plain BatchNorm1d otherwise (one process, eval mode).
State-dict keys are those of BatchNorm1d; Lightning's ``sync_batchnorm=True`` may still swap it for
``SyncBatchNorm`` on GPUs (the same computation).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed
from torch import Tensor, nn

from miram import dist


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the backward sums the gradients too, so each rank gets the derivative of every
    rank's loss with respect to its own input (what DDP's gradient average then needs)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


def _all_reduce_sum(x: Tensor) -> Tensor:
    out: Tensor = _AllReduceSum.apply(x)
    return out


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics cover the batch of every process. Input ``(B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.world_size() > 1):
            return super().forward(x)
        xf = x.float()
        # Two passes (mean, then squared deviations): no cancellation, unlike E[x^2] - E[x]^2.
        count = _all_reduce_sum(xf.new_tensor([float(x.shape[0])]))
        mean = _all_reduce_sum(xf.sum(0)) / count
        var = _all_reduce_sum((xf - mean).pow(2).sum(0)) / count  # biased: used to normalise
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative average, as BatchNorm1d
                    m = 1.0 / float(self.num_batches_tracked) if self.num_batches_tracked is not None else 0.0
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)
