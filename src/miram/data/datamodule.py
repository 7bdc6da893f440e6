"""Dataset over a prepared cache and the Lightning DataModule used by every command.

Workers load native-resolution uint16 crops, pick the augmentation geometry on the native pixels and
resample straight to the size the model asks for (for MIRAM the finest scale, so high-resolution targets
are real pixels). They hand over uint16 batches; normalisation and flips run batched on the device after
the transfer (:meth:`MammoDataModule.on_after_batch_transfer`), where they cost next to nothing.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Iterable
from functools import partial
from typing import Any

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from miram.data.cache import Cache, CacheError
from miram.data.crops import (
    breast_region,
    center_box,
    crop_resize,
    inbreast_box,
    inbreast_cells,
    physical_size,
    random_resized_box,
    single_threaded_cv2,
)
from miram.data.mix import MixDataset, pooled_stats, shares
from miram.data.sampling import EpochSampler
from miram.seeding import Stream, derive_seed, forked_rng, run_seed, train_position


class CacheDataset(Dataset[tuple[Tensor, Tensor]]):
    """Records of a cache as uint16 crops and label targets.

    Args:
        cache: the opened cache.
        indices: record indices to serve.
        size: output ``(H, W)``.
        train: random resized crops when True, the centred full crop otherwise.
        label: label name to return as target, or None (target -1).
        scale: random-resized-crop area range.
        ratio: random-resized-crop aspect range.
        views: random resized crops drawn independently from each training record's native pixels; with
            ``views > 1`` a training image is ``(views, 1, H, W)`` (MoCo-v3's two views, each one crop of
            the original, as in official MoCo-v3, not a crop of a crop).
        crop_mm: whole films only: crops ``crop_mm`` millimetres high (and ``crop_mm * W / H`` wide) at the
            record's pixel spacing, placed uniformly where at least ``min_breast`` of the crop is breast
            (:func:`~miram.data.crops.inbreast_cells`); ``scale`` and ``ratio`` are then unused. Outside
            training the crop is drawn once per record (the same every epoch). None = the crop geometry above.
        min_breast: smallest share of a physical crop that lies on the breast mask.

    Items are ``(image (1, H, W) uint16, target)``; the target is a class index (long), a multi-hot vector
    (float) for multilabel labels, or -1 when no label is asked for. An item is asked for by position ``i``
    or, from the training sampler, by ``(epoch, i)``: a record's crop is drawn from the stream
    ``(seed, epoch, record)``, the same whichever rank or worker loads it.
    """

    def __init__(
        self,
        cache: Cache,
        indices: list[int],
        size: tuple[int, int],
        train: bool,
        label: str | None = None,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        views: int = 1,
        crop_mm: float | None = None,
        min_breast: float = 0.5,
    ) -> None:
        self.cache, self.indices, self.train, self.views = cache, indices, train, views
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.label, self.scale, self.ratio = label, scale, ratio
        self.crop_mm, self.min_breast = crop_mm, min_breast
        self.spec = cache.labels[label] if label is not None else None
        self.seed = run_seed()

    def film_size(self, index: int) -> tuple[int, int]:
        """Pixels ``(h, w)`` of a ``crop_mm`` crop of film ``index``.

        Raises:
            CacheError: the record has no pixel spacing.
        """
        assert self.crop_mm is not None
        spacing = self.cache.records[index].meta.get("spacing_mm")
        if not spacing:
            raise CacheError(
                f"{self.cache.root}: record '{self.cache.records[index].key}' has no pixel spacing; a "
                "crop_mm crop needs one (prepare the cache with --spacing_mm for films without the tags)"
            )
        return physical_size(
            (float(spacing[0]), float(spacing[1])), self.crop_mm, self.size[1] / self.size[0]
        )

    def film_cells(self, index: int) -> tuple[np.ndarray, int]:
        """Where a ``crop_mm`` crop of film ``index`` may start (:func:`inbreast_cells`) and the stride."""
        mask, stride = self.cache.mask(index)
        shape = self.cache.image(index).shape
        return inbreast_cells(mask, stride, shape, self.film_size(index), self.min_breast), stride

    def keep_fitting(self) -> int:
        """Keep only the films that can hold a ``crop_mm`` crop of ``min_breast`` breast; returns how many
        were left out."""
        fits = [i for i in self.indices if self.film_cells(i)[0].any()]
        dropped, self.indices = len(self.indices) - len(fits), fits
        return dropped

    def _film_boxes(self, index: int, rng: random.Random, n: int) -> list[tuple[int, int, int, int]]:
        cells, stride = self.film_cells(index)
        shape, size = self.cache.image(index).shape, self.film_size(index)
        return [inbreast_box(cells, stride, shape, size, rng) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, index: int) -> Tensor:
        """Label target of record ``index``."""
        if self.label is None or self.spec is None:
            return torch.tensor(-1)
        value = self.cache.records[index].labels.get(self.label)
        if self.spec.kind == "multilabel":
            hot = torch.zeros(len(self.spec.classes))
            hot[list(value or [])] = 1.0
            return hot
        return torch.tensor(-1 if value is None else int(value))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        index = self.indices[i]
        image = self.cache.image(index)
        h, w = image.shape
        aspect = self.size[1] / self.size[0]
        if self.train:
            rng = random.Random(derive_seed(self.seed, Stream.CROP, epoch, index))
            # further views are the stream's next draws, each on the same native pixels
            if self.crop_mm is not None:
                boxes = self._film_boxes(index, rng, self.views)
            else:
                boxes = [
                    random_resized_box(h, w, self.scale, self.ratio, aspect, rng) for _ in range(self.views)
                ]
            if self.views > 1:
                return torch.stack([crop_resize(image, b, self.size) for b in boxes]), self.target(index)
            box = boxes[0]
        elif self.crop_mm is not None:
            fixed = random.Random(derive_seed(self.seed, Stream.EVAL_CROP, index))
            box = self._film_boxes(index, fixed, 1)[0]
        elif "breast_box" in self.cache.records[index].meta:
            # a whole film seen whole (a density or BI-RADS probe): the breast, zero-padded to the output's
            # aspect, so neither its top nor its nipple is cut off
            region = breast_region(image, self.cache.records[index].meta["breast_box"], aspect)
            return crop_resize(region, (0, 0, *region.shape), self.size), self.target(index)
        else:
            box = center_box(h, w, aspect)
        return crop_resize(image, box, self.size), self.target(index)


AnyDataset = CacheDataset | MixDataset | ConcatDataset[Any]


def _worker_init(worker_id: int, rank: int = 0) -> None:
    # Each worker resamples with one thread (the loader already runs workers in parallel). Crops draw from
    # their own per-record streams; the worker's global RNGs get a stream of their own per rank and worker
    # (the loader's default seeds them alike on every rank) for any code that uses them.
    single_threaded_cv2()
    torch.set_num_threads(1)
    seed = derive_seed(run_seed(), Stream.WORKER, rank, worker_id)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class MammoDataModule(L.LightningDataModule):
    """Train/val/test loaders over one prepared cache, or several mixed for pre-training.

    Args:
        cache: cache directory written by ``miram prepare``, or a list of them (pre-training on several
            collections: training draws from each by ``weights``; validation pools their ``val`` records;
            pixels are normalised with the mixture's pooled statistics).
        weights: share of each cache in every training epoch (``data/mix.py``); None = proportional to their
            sizes (every record once per epoch). Only with several caches.
        image_size: ``(H, W)`` delivered to the model: for MAE/MIRAM the finest scale
            (encoder input x largest factor).
        batch_size: per-device batch size.
        num_workers: loader processes.
        label: label to return as target (probe / fine-tune), or None for pre-training.
        pretrain_only: train only on records allowed in pre-training pools.
        train_splits: splits used for training.
        scale: random-resized-crop area range (training only).
        hflip: random horizontal flips (training only, on the device).
        vflip: random vertical flips (training only, on the device).
        limit_train: use only the first N training records of each cache (quick runs), or None for all.
        views: crops per training record, each drawn independently on the native pixels (2 for MoCo-v3:
            training batches are then ``(B, 2, 1, H, W)``); validation and test stay one centred crop.
        crop_mm: caches of whole films (``miram prepare <collection>``): crops of this physical height in
            millimetres, inside the breast (``min_breast``), instead of random resized crops; films too small
            to hold one are left out, with a count. None = random resized crops.
        min_breast: smallest share of a ``crop_mm`` crop that lies on the breast.
    """

    def __init__(
        self,
        cache: str | list[str],
        weights: list[float] | None = None,
        image_size: tuple[int, int] = (224, 224),
        batch_size: int = 64,
        num_workers: int = 2,
        label: str | None = None,
        pretrain_only: bool = True,
        train_splits: list[str] | None = None,
        scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        vflip: bool = False,
        limit_train: int | None = None,
        views: int = 1,
        crop_mm: float | None = None,
        min_breast: float = 0.5,
    ) -> None:
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.cache_dirs = [cache] if isinstance(cache, str) else list(cache)
        if not self.cache_dirs:
            raise ValueError("data.cache: give a cache directory or a list of them")
        if weights is not None:
            shares([1] * len(self.cache_dirs), weights)  # the same checks as the mix: fail at start
        if crop_mm is not None and not crop_mm > 0:
            raise ValueError(f"data.crop_mm must be positive (millimetres), got {crop_mm}")
        if not 0.0 <= min_breast <= 1.0:
            raise ValueError(f"data.min_breast is a share of the crop, in [0, 1]; got {min_breast}")
        self.weights, self.views, self.batch_size = weights, views, batch_size
        self.image_size: tuple[int, int] = (int(image_size[0]), int(image_size[1]))
        self.num_workers, self.label, self.pretrain_only = num_workers, label, pretrain_only
        self.train_splits = train_splits or ["train"]
        self.scale, self.limit_train = scale, limit_train
        self.crop_mm, self.min_breast = crop_mm, min_breast
        self.flips = K.AugmentationSequential(
            *([K.RandomHorizontalFlip()] if hflip else []), *([K.RandomVerticalFlip()] if vflip else [])
        )
        self._caches: list[Cache] | None = None
        self._stats: dict[str, float] | None = None

    @property
    def cache_dir(self) -> str:
        """The cache directory (of the first cache when there are several)."""
        return self.cache_dirs[0]

    @property
    def caches(self) -> list[Cache]:
        """The opened caches (validated on first use)."""
        if self._caches is None:
            caches = [Cache(d) for d in self.cache_dirs]
            for c in caches:
                if self.label is not None and self.label not in c.labels:
                    raise CacheError(f"{c.root}: no label '{self.label}'; available: {sorted(c.labels)}")
                if self.crop_mm is not None and c.kind != "films":
                    raise CacheError(
                        f"{c.root}: data.crop_mm needs a cache of whole films (prepared by a collection "
                        f"reader, cache.json kind 'films'), this one holds {c.kind}"
                    )
            for c in caches:
                licence = c.info.get("licence") or {}
                if licence.get("weights_restricted"):
                    print(
                        f"miram: note: {c.root} ({c.info.get('source')}): {licence.get('notice')}",
                        file=sys.stderr,
                    )
            self._caches = caches
        return self._caches

    @property
    def cache(self) -> Cache:
        """The opened cache of a single-cache data module.

        Raises:
            CacheError: the module mixes several caches.
        """
        if len(self.cache_dirs) > 1:
            raise CacheError(f"data.cache lists {len(self.cache_dirs)} caches; this use needs one")
        return self.caches[0]

    @property
    def stats(self) -> dict[str, float]:
        """``{"mean", "std"}`` that normalise pixels: the cache's, or pooled over the mix by its shares."""
        # computed once: normalize() asks for them on every batch, and pooling counts every cache's records
        if self._stats is None:
            caches = self.caches
            if len(caches) == 1:
                self._stats = caches[0].stats
            else:
                sizes = [len(c.indices(self.train_splits, pretrain_only=self.pretrain_only)) for c in caches]
                self._stats = pooled_stats(
                    [c.stats for c in caches], self.weights or [float(n) for n in sizes]
                )
        return dict(self._stats)

    def provenance(self) -> list[dict[str, Any]]:
        """What a run trained on, for its checkpoints and exports: each cache's path, source, size and
        licence entry (``cache.json → licence``, written by the collection readers)."""
        return [
            {"cache": str(c.root), "source": c.info.get("source"), "records": len(c),
             "licence": c.info.get("licence")}
            for c in self.caches
        ]  # fmt: skip

    def _part(self, cache: Cache, split: str | list[str], train: bool) -> CacheDataset | None:
        pretrain_only = self.pretrain_only and train
        indices = cache.indices(split, pretrain_only=pretrain_only, label=self.label)
        if train and self.limit_train is not None:
            indices = indices[: self.limit_train]
        views = self.views if train else 1
        part = CacheDataset(
            cache, indices, self.image_size, train, self.label, self.scale, views=views,
            crop_mm=self.crop_mm, min_breast=self.min_breast,
        )  # fmt: skip
        dropped = part.keep_fitting() if self.crop_mm is not None else 0
        if dropped:
            print(
                f"{cache.root}: {dropped} of {len(indices)} {split} films cannot hold a "
                f"{self.crop_mm} mm crop that is {self.min_breast:.0%} breast; left out",
                file=sys.stderr,
            )
        return part if part.indices else None

    def dataset(self, split: str | list[str], train: bool) -> AnyDataset:
        """Dataset of ``split`` with training or evaluation geometry (a mix or a concatenation of the caches'
        records when there are several)."""
        parts = [(c, self._part(c, split, train)) for c in self.caches]
        found = [p for _, p in parts if p is not None]
        if not found:
            raise CacheError(
                f"{', '.join(self.cache_dirs)}: no records in split {split!r}"
                + (f" with label '{self.label}'" if self.label else "")
            )
        if len(self.caches) == 1:
            return found[0]
        if not train:
            return ConcatDataset(found)
        missing = [str(c.root) for c, p in parts if p is None]
        if missing:
            raise CacheError(f"{', '.join(missing)}: no training records in split {split!r} to mix")
        return MixDataset(found, self.weights or [float(len(p)) for p in found], run_seed())

    def _train_loader(self, dataset: AnyDataset) -> StatefulDataLoader[Any]:
        # Resumable inside an epoch: Lightning checkpoints the loader's position and restores it.
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(dataset, num_replicas=world, rank=rank, seed=run_seed(), shuffle=True)
        with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch function on construction
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            return StatefulDataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=sampler,
                drop_last=len(sampler) >= self.batch_size,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                worker_init_fn=partial(_worker_init, rank=rank),
                pin_memory=torch.cuda.is_available(),
            )

    def _loader(self, dataset: AnyDataset, shuffle: bool) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_worker_init,
            pin_memory=torch.cuda.is_available(),
        )

    def normalize(self, images: Tensor) -> Tensor:
        """uint16 crops ``(B, 1, H, W)`` -> float32 standardised by the cache's intensity statistics."""
        if images.dtype != torch.uint16:
            raise TypeError(f"normalize takes the loader's uint16 crops, not {images.dtype}")
        stats = self.stats
        scale, shift = 1.0 / (65535.0 * stats["std"]), stats["mean"] / stats["std"]
        if images.device.type == "cpu":
            # torch's uint16 -> float32 conversion is not vectorised on the CPU; numpy's is 4x faster
            out = np.multiply(images.numpy(), np.float32(scale), dtype=np.float32)
            out -= np.float32(shift)
            return torch.from_numpy(out)
        return images.float().mul_(scale).sub_(shift)

    def eval_loader(self, split: str | list[str]) -> Iterable[tuple[Tensor, Tensor]]:
        """Unshuffled, unaugmented, normalised ``(images (B, 1, H, W) float32, targets)`` of ``split``."""
        loader = self._loader(self.dataset(split, train=False), shuffle=False)
        return ((self.normalize(images), target) for images, target in loader)

    def images(self, split: str, num: int) -> Tensor:
        """The first ``num`` unaugmented crops of ``split``, normalised ``(num, 1, H, W)`` (for figures)."""
        dataset = self.dataset(split, train=False)
        return self.normalize(torch.stack([dataset[i][0] for i in range(min(num, len(dataset)))]))

    def train_dataloader(self) -> StatefulDataLoader[Any]:
        return self._train_loader(self.dataset(self.train_splits, train=True))

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.dataset("val", train=False), shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.dataset("test", train=False), shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, target = batch
        images = self.normalize(images)
        trainer = self.trainer
        if trainer is not None and trainer.training and len(self.flips):
            # flips of batch b of epoch e on rank r: one stream per (seed, r, e, b), kept by a resume
            epoch, index = train_position(trainer, upcoming=True)
            seed = derive_seed(run_seed(), Stream.FLIP, trainer.global_rank, epoch, index)
            with forked_rng(seed, images.device):
                # views (B, V, C, H, W) are flipped independently, as (B * V) images
                images = self.flips(images.flatten(0, images.ndim - 4)).reshape(images.shape)
        return images, target
