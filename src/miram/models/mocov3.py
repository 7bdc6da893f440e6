"""MoCo-v3 with a ViT encoder (Chen, Xie & He, arXiv 2104.02057), written from the paper.

A query branch (encoder -> 3-layer projector -> 2-layer predictor) and a momentum branch (encoder ->
projector, an exponential moving average of the query branch) see two augmented views of each image;
the loss is the symmetric InfoNCE of queries against the other view's keys. The momentum update is a
method called by the training loop after each optimiser step, never inside ``forward``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from miram.layers.global_batchnorm import GlobalBatchNorm1d
from miram.losses.contrastive import symmetric_info_nce
from miram.models.outputs import LossOutput
from miram.models.vit import ViTConfig, ViTEncoder


@dataclass
class ViewsConfig:
    """Two-view augmentation for grayscale crops (no colour operations).

    As in official MoCo-v3, each view is one random resized crop of the original image: with
    ``data.views: 2`` the data workers cut both crops from the native pixels (``data.scale`` must equal
    ``crop_scale``; ``LitMoCoV3`` checks it), and the rest (flips, intensity, blur) runs batched on the
    device. Given single images ``(B, C, H, W)`` instead (validation, direct calls), both crops are cut
    on the device from those images.

    Attributes:
        crop_scale: random-resized-crop area range (official MoCo-v3: ``--crop-min 0.08``).
        crop_ratio: random-resized-crop aspect range.
        hflip: horizontal flip probability.
        vflip: vertical flip probability (mammograms have no canonical up/down within a lesion crop).
        brightness: multiplicative brightness range (applied with probability ``intensity_p``).
        contrast: contrast factor range (applied with probability ``intensity_p``).
        intensity_p: probability of the brightness and contrast changes.
        blur_p: gaussian blur probability of view 1 and view 2 (asymmetric, as in BYOL / MoCo-v3).
        blur_sigma: blur sigma range, in pixels of the encoder input.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    intensity_p: float = 0.8
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass
class MoCoV3Config:
    """MoCo-v3 hyperparameters (paper defaults for ViT).

    Attributes:
        encoder: the ViT encoder (cls pooling in the paper).
        proj_hidden_dim: hidden width of the 3-layer projector.
        pred_hidden_dim: hidden width of the 2-layer predictor.
        out_dim: output width of projector and predictor.
        temperature: InfoNCE temperature tau (0.2 for ViT).
        base_momentum: momentum at step 0; it follows a half-cycle cosine to 1 at the last step.
        stop_grad_patch_embed: keep the randomly initialised patch projection frozen (the paper's
            stabiliser for ViT).
        gather_negatives: use keys from every device as negatives under DDP (no-op on one device).
        views: the two-view augmentation.
    """

    encoder: ViTConfig = field(default_factory=ViTConfig)
    proj_hidden_dim: int = 4096
    pred_hidden_dim: int = 4096
    out_dim: int = 256
    temperature: float = 0.2
    base_momentum: float = 0.99
    stop_grad_patch_embed: bool = True
    gather_negatives: bool = True
    views: ViewsConfig = field(default_factory=ViewsConfig)


