"""Masked autoencoder over a list of scales: MAE is one scale, MIRAM two or more.

MIRAM (Vo et al., arXiv 2503.07157): the encoder sees the visible patches of the input; a shared
embedding and mask token build the full token grid; each scale's decoder upsamples that grid (token
interpolation) and reconstructs the image at its own resolution. Targets are real pixels of the
high-resolution crop (``hr_target: native``) or, as in the authors' code, the input upsampled by nearest
neighbour (``hr_target: nearest``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miram.attention import get_backend
from miram.losses.reconstruction import reconstruction_loss
from miram.models.decoder import ScaleConfig, ScaleDecoder
from miram.models.masking import Masking, random_masking, unshuffle_with_mask_tokens
from miram.models.ops import area_downsample, patchify, upsample_mask
from miram.models.outputs import LossOutput
from miram.models.vit import ViTConfig, ViTEncoder, init_weights


@dataclass
class MaskedAutoencoderConfig:
    """A masked autoencoder: encoder, scales, masking and targets.

    Attributes:
        encoder: the ViT encoder; its ``img_size`` is the input scale.
        scales: one entry per reconstruction scale; factor 1 is the input scale.
        mask_ratio: fraction of patches hidden from the encoder.
        norm_pix_loss: normalise each target patch by its mean and variance.
        hr_target: ``native`` takes targets from the real high-resolution pixels; ``nearest`` upsamples
            the input (the authors' code).
        share_decoder_embed: one encoder->decoder embedding and mask token for all scales (the paper);
            otherwise one per scale.
    """

    encoder: ViTConfig = field(default_factory=ViTConfig)
    scales: list[ScaleConfig] = field(default_factory=lambda: [ScaleConfig()])
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    hr_target: Literal["native", "nearest"] = "native"
    share_decoder_embed: bool = True

    @property
    def max_factor(self) -> int:
        """Resolution factor of the finest scale: the data must deliver ``img_size * max_factor``."""
        return max(s.factor for s in self.scales)

    @property
    def data_size(self) -> tuple[int, int]:
        """(H, W) of the images the model expects from the data layer."""
        h, w = self.encoder.img_size
        return h * self.max_factor, w * self.max_factor


def _check(config: MaskedAutoencoderConfig) -> None:
    if not config.scales:
        raise ValueError("a masked autoencoder needs at least one scale")
    factors = [s.factor for s in config.scales]
    if len(set(factors)) != len(factors) or any(f < 1 for f in factors):
        raise ValueError(f"scale factors must be distinct integers >= 1, got {factors}")
    bad = [f for f in factors if config.max_factor % f]
    if bad:
        raise ValueError(f"scale factors {bad} do not divide the largest factor {config.max_factor}")
    if config.share_decoder_embed and len({s.embed_dim for s in config.scales}) > 1:
        raise ValueError("share_decoder_embed needs the same embed_dim at every scale")
    backend = get_backend(config.encoder.attention.name)
    if backend.position_dependent or backend.needs_fixed_length:
        # the encoder sees the visible tokens in shuffled order (MAE's ids_keep): an order-dependent kernel
        # would mix tokens by their random slot, not by their place in the image
        raise ValueError(
            f"encoder attention '{config.encoder.attention.name}' is tied to token positions (its output "
            "depends on token order), but a masked autoencoder encodes a random, shuffled subset of tokens; "
            "use it in a decoder instead"
        )


class MaskedAutoencoder(nn.Module):
    """MAE / MIRAM. Encoder keys follow official MAE and timm (``encoder.`` prefix here).

    Args:
        config: the model.
    """

    def __init__(self, config: MaskedAutoencoderConfig) -> None:
        super().__init__()
        _check(config)
        self.config = config
        self.encoder = ViTEncoder(config.encoder)
        enc = config.encoder
        n_embed = 1 if config.share_decoder_embed else len(config.scales)
        self.decoder_embed = nn.ModuleList(
            nn.Linear(enc.embed_dim, s.embed_dim) for s in config.scales[:n_embed]
        )
        self.mask_token = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, s.embed_dim)) for s in config.scales[:n_embed]
        )
        self.decoders = nn.ModuleList(
            ScaleDecoder(s, self.encoder.grid_size, enc.patch_size, enc.in_chans) for s in config.scales
        )
        self.decoder_embed.apply(init_weights)
        self.decoders.apply(init_weights)
        for token in self.mask_token:
            nn.init.normal_(token, std=0.02)

    def random_masking(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Masking:
        """A fresh per-sample mask over the encoder grid."""
        return random_masking(
            batch_size, self.encoder.num_patches, self.config.mask_ratio, device=device, generator=generator
        )

    def targets(self, images: Tensor, inputs: Tensor, factor: int) -> Tensor:
        """Target image of the scale ``factor`` ``(B, C, Hi*f, Wi*f)``."""
        if self.config.hr_target == "nearest":
            return inputs if factor == 1 else F.interpolate(inputs, scale_factor=factor, mode="nearest")
        return area_downsample(images, self.config.max_factor // factor)

    def forward(self, images: Tensor, masking: Masking | None = None) -> LossOutput:
        """Mask, encode, decode at every scale, and score each reconstruction.

        Args:
            images: crops at the finest scale ``(B, C, Hi*F, Wi*F)``, F = largest factor; the encoder input is
                their F x F area average.
            masking: a given mask (visualisation, tests); a random one when None.

        Returns:
            LossOutput with ``loss``, ``terms`` ``loss_x{f}`` per scale, and ``extras`` ``mask`` ``(B, L)``,
            ``pred_x{f}`` and ``target_x{f}`` patches ``(B, L*f*f, p*p*C)`` (targets not normalised).
        """
        if tuple(images.shape[-2:]) != self.config.data_size:
            raise ValueError(
                f"expected images of size {self.config.data_size}, got {tuple(images.shape[-2:])}"
            )
        p = self.config.encoder.patch_size
        inputs = area_downsample(images, self.config.max_factor)
        m = masking if masking is not None else self.random_masking(images.shape[0], images.device)
        latent = self.encoder.forward_features(inputs, m.ids_keep)  # (B, 1 + n, De)

        shared = [self._embed(latent, i, m) for i in range(len(self.decoder_embed))]
        total = images.new_zeros((), dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {"mask": m.mask}
        for i, (scale, decoder) in enumerate(zip(self.config.scales, self.decoders)):
            cls, grid = shared[0 if self.config.share_decoder_embed else i]
            pred = decoder(cls, grid)  # (B, L f^2, p*p*C)
            target = patchify(self.targets(images, inputs, scale.factor), p)
            mask = upsample_mask(m.mask, self.encoder.grid_size, scale.factor)
            loss = reconstruction_loss(pred, target, mask, scale.loss_region, self.config.norm_pix_loss)
            terms[f"loss_x{scale.factor}"] = loss.detach()
            extras[f"pred_x{scale.factor}"] = pred.detach()
            extras[f"target_x{scale.factor}"] = target.detach()
            total = total + scale.loss_weight * loss
        return LossOutput(total, terms, extras)

    def _embed(self, latent: Tensor, index: int, m: Masking) -> tuple[Tensor, Tensor]:
        """Encoder tokens -> decoder cls ``(B, 1, Dd)`` and the full raster grid ``(B, L, Dd)``."""
        e = self.decoder_embed[index](latent)
        grid = unshuffle_with_mask_tokens(e[:, 1:], self.mask_token[index], m.ids_restore)
        return e[:, :1], grid
