"""``miram bench loader``: crops per second of the training read path.

Measures exactly what training runs: :class:`miram.data.datamodule.CacheDataset` in training geometry
(memory-mapped uint16 record → random resized crop on native pixels → resample to ``size`` × ``size``,
uint16) behind a torch DataLoader with ``workers`` processes, then the normalisation to float32 that
training applies after the transfer (on a CPU-only machine it runs in the main process, so it is counted).
"""

from __future__ import annotations

import os
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from miram.data.datamodule import CacheDataset, MammoDataModule, _worker_init


def bench_loader(
    cache: str,
    size: int = 448,
    workers: int = 2,
    batch_size: int = 64,
    seconds: float = 10.0,
    split: str | None = None,
    crop_mm: float | None = None,
    min_breast: float = 0.5,
) -> dict[str, float]:
    """Time the training data loader over a prepared cache.

    Args:
        cache: cache directory written by ``miram prepare``.
        size: output side (crops are ``(1, size, size)``).
        workers: DataLoader worker processes.
        batch_size: crops per batch.
        seconds: measuring time after one warm-up batch per worker.
        split: records of this split only (default: all records).
        crop_mm: a cache of whole films: crops of this size in millimetres inside the breast (the full-field
            pre-training path, ``data.crop_mm``) instead of random resized crops.
        min_breast: smallest breast share of a ``crop_mm`` crop.

    Returns:
        ``{"crops_per_s", "batches", "crops", "seconds", "workers", "size", "load_average"}`` (also printed).
    """
    data = MammoDataModule(cache)
    opened, normalize = data.cache, data.normalize
    indices = opened.indices(split)
    dataset = CacheDataset(opened, indices, (size, size), train=True, crop_mm=crop_mm, min_breast=min_breast)
    if crop_mm is not None:
        dataset.keep_fitting()
    # Sampling with replacement keeps every batch full even for a cache smaller than one batch.
    sampler = RandomSampler(dataset, replacement=True, num_samples=max(len(dataset), 100 * batch_size))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init,
        drop_last=False,
    )
    torch.set_num_threads(1)  # like a training process whose cores belong to the loader workers

    def batches():  # type: ignore[no-untyped-def]
        while True:
            yield from loader

    stream = batches()
    for _ in range(max(workers, 1)):  # warm-up: start every worker, touch the page cache
        next(stream)
    crops, n = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        images, _ = next(stream)
        images = normalize(images)
        crops += images.shape[0]
        n += 1
    elapsed = time.perf_counter() - start
    result = {
        "crops_per_s": crops / elapsed,
        "batches": float(n),
        "crops": float(crops),
        "seconds": elapsed,
        "workers": float(workers),
        "size": float(size),
        "load_average": os.getloadavg()[0],  # other work on the machine lowers the number: report it
    }
    print(
        f"bench/loader: {result['crops_per_s']:.0f} crops/s at {size}x{size} "
        f"({crops} crops in {elapsed:.1f} s, {workers} workers, batch {batch_size}, {len(indices)} records, "
        f"{os.cpu_count()} CPUs, load average {result['load_average']:.1f})"
    )
    return result
