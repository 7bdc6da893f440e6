"""Reconstruction figures per scale: input, masked input, reconstruction (visible patches pasted), target.

Under norm-pix loss the predictions are per-patch normalised; they are de-normalised with each target
patch's own mean and standard deviation before display, as in the MAE paper's figures.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from miram.checkpoints import Which, load_module, resolve_checkpoint
from miram.data.datamodule import MammoDataModule
from miram.models.masked_autoencoder import MaskedAutoencoder
from miram.models.ops import unpatchify, upsample_mask


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: Tensor, seed: int = 0) -> dict[int, dict[str, Tensor]]:
    """Per scale factor: ``input``, ``masked``, ``reconstruction``, ``target`` images ``(B, C, H, W)``.

    Args:
        model: a masked autoencoder (put in eval mode by the caller).
        images: batch at the finest scale ``(B, C, Hi*F, Wi*F)``.
        seed: seed of the displayed mask.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    m = model.random_masking(images.shape[0], torch.device("cpu"), generator=g)
    m = type(m)(*(t.to(images.device) for t in m))
    out = model(images, masking=m)
    cfg = model.config.encoder
    p, C = cfg.patch_size, cfg.in_chans
    result: dict[int, dict[str, Tensor]] = {}
    for scale in model.config.scales:
        f = scale.factor
        grid = (model.encoder.grid_size[0] * f, model.encoder.grid_size[1] * f)
        target = out.extras[f"target_x{f}"].float()
        pred = out.extras[f"pred_x{f}"].float()
        if model.config.norm_pix_loss:
            mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6) ** 0.5
            pred = pred * std + mean
        mask = upsample_mask(m.mask, model.encoder.grid_size, f)[..., None].float()
        result[f] = {
            "target": unpatchify(target, p, grid, C),
            "masked": unpatchify(target * (1 - mask), p, grid, C),
            "reconstruction": unpatchify(pred * mask + target * (1 - mask), p, grid, C),
            "prediction": unpatchify(pred, p, grid, C),
        }
    return result


def save_reconstruction_figure(
    model: MaskedAutoencoder, images: Tensor, path: str | Path, seed: int = 0, max_images: int = 4
) -> list[Path]:
    """Write one PNG per scale (rows = samples; columns = target, masked, reconstruction, prediction).

    Returns:
        The written paths, ``<path stem>_x{f}.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = images[:max_images]
    panels = reconstruct(model, images, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for f, cols in panels.items():
        names = ["target", "masked", "reconstruction", "prediction"]
        fig, axes = plt.subplots(len(images), 4, figsize=(8, 2 * len(images)), squeeze=False)
        for r in range(len(images)):
            lo, hi = cols["target"][r].min().item(), cols["target"][r].max().item()
            for c, name in enumerate(names):
                ax = axes[r][c]
                ax.imshow(cols[name][r, 0].cpu().numpy(), cmap="gray", vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name} x{f}", fontsize=9)
        fig.tight_layout()
        out = path.with_name(f"{path.stem}_x{f}.png")
        fig.savefig(out, dpi=80)
        plt.close(fig)
        written.append(out)
    return written


def reconstruct_command(
    run: str,
    cache: str,
    out: str = "reconstructions",
    split: str = "val",
    num: int = 4,
    seed: int = 0,
    run_checkpoint: Which = "last",
) -> list[str]:
    """Save per-scale reconstruction figures of a MAE/MIRAM run (``miram reconstruct``).

    Args:
        run: a MAE/MIRAM pre-training run directory or checkpoint.
        cache: prepared cache to draw images from.
        out: output directory.
        split: split to draw from.
        num: number of images.
        seed: seed of the displayed mask.
        run_checkpoint: last | best checkpoint of a run directory (last: the final pre-training epoch).

    Returns:
        Paths of the written PNG files.
    """
    module = load_module(run, run_checkpoint)
    model = getattr(module, "model", None)
    if not isinstance(model, MaskedAutoencoder):
        raise ValueError(
            f"{resolve_checkpoint(run, run_checkpoint)}: not a MAE/MIRAM checkpoint; "
            "reconstructions need the decoders"
        )
    data = MammoDataModule(cache, image_size=model.config.data_size, num_workers=0, pretrain_only=False)
    images = data.images(split, num)
    paths = save_reconstruction_figure(model.eval(), images, Path(out) / "reconstruction.png", seed, num)
    for p in paths:
        print(p)
    return [str(p) for p in paths]
