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
    min_crop: int = 128
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
        avoid: lesions drawn on another copy of the same breast view (CBIS-DDSM files a view holding a mass
            and a calcification twice): tiles keep clear of them too; their crops are cut by their own job.
    """

    key: str
    full_files: list[str]
    lesions: list[LesionTask] = field(default_factory=list)
    tiles: int = 0
    tile_record: CacheRecord | None = None
    avoid: list[LesionTask] = field(default_factory=list)


@dataclass
class JobResult:
    """What a job sends back: records written and ``(input, reason)`` for what was skipped."""

    key: str
    records: list[CacheRecord]
    skipped: list[tuple[str, str]]


def _pick_full(files: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """The largest image file of the full-image series (normally its only file), and ``(file, reason)`` for
    the files that are no image (a structured report filed in the series, a broken header).

    Raises:
        ImageError: no file of the series holds an image.
    """
    shapes, ignored = _shapes(files)
    if not shapes:
        raise ImageError(ignored[0][1] if len(ignored) == 1 else "; ".join(r for _, r in ignored))
    return max(shapes, key=lambda f: shapes[f][0] * shapes[f][1]), ignored


def _shapes(files: list[str]) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str]]]:
    shapes: dict[str, tuple[int, int]] = {}
    ignored: list[tuple[str, str]] = []
    for f in files:
        try:
            shapes[f] = image_shape(f)
        except ImageError as e:
            ignored.append((f, str(e)))
    return shapes, ignored


@dataclass
class Located:
    """Where a lesion's ROI lies on the full image (after the flip, when there is one).

    Attributes:
        mask_file: the ROI mask file; crop_file: the provided crop (None when the series holds none).
        bbox: the mask's bounding box ``(y0, y1, x0, x1)``, end-exclusive, in full-image pixels.
        ignored: ``(file, reason)`` of the series' files that hold no image.
    """

    mask_file: str
    crop_file: str | None
    bbox: tuple[int, int, int, int]
    ignored: list[tuple[str, str]]


def _locate(task: LesionTask, shape: tuple[int, int], flip: bool) -> Located:
    """Mask = the file with the full image's shape and binary values; crop = the other file.

    Raises:
        ImageError: no file (or no binary file) with the full image's shape, or an empty mask.
    """
    shapes, ignored = _shapes(task.files)
    same = [f for f, s in shapes.items() if s == shape]
    if not same:
        listed = ", ".join(f"{Path(f).name} {s[0]}x{s[1]}" for f, s in shapes.items())
        listed += "".join(f", {Path(f).name} (no image)" for f, _ in ignored)
        raise ImageError(
            f"{Path(task.files[0]).parent}: no ROI mask matches the full image shape {shape[0]}x{shape[1]} "
            f"(files: {listed.lstrip(', ')}); crop/mask cannot be resolved"
        )
    for f in same:
        pixels = read_image(f)
        top = int(pixels.max())
        sample = pixels[::7, ::7]
        # binary (TCIA: 0/255) or nearly so (Kaggle JPEG masks ring at the edges); a mammogram is not
        extremes = np.mean((sample <= top // 10) | (sample >= top - top // 10)) if top else 0.0
        if top and extremes >= 0.98:
            crop = next((c for c, s in shapes.items() if c != f and s != shape), None)
            mask = pixels > top // 2
            if flip:
                mask = mask[:, ::-1]
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                raise ImageError(f"{f}: empty ROI mask (no pixel > 0)")
            bbox = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            return Located(f, crop, bbox, ignored)
    raise ImageError(f"{same[0]}: has the full image's shape but is not a binary mask")


def _lesion(task: LesionTask, image: np.ndarray, where: Located, flip: bool, s: JobSettings) -> tuple[
    CacheRecord, np.ndarray
]:  # fmt: skip
    """The square crop around a located lesion, at least ``max(min_crop, min_size)`` wide (small ROIs are
    enlarged, never dropped: their context is what a classifier can use)."""
    y0, y1, x0, x1 = where.bbox
    top, left, side = square_box(y0, y1, x0, x1, s.crop_context, min_side=max(s.min_crop, s.min_size))
    crop = crop_padded(image, top, left, side, side)
    if not crop.any():
        raise ImageError(f"{where.mask_file}: lesion crop is all zero")
    crop, scale = resize_max(crop, s.max_size)
    meta = dict(task.record.meta)
    meta.update(
        mask_file=where.mask_file,
        crop_file=where.crop_file,
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


def _reason(e: Exception, files: list[str]) -> str:
    """An ImageError's message names its file; anything else is named after the job's first file."""
    if isinstance(e, ImageError):
        return str(e)
    return f"{files[0] if files else '?'}: unexpected {type(e).__name__} ({e})"


def run_job(job: ImageJob, s: JobSettings) -> JobResult:
    """Decode, cut, write and journal one image job; never raises for bad inputs (they become skips)."""
    records: list[CacheRecord] = []
    skipped: list[tuple[str, str]] = []
    try:
        full_file, ignored = _pick_full(job.full_files)
        skipped += ignored
        image = read_image(full_file)
        if min(image.shape) < s.min_size:
            raise ImageError(
                f"{full_file}: image {image.shape[0]}x{image.shape[1]} smaller than min_size {s.min_size}"
            )
        if not image.any():
            raise ImageError(f"{full_file}: all-zero image")
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on this image is a skip naming the file
        reason = _reason(e, job.full_files)
        for task in job.lesions:
            skipped.append((task.record.key, f"full image: {reason}"))
        if not job.lesions:
            skipped.append((job.key, f"full image: {reason}"))
        save_job(s.out, job.key, records, skipped)
        return JobResult(job.key, records, skipped)
    small, stride = breast_mask_small(image)
    flip = flip_needed(small, s.flip_to)
    if flip:
        image, small = np.ascontiguousarray(image[:, ::-1]), small[:, ::-1]
    root = Path(s.out) / "records"
    # Tiles keep clear of *every* ROI of the image, also of lesions whose crop is not kept; a lesion that
    # cannot be located leaves the image without tiles, since no tile could be shown to be background.
    lesion_small = np.zeros_like(small)
    unlocated: list[str] = []
    for task in job.lesions:
        try:
            where = _locate(task, image.shape, flip)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            skipped.append((task.record.key, _reason(e, task.files)))
            unlocated.append(task.record.key)
            continue
        skipped += [item for item in where.ignored if item not in skipped]
        y0, y1, x0, x1 = where.bbox
        lesion_small[y0 // stride : -(-y1 // stride), x0 // stride : -(-x1 // stride)] = True
        try:
            record, crop = _lesion(task, image, where, flip, s)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            skipped.append((task.record.key, _reason(e, [where.mask_file])))
            continue
        atomic_save_npy(root / f"{record.key}.npy", crop)
        records.append(record)
    meta_common = {"full_file": full_file, "flipped": flip}
    for i, record in enumerate(records):
        records[i] = replace(record, meta={**record.meta, **meta_common})
    if job.tiles and job.tile_record is not None:
        for task in job.avoid:
            try:
                y0, y1, x0, x1 = _locate(task, image.shape, flip).bbox
            except MemoryError:
                raise
            except Exception:  # noqa: BLE001 - reported by the job that owns the lesion
                unlocated.append(task.record.key)
                continue
            lesion_small[y0 // stride : -(-y1 // stride), x0 // stride : -(-x1 // stride)] = True
    if job.tiles and job.tile_record is not None and unlocated:
        skipped.append(
            (f"{job.key}_tiles", f"no background tiles: ROI of {', '.join(unlocated)} not located")
        )
    elif job.tiles and job.tile_record is not None:
        for record, tile in _tiles(job, image, small, stride, lesion_small, s):
            atomic_save_npy(root / f"{record.key}.npy", tile)
            records.append(replace(record, meta={**record.meta, **meta_common}))
    save_job(s.out, job.key, records, skipped)
    return JobResult(job.key, records, skipped)
