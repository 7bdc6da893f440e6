"""Whole films in a cache: the part of ``prepare`` every full-field collection shares.

A collection reader (:mod:`miram.data.collections`) turns its metadata into :class:`Film` items: a file,
the patient, the split, labels, laterality and view, and any finding boxes. :func:`prepare_films` decodes
each film once in a worker (:func:`film_job`): pixels, optionally downscaled to ``max_size``; the stored bit
depth; the pixel spacing in millimetres (``PixelSpacing``, else ``ImagerPixelSpacing``, else the
``spacing_mm`` the user states, else none: each record says which); a breast mask on a thumbnail
(``masks/<key>.npy``, stride in the record) and its bounding box; and a mirror to ``flip_to``. Finding
boxes follow the downscale and the mirror. Pre-training then cuts crops of a physical size inside the breast
(:func:`miram.data.crops.inbreast_box`).

Record ``meta`` of a film: ``laterality`` (L/R/None), ``view``, ``spacing_mm`` ([row, column] mm per cached
pixel, or None), ``spacing_from`` (PixelSpacing | ImagerPixelSpacing | assumed | None), ``bits_stored``,
``native_shape``, ``scale`` (cached / native size), ``flipped``, ``breast_box`` ([y0, x0, y1, x1], cached
pixels), ``mask_stride``, ``findings`` (boxes in cached pixels with their labels) and the collection's own
identifiers.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miram.data.breast import breast_mask_small, flip_needed
from miram.data.cache import (
    CacheRecord,
    CacheWriter,
    LabelSpec,
    PrepareError,
    atomic_save_npy,
    fingerprint,
    save_job,
)
from miram.data.crops import resize_max
from miram.data.dicom import DicomError, pixel_spacing, read_dicom
from miram.data.dicom import laterality as dicom_laterality
from miram.data.dicom import view as dicom_view
from miram.data.images import ImageError, is_dicom_path, read_image
from miram.data.parallel import run_parallel
from miram.data.splits import draw_splits, split_report

FlipTo = Literal["none", "left", "right"]


@dataclass
class Film:
    """One full-field mammogram to cache.

    Attributes:
        path: the image file (DICOM; a raster image is read too, without spacing).
        key: unique, filesystem-safe record key.
        patient_id: grouping key for splits.
        split: train | val | test.
        labels: label name -> value, in the collection's :class:`LabelSpec` schema.
        laterality: ``L`` / ``R`` from the metadata; None = read ImageLaterality / Laterality from the file.
        view: CC / MLO / ... from the metadata; None = read ViewPosition from the file.
        pretrain: may enter pre-training pools (official test images never do).
        meta: the collection's own identifiers and values worth keeping.
        findings: finding boxes in native pixels: ``{"box": [y0, x0, y1, x1], ...}`` plus their labels.
    """

    path: str
    key: str
    patient_id: str
    split: str
    labels: dict[str, Any] = field(default_factory=dict)
    laterality: str | None = None
    view: str | None = None
    pretrain: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FilmSettings:
    """How every film of a run is cached.

    Attributes:
        out: cache directory.
        max_size: downscale films whose longest side exceeds this (area filter; spacing follows); None =
            native pixels.
        min_size: smallest usable side; smaller films are skipped.
        flip_to: mirror films so the breast lies on this side (decided from the pixels); ``none`` keeps them.
        spacing_mm: pixel spacing to assume for files with neither PixelSpacing nor ImagerPixelSpacing
            (recorded as ``assumed``); None leaves them without one.
        mask_side: longest side of the stored breast-mask thumbnail.
    """

    out: str
    max_size: int | None = None
    min_size: int = 64
    flip_to: FlipTo = "none"
    spacing_mm: float | None = None
    mask_side: int = 512


def split_films(
    films: list[Film], severity: Callable[[Film], int], val_fraction: float, test_fraction: float, seed: int
) -> None:
    """Draw ``val`` and ``test`` by patient, stratified by each patient's most severe film, and set every
    film's split and pre-training flag (test films never enter pre-training pools).

    Args:
        films: the films of a collection without an official split.
        severity: a film's stratum as a rank (e.g. 0 benign, 1 malignant); a patient takes its highest.
        val_fraction, test_fraction, seed: as :func:`miram.data.splits.draw_splits`.
    """
    worst: dict[str, int] = {}
    for film in films:
        worst[film.patient_id] = max(worst.get(film.patient_id, severity(film)), severity(film))
    split_of = draw_splits({p: str(w) for p, w in worst.items()}, val_fraction, test_fraction, seed)
    for film in films:
        film.split = split_of[film.patient_id]
        film.pretrain = film.split != "test"


def mask_path(root: str | Path, key: str) -> Path:
    """Where the breast-mask thumbnail of record ``key`` lives."""
    return Path(root) / "masks" / f"{key}.npy"


def _decode(path: str) -> tuple[np.ndarray, dict[str, Any], Any]:
    """Pixels, header facts and the dataset (None for a raster file) of one film."""
    if not is_dicom_path(Path(path)):
        return read_image(path), {"bits_stored": None, "spacing": None, "spacing_from": None}, None
    image = read_dicom(path)
    spacing, source = pixel_spacing(image.ds)
    facts = {
        "bits_stored": int(image.ds.get("BitsStored", 0)) or None,
        "spacing": spacing,
        "spacing_from": source,
    }
    return image.pixels, facts, image.ds


def _move_box(box: list[float], scale: float, width: int, flip: bool) -> list[int]:
    """A native ``[y0, x0, y1, x1]`` box in cached pixels (downscaled by ``scale``, mirrored if ``flip``)."""
    y0, x0, y1, x1 = (float(v) * scale for v in box)
    if flip:
        x0, x1 = width - x1, width - x0
    return [int(np.floor(y0)), int(np.floor(x0)), int(np.ceil(y1)), int(np.ceil(x1))]


def film_job(film: Film, s: FilmSettings) -> tuple[list[CacheRecord], list[tuple[str, str]]]:
    """Decode, downscale, mask and mirror one film; write its pixels, mask and journal entry.

    Returns:
        ``([record], [])``, or ``([], [(file, reason)])`` for a film that cannot be used.
    """
    try:
        pixels, facts, ds = _decode(film.path)
        h, w = pixels.shape
        if min(h, w) < s.min_size:
            raise ImageError(f"{film.path}: image {h}x{w} smaller than min_size {s.min_size}")
        if not pixels.any():
            raise ImageError(f"{film.path}: all-zero image")
    except (DicomError, ImageError) as e:
        result: tuple[list[CacheRecord], list[tuple[str, str]]] = ([], [(film.path, str(e))])
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - one unreadable file never stops the run; the reason is kept
        result = ([], [(film.path, f"{film.path}: unexpected {type(e).__name__} ({e})")])
    else:
        result = _cache_film(film, pixels, facts, ds, s)
    save_job(s.out, film.key, *result)
    return result


def _cache_film(
    film: Film, pixels: np.ndarray, facts: dict[str, Any], ds: Any, s: FilmSettings
) -> tuple[list[CacheRecord], list[tuple[str, str]]]:
    native = pixels.shape
    image, scale = resize_max(pixels, s.max_size)
    del pixels
    small, stride = breast_mask_small(image, max_side=s.mask_side)
    if not small.any():
        return [], [(film.path, f"{film.path}: no breast found (empty breast mask)")]
    flip = flip_needed(small, s.flip_to)
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
        small, stride = breast_mask_small(image, max_side=s.mask_side)  # the thumbnail grid is not symmetric
    rows, cols = np.nonzero(small.any(axis=1))[0], np.nonzero(small.any(axis=0))[0]
    h, w = image.shape
    box = [int(rows[0]) * stride, int(cols[0]) * stride, min(h, (int(rows[-1]) + 1) * stride),
           min(w, (int(cols[-1]) + 1) * stride)]  # fmt: skip
    spacing, spacing_from = facts["spacing"], facts["spacing_from"]
    if spacing is None and s.spacing_mm is not None:
        spacing, spacing_from = (s.spacing_mm, s.spacing_mm), "assumed"
    record = CacheRecord(
        key=film.key,
        split=film.split,
        patient_id=film.patient_id,
        labels=dict(film.labels),
        pretrain=film.pretrain,
        source=film.path,
        meta={
            **film.meta,
            "laterality": film.laterality or dicom_laterality(ds, film.path),
            "view": film.view or dicom_view(ds, film.path),
            "spacing_mm": None if spacing is None else [float(spacing[0]) / scale, float(spacing[1]) / scale],
            "spacing_from": spacing_from,
            "bits_stored": facts["bits_stored"],
            "native_shape": [int(native[0]), int(native[1])],
            "scale": scale,
            "flipped": flip,
            "breast_box": box,
            "mask_stride": int(stride),
            "findings": [{**f, "box": _move_box(f["box"], scale, w, flip)} for f in film.findings],
        },
    )
    atomic_save_npy(mask_path(s.out, film.key), small)
    atomic_save_npy(Path(s.out) / "records" / f"{film.key}.npy", image)
    return [record], []


def prepare_films(
    films: list[Film],
    problems: list[tuple[str, str]],
    *,
    source: str,
    labels: dict[str, LabelSpec],
    settings: FilmSettings,
    check: dict[str, Any],
    metadata_files: list[str],
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Cache the films a collection reader found; the shared second half of every full-field ``prepare``.

    Args:
        films: the films (keys unique).
        problems: ``(input, reason)`` the reader found (rows without an image, images without a row, unknown
            values): skipped under ``on_error=skip``, the first one stops the run before decoding otherwise.
        source: the collection's name (``cache.json → source``).
        labels: the label schema of the films' ``labels``.
        settings: how films are cached.
        check: everything else that decides the records (root, split fractions, seed ...): a resumed run must
            have the same.
        metadata_files: the metadata files read; with the films, fingerprinted so a changed input is not
            resumed.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` or ``fail``.
        overwrite: discard an existing cache in ``out``.
        progress: show a progress bar.
        extra: more for ``cache.json`` (the join report, licence notes ...).

    Returns:
        the cache directory.

    Raises:
        PrepareError: a bad input under ``fail``, or nothing usable.
    """
    if problems and on_error == "fail":
        where, reason = problems[0]
        raise PrepareError(
            f"{where}: {reason} ({len(problems)} problem(s) found before decoding; use --on_error skip to "
            "skip them)"
        )
    if not films:
        raise PrepareError(
            f"{source}: no film to prepare ({len(problems)} problem(s): "
            + "; ".join(f"{a}: {b}" for a, b in problems[:3])
            + ")"
        )
    out = settings.out
    writer = CacheWriter(out, source, overwrite=overwrite)
    files = {f.path for f in films} | set(metadata_files)
    writer.check_settings(
        {**check, "max_size": settings.max_size, "min_size": settings.min_size, "flip_to": settings.flip_to,
         "spacing_mm": settings.spacing_mm, "mask_side": settings.mask_side},
        sources={f: fingerprint(f) for f in sorted(files)},
    )  # fmt: skip
    results: dict[str, tuple[list[CacheRecord], list[tuple[str, str]]]] = {}
    todo = []
    for film in films:
        done = writer.load_job(film.key)
        if done is not None and all(mask_path(out, r.key).exists() for r in done[0]):
            results[film.key] = done
        else:
            todo.append(film)
    if results:
        print(f"{out}: resuming, {len(results)} of {len(films)} films already done", file=sys.stderr)
    runner = run_parallel(functools.partial(film_job, s=settings), todo, workers, source, progress)
    try:
        for film, result in runner:
            results[film.key] = result
            if result[1] and on_error == "fail":
                where, reason = result[1][0]
                raise PrepareError(f"{where}: {reason} (use --on_error skip to skip bad inputs)")
    finally:
        runner.close()
    problems = list(problems)  # the caller's list stays as it was
    for key in sorted(results):
        for record in results[key][0]:
            writer.add(record)
        problems += results[key][1]
    for where, reason in problems:
        writer.skip(where, reason)
    spacing = Counter(str(r.meta["spacing_from"]) for r in writer.records)
    bits = Counter(str(r.meta["bits_stored"]) for r in writer.records)
    info = {
        "kind": "films",
        "num_films": len(films),
        "patients": split_report(writer.records),
        "spacing_from": dict(spacing),
        "bits_stored": dict(bits),
        "settings": {
            "max_size": settings.max_size,
            "flip_to": settings.flip_to,
            "spacing_mm": settings.spacing_mm,
        },
        **(extra or {}),
    }
    path = writer.finalize(labels, extra=info)
    no_spacing = spacing.get("None", 0)
    print(
        f"{out}: {len(writer.records)} films of {len(films)} cached; {len(writer.skipped)} inputs skipped "
        f"(see skipped.csv); pixel spacing from {dict(spacing)}"
        + (
            f"; {no_spacing} film(s) have none: pass --spacing_mm to crop them at a physical size"
            if no_spacing
            else ""
        ),
        file=sys.stderr,
    )
    return path
