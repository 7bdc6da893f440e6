"""Training that learns: on a fixed batch, each pre-training method lowers its loss by a stated factor in
30 AdamW steps, and a linear probe separates separable features.

Each threshold is half of the measured reduction: ``first / last >= 1 + (measured - 1) / 2``, where
``measured`` is the factor seen on CPU (torch 2.13, one thread). Two windows are checked: steps 0 -> 30,
which includes fitting the output scale, and 10 -> 30, which is learning of the images themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from miram.attention import AttentionSpec
from miram.eval.metrics import classification_metrics
from miram.eval.probe import LitProbe
from miram.models.decoder import ScaleConfig
from miram.models.masked_autoencoder import MaskedAutoencoder, MaskedAutoencoderConfig
from miram.models.mocov3 import MoCoV3, MoCoV3Config
from miram.models.vit import ViTConfig

ENCODER = ViTConfig(img_size=(32, 16), patch_size=4, embed_dim=32, depth=2, num_heads=2)
STEPS = 30


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # models this small run fastest on one thread; more threads only contend on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(n, 1, h, w)`` images of three Gaussian blobs each: smooth, so hidden patches can be predicted."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.linspace(0, 1, h)[:, None], torch.linspace(0, 1, w)[None]
    out = torch.zeros(n, 1, h, w)
    for i in range(n):
        for _ in range(3):
            cy, cx, s = torch.rand(3, generator=g).tolist()
            out[i, 0] += torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.1 * s))
    return out


def fit(model: torch.nn.Module, loss_fn, after_step=lambda: None) -> list[float]:  # type: ignore[no-untyped-def]
    """``STEPS + 1`` losses of AdamW (lr 2e-3, no decay) on one fixed batch."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(STEPS + 1):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step()
        losses.append(float(loss.detach()))
    return losses


def assert_learns(losses: list[float], measured: tuple[float, float]) -> None:
    overall, late = losses[0] / losses[STEPS], losses[10] / losses[STEPS]
    assert overall >= 1 + (measured[0] - 1) / 2, (overall, losses)
    assert late >= 1 + (measured[1] - 1) / 2, (late, losses)


# backend of the x2 decoder (None = MAE) -> measured (loss 0 / loss 30, loss 10 / loss 30)
MEASURED: dict[str | None, tuple[float, float]] = {
    None: (3.55, 1.14),
    "sdpa": (2.97, 1.24),
    "nystrom": (2.81, 1.14),
    "linformer": (2.88, 1.22),
    "performer": (2.75, 1.22),
}
OPTIONS = {
    "sdpa": {},
    "nystrom": {"num_landmarks": 8},
    "linformer": {"proj_len": 16},
    "performer": {"num_features": 16},
}


@pytest.mark.parametrize("backend", list(MEASURED), ids=lambda b: f"miram-{b}" if b else "mae")
def test_masked_autoencoder_lowers_its_loss_on_a_fixed_batch(backend: str | None) -> None:
    scales = [ScaleConfig(factor=1, depth=1, embed_dim=32, num_heads=2, loss_region="masked")]
    if backend is not None:
        spec = AttentionSpec(backend, OPTIONS[backend])
        scales.append(
            ScaleConfig(factor=2, depth=1, embed_dim=32, num_heads=2, loss_region="all", attention=spec)
        )
    model = MaskedAutoencoder(MaskedAutoencoderConfig(encoder=ENCODER, scales=scales))
    f = model.config.max_factor
    images = blobs(8, 32 * f, 16 * f)
    masking = model.random_masking(8, torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert_learns(fit(model, lambda: model(images, masking=masking).loss), MEASURED[backend])


def test_mocov3_lowers_its_loss_on_a_fixed_pair_of_views() -> None:
    config = MoCoV3Config(encoder=ENCODER, proj_hidden_dim=64, pred_hidden_dim=64, out_dim=32)
    model = MoCoV3(config)
    images = blobs(16, 32, 16)
    g = torch.Generator().manual_seed(1)
    views = (images + 0.05 * torch.randn(images.shape, generator=g), images.flip(-1))
    losses = fit(model, lambda: model(images, views=views).loss, lambda: model.update_momentum(0.9))
    assert_learns(losses, (8.56, 2.46))


def test_linear_probe_separates_separable_features() -> None:
    # two classes 6 sd apart along one direction of a 32-D space: Bayes AUROC = Phi(6 / sqrt 2) > 0.9999
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    target = torch.arange(256) % 2
    features = torch.randn(256, 32, generator=g) + 6 * target[:, None] * direction
    train, test = slice(0, 192), slice(192, 256)
    probe = LitProbe(task="binary", num_classes=2, vit=ENCODER.__dict__ | {"img_size": [32, 16]})
    opt = torch.optim.Adam(probe.head.parameters(), lr=1e-2)
    probe.train()
    for _ in range(100):
        loss = probe.loss(probe.logits(features[train]), target[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.eval()
    with torch.no_grad():
        probs = probe.probs(probe.logits(features[test]))
    assert classification_metrics(probs, target[test], "binary")["auroc"] >= 0.99
