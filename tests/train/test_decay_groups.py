"""Weight decay of the pre-training optimisers, by parameter name, as ``configure_optimizers`` builds them.

docs/decisions.md: pre-training follows official MAE (``optim_factory.add_weight_decay`` without a skip
list), so only biases and 1-D parameters (norms) are exempt; the cls and mask tokens are decayed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from miram.models.mocov3 import MoCoV3Config
from miram.models.vit import ViTConfig
from miram.train.lit_mocov3 import LitMoCoV3
from miram.train.lit_pretrain import LitMaskedAutoencoder, LitPretrainBase
from miram.train.optim import OptimConfig, param_groups
from tests.models.conftest import tiny_config


def _groups_by_name(module: LitPretrainBase) -> dict[float, set[str]]:
    """``{weight_decay: parameter names}`` of the optimiser ``configure_optimizers`` returns."""
    trainer: Any = SimpleNamespace(
        estimated_stepping_batches=10,
        max_epochs=2,
        accumulate_grad_batches=1,
        world_size=1,
        datamodule=SimpleNamespace(batch_size=4),
        is_global_zero=False,  # LightningModule.print stays silent
    )
    module._trainer = trainer
    opt = module.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in module.model.named_parameters()}
    out: dict[float, set[str]] = {}
    for group in opt.param_groups:
        out.setdefault(group["weight_decay"], set()).update(names[id(p)] for p in group["params"])
    return out


def test_masked_autoencoder_decays_both_tokens_and_no_norm_or_bias() -> None:
    lit = LitMaskedAutoencoder(tiny_config((1, 2), share_decoder_embed=False), OptimConfig(weight_decay=0.05))
    groups = _groups_by_name(lit)
    assert set(groups) == {0.05, 0.0}
    decayed, exempt = groups[0.05], groups[0.0]
    # the tokens, by name: one cls token, one mask token per scale (a ParameterList: ``mask_token.<i>``)
    assert {"encoder.cls_token", "mask_token.0", "mask_token.1"} <= decayed
    assert "encoder.patch_embed.proj.weight" in decayed and "encoder.blocks.0.attn.qkv.weight" in decayed
    # exempt: exactly the biases and the 1-D (norm) parameters
    expected_exempt = {n for n, p in lit.model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")}
    assert exempt == expected_exempt
    assert {"encoder.norm.weight", "encoder.norm.bias", "encoder.blocks.0.attn.qkv.bias"} <= exempt
    assert all(n.endswith((".bias", ".weight")) for n in exempt)
    # every trainable parameter is in exactly one group; the position tables are buffers, never optimised
    trainable = {n for n, p in lit.model.named_parameters() if p.requires_grad}
    assert decayed | exempt == trainable and not decayed & exempt
    assert "pos_embed" not in {n.rsplit(".", 1)[-1] for n in trainable}


def test_mocov3_decays_the_cls_token_and_skips_the_frozen_patch_projection() -> None:
    encoder = ViTConfig(img_size=(32, 32), patch_size=8, embed_dim=32, depth=1, num_heads=2)
    lit = LitMoCoV3(MoCoV3Config(encoder=encoder, proj_hidden_dim=16, pred_hidden_dim=16, out_dim=8))
    groups = _groups_by_name(lit)
    assert "encoder.cls_token" in groups[lit.optim.weight_decay]
    everything = set().union(*groups.values())
    assert not any(n.startswith(("momentum_", "encoder.patch_embed")) for n in everything)


def test_a_skip_entry_matches_a_whole_name_component() -> None:
    # ParameterList entries are named ``<name>.<index>``: a skip entry must still match them
    module = torch.nn.Module()
    module.mask_token = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, 1, 4))])
    module.my_mask_token_proj = torch.nn.Parameter(torch.zeros(4, 4))  # contains the word, is not it
    decay, exempt = param_groups(module, 0.05, skip={"mask_token"})
    assert [p.shape for p in exempt["params"]] == [torch.Size([1, 1, 4])]  # type: ignore[attr-defined]
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]  # type: ignore[attr-defined]
