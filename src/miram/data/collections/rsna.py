"""``miram prepare rsna``: RSNA Screening Mammography Breast Cancer Detection (Kaggle 2022–23) → whole films.

Layout, as Kaggle ships it::

    <root>/train.csv                                  one row per image
    <root>/train_images/<patient_id>/<image_id>.dcm   uncompressed, JPEG 2000 or JPEG lossless DICOM
    <root>/test.csv, <root>/test_images/              not read: the competition's hidden test has no labels

Columns read: patient_id, image_id, laterality, view, cancer, biopsy, invasive, BIRADS, density (required);
site_id, machine_id, age, implant, difficult_negative_case (kept in meta when present).

Join key: ``(patient_id, image_id)`` → ``train_images/<patient_id>/<image_id>.dcm``. Reported, not fatal
(listed in ``skipped.csv`` under ``on_error=skip``): a row whose file is missing, a file under
``train_images/`` with no row (or not at ``<patient_id>/<image_id>``), a second row for one image, and a row
with an unreadable value (the problem names the row and column; rows are numbered as a spreadsheet shows
them, the header being row 1). JPEG 2000 and JPEG lossless files need the ``miram[dicom]`` extra; a file
whose decoder is missing is a skipped input naming the transfer syntax.

Labels (:mod:`miram.data.collections.schema` plus RSNA's own):

- ``cancer`` ← cancer; ``biopsy`` ← biopsy; ``invasive`` ← invasive (binary, 0/1).
- ``birads`` ← BIRADS (RSNA uses 0, 1, 2; class index = category); ``density`` ← density (A–D → 0–3);
  ``laterality`` ← laterality; ``view`` ← view (CC, MLO; ML, LM, AT, ... → other).
- Empty → None (unknown): BIRADS and density are empty for many images.

Meta: patient_id, image_id, site_id, machine_id, age (years), implant (0/1), difficult_negative_case
(bool).

Splits: the competition's labelled data have no official split; val and test are drawn by patient,
stratified by the patient's cancer status (any cancer image), seeded. Test films never enter pre-training
pools.

Tolerated: column names in any case and with stray spaces (``BIRADS`` / ``birads``), a UTF-8 byte-order
mark, values with stray spaces, numbers written as ``0.0`` / ``1.0``, ``True``/``False`` flags,
``L``/``LEFT``, files named ``.dicom`` instead of ``.dcm``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, birads_index, common_labels, density_index, side_letter
from miram.data.collections.tables import index_images, read_table
from miram.data.films import Film, FilmSettings, prepare_films
from miram.data.splits import draw_splits

SOURCE = "rsna"
TRAIN_CSV = "train.csv"
IMAGE_FOLDER = "train_images"
IMAGE_SUFFIXES = (".dcm", ".dicom")  # preference order when both exist
REQUIRED = (
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "cancer",
    "biopsy",
    "invasive",
    "birads",
    "density",
)
LABELS: dict[str, LabelSpec] = {
    **{name: COMMON[name] for name in ("cancer", "birads", "density", "laterality", "view")},
    "biopsy": LabelSpec("binary", ["no", "yes"]),
    "invasive": LabelSpec("binary", ["no", "yes"]),
}
LICENCE = {
    "name": "RSNA Screening Mammography Breast Cancer Detection: Kaggle competition rules (competition data)",
    "weights_restricted": False,
    "notice": "RSNA Screening Mammography competition data: non-commercial research use only, under the "
    "Kaggle competition rules.",
}
_FLAGS = {"0": 0, "1": 1, "false": 0, "true": 1}


def flag(text: str) -> int | None:
    """``0``/``1``/``0.0``/``1.0``/``True``/``False`` → 0 or 1; empty → None.

    Raises:
        ValueError: anything else.
    """
    text = text.strip().lower()
    if not text:
        return None
    if text in _FLAGS:
        return _FLAGS[text]
    if float(text) in (0.0, 1.0):  # float() raises ValueError for text
        return int(float(text))
    raise ValueError(text)


def _identifier(text: str) -> int | str | None:
    """``49`` / ``49.0`` → 49 (site and machine ids); empty → None; other text kept."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else text


@dataclass
class _Row:
    where: str
    patient_id: str
    image_id: str
    labels: dict[str, Any]
    laterality: str
    view: str
    meta: dict[str, Any]


