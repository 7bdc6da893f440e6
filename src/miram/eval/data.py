"""The labelled data of an evaluation: cache records of a label column, as image batches."""

from __future__ import annotations

import torch
from torch import Tensor

from miram.data.datamodule import CacheDataset, MammoDataModule


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
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            label=label,
            pretrain_only=False,
            train_splits=train_splits,
            scale=scale,
            hflip=hflip,
            vflip=vflip,
            limit_train=limit_train,
        )

    def targets(self, split: str | list[str]) -> Tensor:
        """Targets of ``split`` in loader order ``(N,)`` or ``(N, K)`` (metadata only, no pixels)."""
        ds = self.part(split)
        return torch.stack([ds.target(i) for i in ds.indices])

    def train_targets(self) -> Tensor:
        """Targets of the training records (for class weights)."""
        return self.targets(self.train_splits)

    def patient_ids(self, split: str) -> list[str]:
        """Patient id of every record of ``split``, in (unshuffled) loader order."""
        ds = self.part(split)
        return [self.cache.records[i].patient_id for i in ds.indices]

    def part(self, split: str | list[str]) -> CacheDataset:
        """The evaluation dataset of ``split`` of the (single) cache."""
        ds = self.dataset(split, train=False)
        assert isinstance(ds, CacheDataset)
        return ds