def mlp_bn(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """Linear (no bias) -> BN -> ReLU, repeated; the last layer has no ReLU and a BN without affine if
    ``last_bn`` (the projector's output BN in the paper). The BNs see the global batch under DDP, on any
    device (:class:`GlobalBatchNorm1d`), as SyncBN does in the paper.

    Shapes: ``(B, in_dim)`` -> ``(B, out_dim)``.
    """
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        last = i == num_layers - 1
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if not last:
            layers += [GlobalBatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(GlobalBatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """Momentum at ``step``: ``1 - (1 - base) * (1 + cos(pi * step / total)) / 2`` (base -> 1)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


class TwoViews(nn.Module):
    """Two independently augmented views of the same size, from two crops ``(B, 2, C, H, W)`` cut by the
    data workers, or from images ``(B, C, H, W)`` (cropped here, twice)."""

    def __init__(self, config: ViewsConfig, size: tuple[int, int]) -> None:
        super().__init__()
        c = config

        def pipeline(blur_p: float) -> K.AugmentationSequential:
            # kernel ~ 4 sigma_max wide, odd, and no larger than the image
            kernel = min(2 * int(2 * c.blur_sigma[1]) + 1, 2 * (min(size) // 2) - 1)
            return K.AugmentationSequential(
                K.RandomHorizontalFlip(p=c.hflip),
                K.RandomVerticalFlip(p=c.vflip),
                # inputs are standardised, not in [0, 1]: never clip
                K.RandomBrightness(c.brightness, clip_output=False, p=c.intensity_p),
                K.RandomContrast(c.contrast, clip_output=False, p=c.intensity_p),
                K.RandomGaussianBlur(kernel, c.blur_sigma, p=blur_p),
            )

        self.crop = K.RandomResizedCrop(size, scale=c.crop_scale, ratio=c.crop_ratio)
        self.view1 = pipeline(c.blur_p[0])
        self.view2 = pipeline(c.blur_p[1])

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 2, C, H, W)`` crops or ``(B, C, H, W)`` images -> two views ``(B, C, H, W)``."""
        if images.ndim == 5:  # already one crop each of the original (data.views: 2): never crop again
            if images.shape[1] != 2:
                raise ValueError(f"MoCo-v3 takes 2 views per image, got {images.shape[1]}")
            first, second = images[:, 0], images[:, 1]
        else:
            first, second = self.crop(images), self.crop(images)  # two independent draws
        return self.view1(first), self.view2(second)


class MoCoV3(nn.Module):
    """MoCo-v3. Encoder keys follow official MAE / timm names (``encoder.`` prefix here).

    Args:
        config: the model.
    """

    def __init__(self, config: MoCoV3Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = ViTEncoder(c.encoder)
        if c.stop_grad_patch_embed:
            self.encoder.patch_embed.requires_grad_(False)
        d = c.encoder.embed_dim
        self.projector = mlp_bn(3, d, c.proj_hidden_dim, c.out_dim, last_bn=True)
        self.predictor = mlp_bn(2, c.out_dim, c.pred_hidden_dim, c.out_dim, last_bn=False)
        # the momentum branch starts as an exact copy and never receives gradients
        self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        h, w = c.encoder.img_size
        self.views = TwoViews(c.views, (h, w))

    def online_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(momentum module, online module) pairs that the momentum update ties together."""
        return [(self.momentum_encoder, self.encoder), (self.momentum_projector, self.projector)]

    @torch.no_grad()
    def update_momentum(self, momentum: float) -> None:
        """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every momentum parameter."""
        for target, online in self.online_pairs():
            tp: list[Tensor] = list(target.parameters())
            op = [p.detach() for p in online.parameters()]
            torch._foreach_mul_(tp, momentum)
            torch._foreach_add_(tp, op, alpha=1.0 - momentum)

    def query(self, images: Tensor) -> Tensor:
        """Predictor output ``(B, out_dim)`` of the online branch."""
        return self.predictor(self.projector(self.encoder(images)))

    @torch.no_grad()
    def key(self, images: Tensor) -> Tensor:
        """Projector output ``(B, out_dim)`` of the momentum branch."""
        return self.momentum_projector(self.momentum_encoder(images))

    def forward(self, images: Tensor, views: tuple[Tensor, Tensor] | None = None) -> LossOutput:
        """Make two views, and score queries of each against keys of the other.

        Args:
            images: two crops per image ``(B, 2, C, Hi, Wi)`` from the data workers (training), or images
                ``(B, C, Hi, Wi)`` to crop twice here; at the encoder input size.
            views: given views (tests, visualisation); augmented from ``images`` when None.

        Returns:
            LossOutput with ``loss``, ``terms`` ``loss_12``, ``loss_21`` and ``extras`` ``view1``, ``view2``.
        """
        v1, v2 = views if views is not None else self.views(images)
        q1, q2 = self.query(v1), self.query(v2)
        k1, k2 = self.key(v1), self.key(v2)
        c = self.config
        l12, l21 = symmetric_info_nce(q1, q2, k1, k2, c.temperature, c.gather_negatives)
        return LossOutput(
            loss=l12 + l21,
            terms={"loss_12": l12.detach(), "loss_21": l21.detach()},
            extras={"view1": v1.detach(), "view2": v2.detach()},
        )
