"""``miram prepare cbis-ddsm``: a CBIS-DDSM download (TCIA layouts A–D or the Kaggle JPEGs) → a cache.

Steps: read the four CSVs (traps handled in :mod:`miram.data.cbis_ddsm.case_csv`) → resolve every row's
files (:mod:`miram.data.cbis_ddsm.layout`) → draw the patient-grouped validation split
(:mod:`miram.data.cbis_ddsm.labels`) → decode each full mammogram once in a worker process, cutting its
lesion crops and background tiles (:mod:`miram.data.cbis_ddsm.job`) → publish the cache.

Bad-input policy (``on_error``): problems found before decoding (CSV rows with unknown values, rows
pointing nowhere) and during decoding (truncated / non-DICOM files, crop/mask not resolvable, empty,
all-zero or too small images) are listed in ``skipped.csv`` with ``skip``, or stop the run with a message
naming the file and the problem with ``fail`` (pre-decoding problems stop it before any decoding).
Missing CSV columns, a missing root or CSV folder always stop at the start. An empty result is an error.
"""

from __future__ import annotations

import functools
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import CacheRecord, CacheWriter, PrepareError, fingerprint
from miram.data.cbis_ddsm.case_csv import Lesion, read_case_csvs
from miram.data.cbis_ddsm.job import ImageJob, JobResult, JobSettings, LesionTask, run_job
from miram.data.cbis_ddsm.labels import (
    LABELS,
    cross_split_patients,
    lesion_labels,
    lesion_meta,
    record_split,
    tile_labels,
    val_patients,
)
from miram.data.cbis_ddsm.layout import ResolveError, index_tree, resolve
from miram.data.parallel import run_parallel


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _plan(
    lesions: list[Lesion],
    root: str,
    val: set[str],
    crossed: set[str],
    tiles_per_image: int,
    skipped: list[tuple[str, str]],
) -> list[ImageJob]:
    """Resolve files and group lesions by full image; unresolvable rows go to ``skipped``."""
    index = index_tree(root)
    jobs: dict[str, ImageJob] = {}
    first_of_view: dict[tuple[str, str, str], str] = {}
    for les in sorted(lesions, key=lambda x: x.key):
        try:
            full = [str(p) for p in resolve(index, les.image_path)]
        except ResolveError as e:
            skipped.append((les.key, f"{les.source}: image file path: {e}"))
            continue
        files: list[str] = []
        reasons = []
        for column, path in (
            ("cropped image file path", les.crop_path),
            ("ROI mask file path", les.roi_path),
        ):
            if not path:
                continue
            try:
                files += [str(p) for p in resolve(index, path) if str(p) not in files]
            except ResolveError as e:
                reasons.append(f"{column}: {e}")
        if not files:
            skipped.append((les.key, f"{les.source}: " + "; ".join(reasons)))
            continue
        split = record_split(les, val)
        pretrain = split != "test" and les.patient_id not in crossed
        record = CacheRecord(
            key=les.key,
            split=split,
            patient_id=les.patient_id,
            labels=lesion_labels(les),
            pretrain=pretrain,
            source=files[0],
            meta=lesion_meta(les),
        )
        job = jobs.get(les.subject)
        # the same breast view can sit in a mass and a calc file as two DICOM copies: tile only one, clear of
        # the lesions of both
        view_key = (les.patient_id, les.side, les.view)
        first_subject = first_of_view.setdefault(view_key, les.subject)
        if first_subject != les.subject:
            jobs[first_subject].avoid.append(LesionTask(files, record))
        if job is None:
            first = first_subject == les.subject
            tiles = tiles_per_image if pretrain and first else 0
            tile_record = CacheRecord(
                key=les.subject,
                split=split,
                patient_id=les.patient_id,
                labels=tile_labels(les),
                pretrain=pretrain,
                source=full[0],
                meta={k: v for k, v in lesion_meta(les).items() if k not in ("abnormality_id", "pathology")},
            )
            job = jobs[les.subject] = ImageJob(les.subject, full, tiles=tiles, tile_record=tile_record)
        job.lesions.append(LesionTask(files, record))
    return [jobs[k] for k in sorted(jobs)]


def _sources(csv_dir: str, jobs: list[ImageJob]) -> dict[str, str]:
    """Fingerprints of the CSVs and of every file a job reads (a changed file must not resume)."""
    files = {str(p) for p in Path(csv_dir).glob("*.csv")}
    for job in jobs:
        files.update(job.full_files)
        for task in (*job.lesions, *job.avoid):
            files.update(task.files)
    return {f: fingerprint(f) for f in sorted(files)}


