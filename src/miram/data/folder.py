"""``miram prepare folder``: your own images (class sub-folders or a CSV manifest) → a cache.

Inputs: PNG (8/16-bit), JPEG, TIFF and DICOM (``.dcm``/``.dicom``), decoded by
:func:`miram.data.images.read_image` (8-bit ×257 → uint16). Either ``root/<class>/**/<image>`` (files
directly in ``root`` are unlabelled) or ``manifest``: a CSV with ``path`` and ``label`` and optional
``patient_id`` and ``split`` (train / val / test) columns; relative paths are taken from ``root``.

Splits are by patient (:class:`PatientRule`: the manifest's ``patient_id``, else the DICOM PatientID with
CBIS-DDSM's per-image tag reduced to ``P_#####``, else the file itself; or a regex over the path or the
PatientID), stratified by label and seeded; the patients and images per split are reported. Images
smaller than ``min_size`` or all zero are skipped with the reason.
"""

from __future__ import annotations

import csv
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from miram.data.cache import (
    CacheRecord,
    CacheWriter,
    LabelSpec,
    PrepareError,
    atomic_save_npy,
    fingerprint,
    record_key,
    save_job,
)
from miram.data.crops import resize_max
from miram.data.dicom import read_header
from miram.data.images import RASTER_SUFFIXES, ImageError, read_image
from miram.data.parallel import run_parallel
from miram.data.splits import draw_splits, split_report

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


# CBIS-DDSM writes the image's subject folder name into PatientID (cbis-ddsm.md §4.1): the patient is P_#####
CBIS_SUBJECT = re.compile(r"(?:Mass|Calc)-(?:Training|Test)_(P_\d{5})_(?:LEFT|RIGHT)_(?:CC|MLO)")


@dataclass(frozen=True)
class PatientRule:
    """How a file's patient is found.

    Attributes:
        regex: None = the automatic rule (manifest ``patient_id``, else the DICOM PatientID with CBIS-DDSM's
            per-image tag reduced to its ``P_#####``, else a CBIS-DDSM subject name in the path, else the
            file itself); otherwise a pattern whose group ``patient`` (or first group, or whole match) is
            the patient.
        source: what ``regex`` reads: ``path`` (relative to the root, ``/``-separated) or ``dicom``
            (the PatientID tag).
    """

    regex: str | None = None
    source: Literal["path", "dicom"] = "path"

    def describe(self) -> str:
        return "auto (manifest, DICOM PatientID, CBIS-DDSM subject, file)" if self.regex is None else (
            f"regex {self.regex!r} over the {self.source}"
        )  # fmt: skip

    def patient(self, path: Path, rel: str) -> str:
        """The patient of ``path`` (``rel``: its path under the root).

        Raises:
            ImageError: the regex does not match (or the DICOM header cannot be read for it).
        """
        if self.regex is not None:
            text = _dicom_patient(path) if self.source == "dicom" else rel
            m = re.search(self.regex, text or "")
            if m is None:
                raise ImageError(
                    f"{path}: patient regex {self.regex!r} does not match the {self.source} {text!r}"
                )
            group = (
                m.group("patient") if "patient" in m.re.groupindex else m.group(1) if m.re.groups else m[0]
            )
            if not group:
                raise ImageError(f"{path}: patient regex {self.regex!r} matched an empty patient in {text!r}")
            return group
        for text in (_dicom_patient(path), rel):
            m = CBIS_SUBJECT.search(text or "")
            if m:
                return m.group(1)
        return _dicom_patient(path) or path.stem


def _dicom_patient(path: Path) -> str | None:
    if path.suffix.lower() not in (".dcm", ".dicom"):
        return None
    try:
        return str(read_header(path).get("PatientID", "") or "").strip() or None
    except Exception:  # noqa: BLE001 - the decode step reports the file
        return None


def _from_manifest(
    root: Path, manifest: Path, rule: PatientRule, problems: list[tuple[str, str]]
) -> list[FolderItem]:
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
        try:
            patient = row.get("patient_id") if rule.regex is None else None
            patient = patient or rule.patient(path, row["path"])
        except ImageError as e:
            problems.append((where, str(e)))
            continue
        items.append(
            FolderItem(
                str(path),
                record_key(row["path"]),
                row["label"] or None,
                patient,
                SPLIT_NAMES[split] if split else None,
            )
        )
    return items


def _from_folders(root: Path, rule: PatientRule, problems: list[tuple[str, str]]) -> list[FolderItem]:
    items = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        try:
            patient = rule.patient(path, rel.as_posix())
        except ImageError as e:
            problems.append((str(path), str(e)))
            continue
        items.append(FolderItem(str(path), record_key(rel.as_posix()), label, patient, None))
    return items


def assign_splits(items: list[FolderItem], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Give items without a split one by patient, stratified by the patient's first label, seeded."""
    by_patient: dict[str, str] = {}
    for it in items:
        if it.split is None:
            by_patient.setdefault(it.patient_id, it.label or "")
    split_of = draw_splits(by_patient, val_fraction, test_fraction, seed)
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
    patient_regex: str | None = None,
    patient_source: Literal["path", "dicom"] = "path",
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
        patient_regex: how to find each image's patient (splits are drawn by patient): None = the manifest's
            ``patient_id``, else the DICOM PatientID (CBIS-DDSM's per-image ``Mass-Training_P_00173_LEFT_CC``
            becomes ``P_00173``), else a CBIS-DDSM subject name in the path, else the file; or a regex whose
            group ``patient`` (or first group) is the patient. A file it does not match is a bad input.
        patient_source: what ``patient_regex`` reads: ``path`` (relative to ``root``) or ``dicom``
            (PatientID).

    Returns:
        the cache directory (``cache.json → patients`` holds the rule and patients/images per split, also
        printed).

    Raises:
        PrepareError: missing root or manifest column, a bad input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: image folder not found")
    problems: list[tuple[str, str]] = []
    if patient_regex is not None:
        try:
            re.compile(patient_regex)
        except re.error as e:
            raise PrepareError(f"patient_regex {patient_regex!r}: not a regular expression ({e})") from e
    rule = PatientRule(patient_regex, patient_source)
    items = (
        _from_manifest(base, Path(manifest), rule, problems)
        if manifest
        else _from_folders(base, rule, problems)
    )
    if problems and on_error == "fail":
        raise PrepareError(f"{problems[0][0]}: {problems[0][1]}")
    assign_splits(items, val_fraction, test_fraction, seed)
    classes = sorted({it.label for it in items if it.label is not None})
    labels = {"label": LabelSpec("multiclass", classes)} if classes else {}
    writer = CacheWriter(out, "folder", overwrite=overwrite)
    settings = {"root": str(base.resolve()), "manifest": manifest, "min_size": min_size, "max_size": max_size,
                "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                "patients": rule.describe()}  # fmt: skip
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
    report = split_report(writer.records)
    path = writer.finalize(
        labels, extra={"classes": classes, "patients": {"rule": rule.describe(), "splits": report}}
    )
    counts = "; ".join(f"{k}: {v['patients']} patients, {v['images']} images" for k, v in report.items())
    print(f"{out}: patients by {rule.describe()}: {counts}; {len(writer.skipped)} skipped", file=sys.stderr)
    return path
