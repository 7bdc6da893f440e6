"""One CBIS-DDSM ``prepare`` job: decode one full mammogram once, cut its lesion crops and background tiles.

Runs in a worker process: pixels are written there (atomic ``.npy``), then a journal entry, and only the
records' metadata travel back. Crop and mask are told apart by shape (``cbis-ddsm.md`` §3): the mask has the
full image's (Rows, Columns), the crop is smaller, whatever the file names or the CSV column say.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from miram.data.breast import breast_mask_small, flip_needed
from miram.data.cache import CacheRecord, atomic_save_npy, save_job
from miram.data.crops import crop_padded, resize_max, square_box
from miram.data.images import ImageError, image_shape, read_image


@dataclass(frozen=True)
class JobSettings:
    """Per-run settings every job needs (see ``prepare_cbis_ddsm`` for their meaning)."""

    out: str
    crop_context: float = 0.0
    max_size: int | None = None
    min_size: int = 16
    tile_sizes: tuple[int, ...] = (224,)
    flip_to: Literal["none", "left", "right"] = "none"
    seed: int = 0


@dataclass
class LesionTask:
    """A lesion of the job's image: its candidate files (crop and ROI series pooled) and its record."""

    files: list[str]
    record: CacheRecord


@dataclass
class ImageJob:
    """One full mammogram with its lesions.

    Attributes:
        key: job key (the full-image subject folder name).
        full_files: files of the full-image series (normally one).
        lesions: the lesions drawn on this image.
        tiles: number of background tiles to sample (0 = none).
        tile_record: template record for tiles (split, patient, labels, pretrain).
    """

    key: str
    full_files: list[str]
    lesions: list[LesionTask] = field(default_factory=list)
    tiles: int = 0
    tile_record: CacheRecord | None = None


@dataclass
class JobResult:
    """What a job sends back: records written and ``(input, reason)`` for what was skipped."""

    key: str
    records: list[CacheRecord]
    skipped: list[tuple[str, str]]


def _pick_full(files: list[str]) -> tuple[str, tuple[int, int]]:
    """The largest file of the full-image series (a series normally holds exactly one)."""
    shapes = [(image_shape(f), f) for f in files]
    (h, w), f = max(shapes, key=lambda s: s[0][0] * s[0][1])
    return f, (h, w)