def prepare_cbis_ddsm(
    root: str,
    csv_dir: str,
    out: str,
    crop_context: float = 0.0,
    max_size: int | None = None,
    tiles_per_image: int = 0,
    tile_sizes: list[int] | None = None,
    min_size: int = 16,
    min_crop: int = 128,
    val_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    flip_to: Literal["none", "left", "right"] = "none",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build a training cache of CBIS-DDSM lesion crops (and optional background tiles).

    Args:
        root: the download root: TCIA layouts A–D (any folder above the subject folders) or the Kaggle
            folder holding ``jpeg/``.
        csv_dir: folder with the ``*case_description*.csv`` files.
        out: cache directory (created; an interrupted run resumes here).
        crop_context: margin on each side of the ROI mask's bounding box, as a fraction of its longer side;
            0 = the paper's tight square (paper.md §5.1).
        max_size: downscale crops and tiles whose side exceeds this (area filter); None = native pixels.
        tiles_per_image: background tiles per full image for pre-training (inside the breast, clear of
            lesions); only for images allowed in pre-training pools.
        tile_sizes: tile sides in native pixels, cycled over the tiles of an image (default ``[224]``).
        min_size: smallest usable full-image side (one patch); smaller images are skipped.
        min_crop: smallest lesion crop side in native pixels: smaller ROIs are enlarged to it around their
            centre, never dropped (``cbis-ddsm.md`` §12.3: 128–224 px); 0 = the ROI's own square.
        val_fraction: share of official-train patients moved to ``val`` (stratified, by patient).
        seed: seed of the validation draw and the tile positions.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv`` and goes on; ``fail`` stops at the first.
        flip_to: mirror images so the breast lies on this side (``none`` keeps them as stored).
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.

    Returns:
        the cache directory.

    Raises:
        PrepareError: a bad input under ``on_error=fail``, or no usable record.
    """
    sizes = tuple(tile_sizes or [224])
    lesions, problems = read_case_csvs(csv_dir)
    if problems and on_error == "fail":
        where, reason = problems[0]
        raise PrepareError(
            f"{where}: {reason} ({len(problems)} bad CSV row(s); use --on_error skip to skip them)"
        )
    crossed = cross_split_patients(lesions)
    val = val_patients(lesions, val_fraction, seed)
    skipped: list[tuple[str, str]] = list(problems)
    jobs = _plan(lesions, root, val, set(crossed), tiles_per_image, skipped)
    if skipped and on_error == "fail":
        where, reason = skipped[0]
        raise PrepareError(f"{where}: {reason} (stopped before decoding; use --on_error skip to skip it)")
    writer = CacheWriter(out, "cbis-ddsm", overwrite=overwrite)
    settings = JobSettings(
        out=str(Path(out)), crop_context=crop_context, max_size=max_size, min_size=min_size,
        min_crop=min_crop, tile_sizes=sizes, flip_to=flip_to, seed=seed,
    )  # fmt: skip
    writer.check_settings({
        "root": str(Path(root).resolve()), "csv_dir": str(Path(csv_dir).resolve()),
        "crop_context": crop_context, "max_size": max_size, "tiles_per_image": tiles_per_image,
        "tile_sizes": list(sizes), "min_size": min_size, "min_crop": min_crop, "val_fraction": val_fraction,
        "seed": seed, "flip_to": flip_to,
    }, sources=_sources(csv_dir, jobs))  # fmt: skip
    results: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        done = writer.load_job(job.key)
        if done is None:
            todo.append(job)
        else:
            results[job.key] = JobResult(job.key, *done)
    if results:
        _say(f"{out}: resuming, {len(results)} of {len(jobs)} images already done")
    runner = run_parallel(functools.partial(run_job, s=settings), todo, workers, "cbis-ddsm", progress)
    try:
        for job, result in runner:
            results[job.key] = result
            if result.skipped and on_error == "fail":
                where, reason = result.skipped[0]
                raise PrepareError(f"{where}: {reason} (use --on_error skip to skip bad inputs)")
    finally:
        runner.close()
    for key in sorted(results):
        for record in results[key].records:
            writer.add(record)
        skipped += results[key].skipped
    for item, reason in skipped:
        writer.skip(item, reason)
    counts: dict[str, int] = defaultdict(int)
    for r in writer.records:
        counts["tiles" if "tile" in r.meta else r.meta["abnormality_type"]] += 1
    extra: dict[str, Any] = {
        "cross_split_patients": crossed,
        "num_images": len(jobs),
        "counts": dict(counts),
        "settings": {
            "crop_context": crop_context,
            "min_crop": min_crop,
            "max_size": max_size,
            "flip_to": flip_to,
            "seed": seed,
        },
    }
    path = writer.finalize(LABELS, extra=extra)
    _say(
        f"{out}: {len(writer.records)} records ({dict(counts)}) from {len(jobs)} images; "
        f"{len(writer.skipped)} skipped (see skipped.csv); {len(crossed)} patients in both official splits "
        "kept out of pre-training pools"
    )
    return path
