"""``miram prepare folder``: your own images (class sub-folders or a CSV manifest) → a cache.

Inputs: PNG (8/16-bit), JPEG, TIFF and DICOM (``.dcm``/``.dicom``), decoded by
:func:`miram.data.images.read_image` (8-bit ×257 → uint16). Either ``root/<class>/**/<image>`` (files
directly in ``root`` are unlabelled) or ``manifest``: a CSV with ``path`` and ``label`` and optional
``patient_id`` and ``split`` (train / val / test) columns; relative paths are taken from ``root``.

Splits are by patient: the manifest's ``patient_id``, else the DICOM PatientID, else the file itself;
stratified by label and seeded. Images smaller than ``min_size`` or all zero are skipped with the reason.
"""

from __future__ import annotations

import csv
import functools
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

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
from miram.data.dicom import DicomError, read_header
from miram.data.images import RASTER_SUFFIXES, ImageError, read_image
from miram.data.parallel import run_parallel

SUFFIXES = (*RASTER_SUFFIXES, ".dcm", ".dicom")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class FolderItem:
    """One image to cache."""

    path: str
    key: str
    label: str | None
    patient_id: str
    split: str | None


def _key(rel: str) -> str:
    # readable and filesystem-safe, with a hash so that 'a b.png' and 'a_b.png' stay distinct
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', rel)[-80:]}_{zlib.crc32(rel.encode()):08x}"


def _patient(path: Path) -> str:
    if path.suffix.lower() in (".dcm", ".dicom"):
        try:
            pid = str(read_header(path).get("PatientID", "") or "")
            if pid:
                return pid
        except DicomError:
            pass  # the decode step reports the file
    return path.stem


def _from_manifest(root: Path, manifest: Path, problems: list[tuple[str, str]]) -> list[FolderItem]:
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise PrepareError(f"{manifest}: missing column(s) {missing}; found {columns}")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except OSError as e:
        raise PrepareError(f"{manifest}: cannot read manifest ({e})") from e
    items = []
    for n, row in enumerate(rows, start=2):
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
        where = f"{manifest}:{n}"
        if not path.is_file():
            problems.append((where, f"{path}: file not found"))
            continue
        split = row.get("split", "").lower() or None
        if split is not None and split not in SPLIT_NAMES:
            problems.append((where, f"unknown split {row['split']!r} (expected train, val or test)"))
            continue
        items.append(
            FolderItem(
                str(path),
                _key(row["path"]),
                row["label"] or None,
                row.get("patient_id") or _patient(path),
                SPLIT_NAMES[split] if split else None,
            )
        )
    return items


def _from_folders(root: Path) -> list[FolderItem]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        items.append(FolderItem(str(path), _key(rel.as_posix()), label, _patient(path), None))
    return items


def assign_splits(items: list[FolderItem], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Give items without a split one by patient, stratified by the patient's first label, seeded."""
    by_patient: dict[str, str] = {}
    for it in items:
        if it.split is None:
            by_patient.setdefault(it.patient_id, it.label or "")
    strata: dict[str, list[str]] = defaultdict(list)
    for pid, label in by_patient.items():
        strata[label].append(pid)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for label in sorted(strata):
        pids = sorted(strata[label])
        order = rng.permutation(len(pids))
        n_test, n_val = int(round(test_fraction * len(pids))), int(round(val_fraction * len(pids)))
        for rank, i in enumerate(order):
            split_of[pids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    for it in items:
        if it.split is None:
            it.split = split_of[it.patient_id]


def _run(item: tuple[FolderItem, CacheRecord], out: str, min_size: int, max_size: int | None) -> tuple[
    list[CacheRecord], list[tuple[str, str]]
]:  # fmt: skip
    src, record = item
    try:
        image = read_image(src.path)
        if min(image.shape) < min_size:
            raise ImageError(
                f"{src.path}: image {image.shape[0]}x{image.shape[1]} smaller than min_size {min_size}"
            )
        if not image.any():
            raise ImageError(f"{src.path}: all-zero image")
    except ImageError as e:
        result: tuple[list[CacheRecord], list[tuple[str, str]]] = ([], [(src.path, str(e))])
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - read_image converts what it knows; one file never stops the run
        result = ([], [(src.path, f"{src.path}: unexpected {type(e).__name__} ({e})")])
    else:
        image, scale = resize_max(image, max_size)
        atomic_save_npy(Path(out) / "records" / f"{record.key}.npy", image)
        record.meta["scale"] = scale
        result = ([record], [])
    save_job(out, record.key, *result)
    return result


def prepare_folder(
    root: str,
    out: str,
    manifest: str | None = None,
    min_size: int = 16,
    max_size: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build a cache from a folder of images.

    Args:
        root: folder with class sub-folders (``root/<class>/...``), or the base of the manifest's paths.
        out: cache directory.
        manifest: CSV with ``path``, ``label`` and optional ``patient_id``, ``split``; None = sub-folders.
        min_size: smallest usable side (one patch); smaller images are skipped.
        max_size: downscale images whose longest side exceeds this; None = native pixels.
        val_fraction: share of patients (without a manifest split) drawn for ``val``, per label.
        test_fraction: share drawn for ``test`` (0 = no test split unless the manifest gives one).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.

    Returns:
        the cache directory.

    Raises:
        PrepareError: missing root or manifest column, a bad input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: image folder not found")
    problems: list[tuple[str, str]] = []
    items = _from_manifest(base, Path(manifest), problems) if manifest else _from_folders(base)
    if problems and on_error == "fail":
        raise PrepareError(f"{problems[0][0]}: {problems[0][1]}")
    assign_splits(items, val_fraction, test_fraction, seed)
    classes = sorted({it.label for it in items if it.label is not None})
    labels = {"label": LabelSpec("multiclass", classes)} if classes else {}
    writer = CacheWriter(out, "folder", overwrite=overwrite)
    settings = {"root": str(base.resolve()), "manifest": manifest, "min_size": min_size, "max_size": max_size,
                "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}  # fmt: skip
    sources = {it.path: fingerprint(it.path) for it in items}
    if manifest:
        sources[str(manifest)] = fingerprint(manifest)
    writer.check_settings(settings, sources)
    results: dict[str, tuple[list[CacheRecord], list[tuple[str, str]]]] = {}
    todo = []
    for it in items:
        record = CacheRecord(
            key=it.key,
            split=it.split or "train",
            patient_id=it.patient_id,
            labels={"label": classes.index(it.label)} if classes and it.label is not None else {},
            pretrain=it.split != "test",
            source=it.path,
            meta={"label_name": it.label},
        )
        done = writer.load_job(it.key)
        if done is None:
            todo.append((it, record))
        else:
            results[it.key] = done
    run = functools.partial(_run, out=str(out), min_size=min_size, max_size=max_size)
    runner = run_parallel(run, todo, workers, "folder", progress)
    try:
        for (it, _), result in runner:
            results[it.key] = result
            if result[1] and on_error == "fail":
                raise PrepareError(f"{result[1][0][0]}: {result[1][0][1]}")
    finally:
        runner.close()
    for key in sorted(results):
        for record in results[key][0]:
            writer.add(record)
        problems += results[key][1]
    for where, reason in problems:
        writer.skip(where, reason)
    return writer.finalize(labels, extra={"classes": classes})