def _assign_mask(task: LesionTask, shape: tuple[int, int]) -> tuple[str, np.ndarray, str | None]:
    """Mask = the file with the full image's shape and binary values; crop = the other file.

    Raises:
        ImageError: no file (or no binary file) with the full image's shape.
    """
    shapes: dict[str, tuple[int, int]] = {}
    for f in task.files:
        shapes[f] = image_shape(f)
    same = [f for f, s in shapes.items() if s == shape]
    if not same:
        listed = ", ".join(f"{Path(f).name} {s[0]}x{s[1]}" for f, s in shapes.items())
        raise ImageError(
            f"{Path(task.files[0]).parent}: no ROI mask matches the full image shape {shape[0]}x{shape[1]} "
            f"(files: {listed}); crop/mask cannot be resolved"
        )
    for f in same:
        pixels = read_image(f)
        top = int(pixels.max())
        sample = pixels[::7, ::7]
        # binary (TCIA: 0/255) or nearly so (Kaggle JPEG masks ring at the edges); a mammogram is not
        extremes = np.mean((sample <= top // 10) | (sample >= top - top // 10)) if top else 0.0
        if top and extremes >= 0.98:
            crop = next((c for c, s in shapes.items() if c != f and s != shape), None)
            return f, pixels > top // 2, crop
    raise ImageError(f"{same[0]}: has the full image's shape but is not a binary mask")


def _lesion(
    task: LesionTask, image: np.ndarray, flip: bool, s: JobSettings
) -> tuple[CacheRecord, np.ndarray]:
    mask_file, mask, crop_file = _assign_mask(task, image.shape)
    if flip:
        mask = mask[:, ::-1]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ImageError(f"{mask_file}: empty ROI mask (no pixel > 0)")
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    top, left, side = square_box(y0, y1, x0, x1, s.crop_context)
    crop = crop_padded(image, top, left, side, side)
    if side < s.min_size:
        raise ImageError(f"{mask_file}: lesion crop {side}x{side} is smaller than min_size {s.min_size}")
    if not crop.any():
        raise ImageError(f"{mask_file}: lesion crop is all zero")
    crop, scale = resize_max(crop, s.max_size)
    meta = dict(task.record.meta)
    meta.update(
        mask_file=mask_file,
        crop_file=crop_file,
        mask_bbox=[y0, y1, x0, x1],
        crop_box=[top, left, side],
        scale=scale,
        flipped=flip,
    )
    return replace(task.record, meta=meta), crop


def _tiles(
    job: ImageJob, image: np.ndarray, small: np.ndarray, stride: int, lesions: np.ndarray, s: JobSettings
) -> list[tuple[CacheRecord, np.ndarray]]:
    """Background tiles: inside the breast (≥ 90 % of the tile) and clear of every lesion mask."""
    assert job.tile_record is not None
    rng = np.random.default_rng([s.seed, zlib.crc32(job.key.encode())])
    h, w = image.shape
    out: list[tuple[CacheRecord, np.ndarray]] = []
    for k in range(job.tiles):
        size = int(s.tile_sizes[k % len(s.tile_sizes)])
        if size > min(h, w):
            continue
        for _ in range(50):  # rejection sampling; dense breasts pass at once, thin ones may give up
            top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            sy, sx = (
                slice(top // stride, -(-(top + size) // stride)),
                slice(left // stride, -(-(left + size) // stride)),
            )
            if small[sy, sx].mean() >= 0.9 and not lesions[sy, sx].any():
                tile, scale = resize_max(
                    np.ascontiguousarray(image[top : top + size, left : left + size]), s.max_size
                )
                meta = dict(job.tile_record.meta, crop_box=[top, left, size], scale=scale, tile=k)
                key = f"{job.key}_tile{k}"
                out.append((replace(job.tile_record, key=key, meta=meta), tile))
                break
    return out


def run_job(job: ImageJob, s: JobSettings) -> JobResult:
    """Decode, cut, write and journal one image job; never raises for bad inputs (they become skips)."""
    records: list[CacheRecord] = []
    skipped: list[tuple[str, str]] = []
    try:
        full_file, _ = _pick_full(job.full_files)
        image = read_image(full_file)
        if min(image.shape) < s.min_size:
            raise ImageError(
                f"{full_file}: image {image.shape[0]}x{image.shape[1]} smaller than min_size {s.min_size}"
            )
        if not image.any():
            raise ImageError(f"{full_file}: all-zero image")
    except ImageError as e:
        for task in job.lesions:
            skipped.append((task.record.key, f"full image: {e}"))
        if not job.lesions:
            skipped.append((job.key, f"full image: {e}"))
        save_job(s.out, job.key, records, skipped)
        return JobResult(job.key, records, skipped)
    small, stride = breast_mask_small(image)
    flip = flip_needed(small, s.flip_to)
    if flip:
        image, small = np.ascontiguousarray(image[:, ::-1]), small[:, ::-1]
    root = Path(s.out) / "records"
    lesion_small = np.zeros_like(small)
    for task in job.lesions:
        try:
            record, crop = _lesion(task, image, flip, s)
        except ImageError as e:
            skipped.append((task.record.key, str(e)))
            continue
        atomic_save_npy(root / f"{record.key}.npy", crop)
        records.append(record)
        y0, y1, x0, x1 = record.meta["mask_bbox"]
        lesion_small[y0 // stride : -(-y1 // stride), x0 // stride : -(-x1 // stride)] = True
    meta_common = {"full_file": full_file, "flipped": flip}
    for i, record in enumerate(records):
        records[i] = replace(record, meta={**record.meta, **meta_common})
    if job.tiles and job.tile_record is not None:
        for record, tile in _tiles(job, image, small, stride, lesion_small, s):
            atomic_save_npy(root / f"{record.key}.npy", tile)
            records.append(replace(record, meta={**record.meta, **meta_common}))
    save_job(s.out, job.key, records, skipped)
    return JobResult(job.key, records, skipped)
