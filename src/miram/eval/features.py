"""Frozen-encoder features, computed once per split (no augmentation) and served to probes and kNN."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from miram.eval.data import EvalDataModule


@torch.no_grad()
def extract_features(
    encoder: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Run ``encoder`` (``(B, C, H, W) -> (B, D)``) over ``batches`` in eval mode.

    Returns:
        features ``(N, D)`` (fp32, on the CPU) and the targets concatenated.
    """
    was_training = encoder.training
    encoder.eval().to(device)
    feats, targets = [], []
    for images, target in batches:
        feats.append(encoder(images.to(device)).float().cpu())
        targets.append(target)
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(targets)


class FeatureDataModule(L.LightningDataModule):
    """Features of a frozen encoder, computed once per split without augmentation, served as tensors.

    Args:
        data: the labelled image data.
        encoder: ``(B, C, H, W) -> (B, D)``, frozen.
        batch_size: samples per step of the head.
    """

    def __init__(self, data: EvalDataModule, encoder: nn.Module, batch_size: int = 256) -> None:
        super().__init__()
        self.data, self.encoder, self.batch_size = data, encoder, batch_size
        self.features: dict[str, tuple[Tensor, Tensor]] = {}

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(N, D)`` features and targets of ``train`` | ``val`` | ``test`` (computed on first use)."""
        if name not in self.features:
            split: str | list[str] = self.data.train_splits if name == "train" else name
            self.features[name] = extract_features(self.encoder, self.data.eval_loader(split))
        return self.features[name]

    def train_targets(self) -> Tensor:
        """Targets of the training features."""
        return self.split("train")[1]

    def patient_ids(self, split: str) -> list[str]:
        """Patient ids of ``split`` in feature order."""
        return self.data.patient_ids(split)

    def provenance(self) -> list[dict[str, Any]]:
        """What the features come from (the images' caches), for the probe's checkpoints."""
        return self.data.provenance()

    def _loader(self, name: str, shuffle: bool) -> DataLoader[Any]:
        x, y = self.split(name)
        # a last training batch of one sample would break the probe's BatchNorm
        drop_last = shuffle and x.shape[0] % self.batch_size == 1
        return DataLoader(
            TensorDataset(x, y), batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test", False)
