"""Data modules for evaluation: labelled cache loaders, and frozen features computed once per split."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from miram.data.datamodule import MammoDataModule
from miram.eval.features import extract_features


class EvalDataModule(MammoDataModule):
    """A :class:`MammoDataModule` over every training record of a label (not only pre-training pools).

    Args:
        cache: cache directory.
        label: label column to predict.
        image_size: ``(H, W)`` of the encoder input.
        batch_size: per-device batch size.
        num_workers: loader processes.
        train_splits: splits used for training.
        scale: random-resized-crop area range of training crops ((1, 1) = whole crop).
        hflip: random horizontal flips (training).
        vflip: random vertical flips (training).
        limit_train: use only the first N training records.
    """

    def __init__(
        self,
        cache: str,
        label: str = "pathology",
        image_size: tuple[int, int] = (112, 112),
        batch_size: int = 64,
        num_workers: int = 2,
        train_splits: list[str] | None = None,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        vflip: bool = True,
        limit_train: int | None = None,
    ) -> None:
        super().__init__(
            cache,
            image_size,
            batch_size,
            num_workers,
            label,
            False,
            train_splits,
            scale,
            hflip,
            vflip,
            limit_train,
        )

    def targets(self, split: str | list[str]) -> Tensor:
        """Targets of ``split`` in loader order ``(N,)`` or ``(N, K)`` (metadata only, no pixels)."""
        ds = self.dataset(split, train=False)
        return torch.stack([ds.target(i) for i in ds.indices])

    def train_targets(self) -> Tensor:
        """Targets of the training records (for class weights)."""
        return self.targets(self.train_splits)

    def patient_ids(self, split: str) -> list[str]:
        """Patient id of every record of ``split``, in (unshuffled) loader order."""
        ds = self.dataset(split, train=False)
        return [self.cache.records[i].patient_id for i in ds.indices]


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
