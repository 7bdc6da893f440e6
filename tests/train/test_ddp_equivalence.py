"""Distributed equals single-process (issue 11, item 4), slow tier: 2 gloo processes on CPU.

One AdamW step of MAE, MIRAM and MoCo-v3 under DDP with a global batch of 8 (4 per rank) against one
process with the 8 samples, the same masks and the same views. MoCo-v3's BatchNorms see the global
batch (GlobalBatchNorm1d: torch's SyncBatchNorm refuses CPU tensors) and its negatives are gathered.

Tolerance. DDP only reorders sums (per-rank partial sums, then the all-reduce), so the loss and the
gradients differ by fp32 rounding: measured 0 (MAE, MIRAM) to ~1e-7 relative on the loss and < 1e-6 of
the largest gradient elementwise; asserted at 1e-5 and 1e-5. Adam's first step moves each weight by
lr * g / (|g| + eps) (eps = 1e-8): for |g| well above eps a relative gradient error e moves the weight by
about lr * e, asserted at lr * 1e-3 where |g| >= 1e-6 (measured < 1e-3 lr). Where the true gradient is
zero (the key bias of every attention layer: softmax ignores a per-query constant; MoCo-v3's encoder
norm bias, which the projector's BatchNorm cancels) the gradient is rounding noise of 1e-11 to 1e-8, and
its sign, hence the direction of the update, is set by the summation order: measured up to 3.5e-5
(MAE), 1.8e-5 (MIRAM) and 1.6e-3 (MoCo-v3, lr 1e-3) there. Only Adam's bound holds: two updates of at
most lr each, |dw| <= 2 lr, which is asserted.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from miram.models.masking import random_masking
from miram.train.lit_mocov3 import LitMoCoV3
from miram.train.lit_pretrain import LitMaskedAutoencoder, LitPretrainBase
from miram.train.optim import param_groups

pytestmark = pytest.mark.slow

ENCODER = {"img_size": [32, 32], "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
SCALE1 = {"factor": 1, "depth": 1, "embed_dim": 16, "num_heads": 2, "loss_region": "masked"}
SCALE2 = {
    "factor": 2,
    "depth": 1,
    "embed_dim": 16,
    "num_heads": 2,
    "loss_region": "all",
    "attention": {"name": "nystrom", "options": {"num_landmarks": 8}},
}
CASES: dict[str, Any] = {
    "mae": lambda: LitMaskedAutoencoder(model={"encoder": ENCODER, "scales": [SCALE1]}),
    "miram": lambda: LitMaskedAutoencoder(model={"encoder": ENCODER, "scales": [SCALE1, SCALE2]}),
    "mocov3": lambda: LitMoCoV3(
        model={"encoder": ENCODER, "proj_hidden_dim": 64, "pred_hidden_dim": 64, "out_dim": 16}
    ),
}
BATCH, LR = 8, 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(case: str) -> LitPretrainBase:
    torch.manual_seed(0)  # the same initial weights on every rank and in the reference
    module: LitPretrainBase = CASES[case]()
    return module


def global_inputs(case: str, module: LitPretrainBase) -> dict[str, torch.Tensor]:
    """The global batch and its masks or views, drawn identically everywhere."""
    g = torch.Generator().manual_seed(1)
    if case == "mocov3":
        return {
            "v1": torch.randn(BATCH, 1, 32, 32, generator=g),
            "v2": torch.randn(BATCH, 1, 32, 32, generator=g),
        }
    assert isinstance(module, LitMaskedAutoencoder)
    size = module.config.data_size
    images = torch.randn(BATCH, 1, *size, generator=g)
    return {"images": images, "noise": torch.rand(BATCH, module.model.encoder.num_patches, generator=g)}


def one_step(
    case: str, module: LitPretrainBase, model: torch.nn.Module, inputs: dict[str, torch.Tensor], sl: slice
) -> tuple[float, dict[str, torch.Tensor]]:
    """Forward on the samples ``sl``, backward, one AdamW step; returns the loss and the gradients."""
    opt = torch.optim.AdamW(param_groups(module.model, 0.05), lr=LR, betas=(0.9, 0.95))
    if case == "mocov3":
        v1, v2 = inputs["v1"][sl], inputs["v2"][sl]
        out = model(v1, views=(v1, v2))
    else:
        assert isinstance(module, LitMaskedAutoencoder)
        images, noise = inputs["images"][sl], inputs["noise"][sl]
        n = module.model.encoder.num_patches
        masking = random_masking(images.shape[0], n, module.config.mask_ratio, noise=noise)
        out = model(images, masking=masking)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    opt.step()
    return float(out.loss.detach()), grads


def _worker(rank: int, port: int, case: str, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        module = build(case)
        inputs = global_inputs(case, module)
        ddp = DistributedDataParallel(module.model)
        half = BATCH // 2
        loss, grads = one_step(case, module, ddp, inputs, slice(rank * half, (rank + 1) * half))
        mean_loss = torch.tensor(loss)
        dist.all_reduce(mean_loss)  # the global loss: the mean of the ranks' means (equal shards)
        state = {k: v.clone() for k, v in module.model.state_dict().items()}
        out[rank] = (float(mean_loss) / 2, grads, state)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", list(CASES))
def test_one_ddp_step_equals_one_process(case: str) -> None:
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), case, out), nprocs=2, join=True)
    module = build(case)
    ref_loss, ref_grads = one_step(case, module, module.model, global_inputs(case, module), slice(None))
    ref = module.model.state_dict()
    params = dict(module.model.named_parameters())
    for rank in range(2):
        loss, grads, state = out[rank]
        assert set(grads) == set(ref_grads)
        rel_loss = abs(loss - ref_loss) / abs(ref_loss)
        scale = max(float(g.abs().max()) for g in ref_grads.values())
        grad_err = max(float((grads[k] - ref_grads[k]).abs().max()) for k in ref_grads) / scale
        sure = above = 0.0  # weight errors where |g| >= 1e-6, and where the gradient is rounding noise
        for k, g in ref_grads.items():
            d = (state[k] - params[k].detach()).abs()
            big = g.abs() >= 1e-6
            sure = max(sure, float(d[big].max()) if big.any() else 0.0)
            above = max(above, float(d[~big].max()) if (~big).any() else 0.0)
        buffers = [k for k in ref if k not in params and ref[k].is_floating_point()]
        buf_err = max((float((state[k] - ref[k]).abs().max()) for k in buffers), default=0.0)
        print(
            f"{case} rank {rank}: loss rel {rel_loss:.1e}, grad {grad_err:.1e} of max, weights {sure:.1e} "
            f"(|g| >= 1e-6) / {above:.1e} (|g| < 1e-6), buffers {buf_err:.1e}; lr {LR}"
        )
        assert rel_loss < 1e-5 and grad_err < 1e-5
        assert sure < 1e-3 * LR and above <= 2 * LR * (1 + 1e-3)  # two opposite updates of at most lr
        assert buf_err < 1e-5  # BatchNorm running statistics (MoCo-v3)
    # the step moved the weights well beyond the tolerance
    start = build(case).model.state_dict()
    assert max(float((ref[k] - start[k]).abs().max()) for k in params) > 0.5 * LR