def _rows(rows: list[tuple[int, dict[str, str]]], csv_path: Path, problems: list[tuple[str, str]]) -> tuple[
    dict[tuple[str, str], _Row], set[tuple[str, str]], dict[str, str]
]:  # fmt: skip
    """Readable rows by ``(patient_id, image_id)``; every pair listed; each patient's cancer stratum."""
    found: dict[tuple[str, str], _Row] = {}
    listed: set[tuple[str, str]] = set()
    stratum: dict[str, str] = {}
    for n, row in rows:
        patient, image = row["patient_id"], row["image_id"]
        where = f"{csv_path} row {n} / {patient or '?'}/{image or '?'}"
        listed.add((patient, image))
        bad = []
        if not patient or not image:
            bad.append("empty patient_id or image_id")
        flags: dict[str, int | None] = {}
        for column in ("cancer", "biopsy", "invasive", "implant", "difficult_negative_case"):
            try:
                flags[column] = flag(row.get(column, ""))
            except ValueError:
                bad.append(f"{column} {row[column]!r} unreadable (expected 0 or 1)")
        if patient:
            # a patient's stratum does not depend on which of their rows are usable: "1" with any cancer
            # image, "0" with only known negatives, "" with none known
            known = "" if flags.get("cancer") is None else str(flags["cancer"])
            stratum[patient] = max(stratum.get(patient, ""), known)
        laterality = side_letter(row["laterality"])
        if laterality is None:
            bad.append(f"laterality {row['laterality']!r} unreadable (expected L or R)")
        if not row["view"]:
            bad.append("view empty")
        birads = birads_index(row["birads"])
        if row["birads"] and birads is None:
            bad.append(f"BIRADS {row['birads']!r} unreadable (expected 0-6)")
        density = density_index(row["density"])
        if row["density"] and density is None:
            bad.append(f"density {row['density']!r} unreadable (expected A-D)")
        age = None
        if row.get("age"):
            try:
                age = float(row["age"])
            except ValueError:
                bad.append(f"age {row['age']!r} unreadable")
        if (patient, image) in found:
            bad.append(f"image repeated (first at {found[(patient, image)].where})")
        if bad:
            problems.append((where, "; ".join(bad)))
            continue
        found[(patient, image)] = _Row(
            where=where,
            patient_id=patient,
            image_id=image,
            labels={
                "cancer": flags["cancer"],
                "biopsy": flags["biopsy"],
                "invasive": flags["invasive"],
                "birads": birads,
                "density": density,
                **common_labels(laterality, row["view"]),
            },
            laterality=laterality or "",
            view=row["view"].upper(),
            meta={
                "patient_id": patient,
                "image_id": image,
                "site_id": _identifier(row.get("site_id", "")),
                "machine_id": _identifier(row.get("machine_id", "")),
                "age": age,
                "implant": flags["implant"],
                "difficult_negative_case": (
                    None
                    if flags["difficult_negative_case"] is None
                    else bool(flags["difficult_negative_case"])
                ),
            },
        )
    return found, listed, stratum


def prepare_rsna(
    root: str,
    out: str,
    max_size: int | None = None,
    flip_to: Literal["none", "left", "right"] = "none",
    spacing_mm: float | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 2,
    on_error: Literal["skip", "fail"] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    train_csv: str | None = None,
) -> Path:
    """Build a cache of the RSNA Screening Mammography (Kaggle) training films with their labels.

    Args:
        root: the Kaggle download: holds ``train.csv`` and ``train_images/`` (``test*`` is not read).
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (spacing follows); None = native pixels.
        flip_to: mirror films so the breast lies on this side (``none`` keeps them as stored).
        spacing_mm: pixel spacing (mm) to assume for files with neither PixelSpacing nor ImagerPixelSpacing.
        val_fraction: share of patients drawn for ``val``, by patient, per cancer status.
        test_fraction: share of patients drawn for ``test`` (no official split: the Kaggle test has no
            labels), by patient, per cancer status.
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv`` and goes on; ``fail`` stops at the first.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        train_csv: the labels (default ``<root>/train.csv``).

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root, image folder, CSV or column; a bad input under ``on_error=fail``; or no
            usable film.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: RSNA root not found")
    folder = base / IMAGE_FOLDER
    if not folder.is_dir():
        raise PrepareError(f"{folder}: image folder not found (expected <patient_id>/<image_id>.dcm in it)")
    csv_path = Path(train_csv) if train_csv else base / TRAIN_CSV
    table = read_table(csv_path, REQUIRED, "RSNA labels")
    problems: list[tuple[str, str]] = []
    rows, listed, strata = _rows(table, csv_path, problems)
    files = index_images(folder, IMAGE_SUFFIXES, problems)
    split_of = draw_splits(strata, val_fraction, test_fraction, seed)

    films: list[Film] = []
    rows_without_image = 0
    for (patient, image), row in rows.items():
        path = files.get((patient, image))
        if path is None:
            rows_without_image += 1
            problems.append((row.where, f"no image file {folder / patient / f'{image}.dcm'}"))
            continue
        split = split_of[patient]
        films.append(
            Film(
                path=str(path),
                key=record_key(f"{patient}/{image}"),
                patient_id=patient,
                split=split,
                labels=row.labels,
                laterality=row.laterality,
                view=row.view,
                pretrain=split != "test",
                meta=row.meta,
            )
        )
    stray = sorted((p, key) for key, p in files.items() if key not in listed)
    for path, (patient, _) in stray:
        where = "" if patient else f" (not at {IMAGE_FOLDER}/<patient_id>/<image_id>.dcm)"
        problems.append((str(path), f"not in {csv_path}{where}"))
    cancer_per_split = Counter(f.split for f in films if f.labels["cancer"] == 1)
    join = {
        "join": f"{TRAIN_CSV} (patient_id, image_id) -> {IMAGE_FOLDER}/<patient_id>/<image_id>.dcm",
        "rows": len(table),
        "images": len(files),
        "rows_without_image": rows_without_image,
        "images_without_row": len(stray),
    }
    extra: dict[str, Any] = {
        "join": join,
        "split_strata": "patient cancer status (any cancer image)",
        "cancer_films_per_split": dict(cancer_per_split),
        "licence": LICENCE,
    }
    check = {
        "root": str(base.resolve()),
        "train_csv": str(csv_path.resolve()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    settings = FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm)
    return prepare_films(
        sorted(films, key=lambda f: f.key),
        problems,
        source=SOURCE,
        labels=LABELS,
        settings=settings,
        check=check,
        metadata_files=[str(csv_path)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra=extra,
    )
