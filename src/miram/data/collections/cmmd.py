"""``miram prepare cmmd``: The Chinese Mammography Database (CMMD, TCIA) → a cache of whole films.

Layout (the NBIA retriever's TCIA tree)::

    <root>/CMMD/<PatientID>/<study date-...-uid>/<series ...>/1-1.dcm, 1-2.dcm ...
    <root>/CMMD_clinicaldata_revision.xlsx          (``clinical``: elsewhere, or a CSV export of the sheet)

Folder names vary between retriever versions, so every ``*.dcm`` below ``root`` (any depth) is an image and
its header says whose it is: ``PatientID`` (e.g. ``D1-0001``) and ``ImageLaterality`` (``L``/``R``; then
``Laterality``), with ``ViewPosition`` for the view when present. The pixels are 8-bit (BitsStored 8,
recorded in each record's ``bits_stored``).

The clinical sheet has ONE ROW PER BREAST: ``ID1`` (patient), ``LeftRight`` (L/R), ``Age``, ``number``
(images of the breast), ``abnormality`` (calcification / mass / both), ``classification`` (Benign /
Malignant) and ``subtype`` (Luminal A / Luminal B / HER2-enriched / triple negative; malignant breasts
only, empty elsewhere). Required columns: ``ID1``, ``LeftRight``, ``abnormality``, ``classification``.

Join key: (``ID1``, ``LeftRight``) of a row = (``PatientID``, ``ImageLaterality``) of an image header; a row
usually joins two images (CC and MLO). Reported as problems (skipped under ``on_error=skip``): a row no
image joins; an image whose patient and side have no row; an image whose header has no laterality; an
unreadable header; a second row for the same breast; a row with an unreadable value (named by row and
column). ``cache.json → join`` counts them.

Labels (:mod:`miram.data.collections.schema`): ``pathology`` (benign / malignant, ``classification``),
``cancer`` (yes when malignant), ``abnormality`` (calcification / mass / both), ``subtype`` (the four
molecular subtypes; None where the sheet has none), ``laterality`` and ``view`` (ViewPosition; None when
the header has none: the view is not guessed from the file order). ``meta`` keeps the CMMD ID, the row's
values as written (age, number, abnormality, classification, subtype), its row number and the study,
series and SOP instance UIDs.

Splits: CMMD has no official split; ``val`` and ``test`` are drawn by patient, stratified by the patient's
worst classification (malignant if any breast is), seeded. Test films never enter pre-training.

Tolerated: column names in any case with stray spaces or underscores; values with stray spaces and in any
case (``" r "``, ``malignant``, ``Calcification``, ``d1-0001``), ``LEFT``/``RIGHT`` for L/R, numbers
written as ``2.0``; an unreadable or empty age (kept as None); subtypes written ``HER2 enriched``,
``Luminal-A``, ``Triple-negative``; empty rows; a header without PatientID when a path folder names a
patient of the sheet; a CSV export (``,``, ``;`` or tab separated) of the sheet instead of the XLSX.

Licence: CC BY 4.0 (TCIA, DOI 10.7937/tcia.eqde-4b16): trained weights may be published; cite the DOI.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections import tables
from miram.data.collections.schema import COMMON, common_labels, side_letter
from miram.data.dicom import DicomError, read_header
from miram.data.dicom import laterality as dicom_laterality
from miram.data.dicom import view as dicom_view
from miram.data.films import Film, FilmSettings, prepare_films, split_films

SOURCE = "cmmd"
CLINICAL_NAME = "CMMD_clinicaldata_revision.xlsx"
ABNORMALITIES = ("calcification", "mass", "both")
SUBTYPES = ("Luminal A", "Luminal B", "HER2-enriched", "triple negative")
CLASSIFICATIONS = ("benign", "malignant")
REQUIRED = ("ID1", "LeftRight", "abnormality", "classification")
OPTIONAL = ("Age", "number", "subtype")

LABELS: dict[str, LabelSpec] = {
    "pathology": COMMON["pathology"],
    "cancer": COMMON["cancer"],
    "abnormality": LabelSpec("multiclass", list(ABNORMALITIES)),
    "subtype": LabelSpec("multiclass", list(SUBTYPES)),
    "laterality": COMMON["laterality"],
    "view": COMMON["view"],
}

LICENCE = {
    "name": "CC BY 4.0 (The Cancer Imaging Archive, CMMD)",
    "weights_restricted": False,
    "notice": "CMMD is CC BY 4.0: cite it as The Chinese Mammography Database (CMMD), The Cancer Imaging "
    "Archive, DOI 10.7937/tcia.eqde-4b16.",
}


def _column(name: str) -> str:
    """A column name compared without case, spaces or underscores (``"Left Right "`` → ``leftright``)."""
    return re.sub(r"[\s_]+", "", name).lower()


def _word(text: str) -> str:
    """A value compared without case and with spaces, hyphens and underscores collapsed to one space."""
    return re.sub(r"[\s_-]+", " ", text).strip().lower()


_SUBTYPE_WORDS = {_word(s): s for s in SUBTYPES} | {"her2": "HER2-enriched", "tnbc": "triple negative"}


def _number(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def read_sheet(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-empty rows (with their 1-based row numbers) of the clinical XLSX or CSV.

    Raises:
        PrepareError: the file is missing or unreadable, or openpyxl is not installed for an XLSX.
    """
    return tables.read_sheet(path, "CMMD clinical sheet", "clinical")


@dataclass
class Breast:
    """One row of the clinical sheet."""

    row: int
    patient: str
    side: str
    labels: dict[str, Any]
    meta: dict[str, Any]
    malignant: bool
    films: list[Path] = field(default_factory=list)


def read_breasts(
    path: Path, problems: list[tuple[str, str]], rejected: dict[tuple[str, str], int] | None = None
) -> dict[tuple[str, str], Breast]:
    """The sheet's breasts by (patient, L/R); rows with unreadable values go to ``problems`` (and their
    breast to ``rejected``, with the row number, where patient and side are readable).

    Raises:
        PrepareError: missing file or required column.
    """
    header, rows = read_sheet(path)
    names = [_column(h) for h in header]
    where = {c: names.index(_column(c)) for c in (*REQUIRED, *OPTIONAL) if _column(c) in names}
    missing = [c for c in REQUIRED if c not in where]
    if missing:
        raise PrepareError(f"{path}: missing column(s) {missing}; the sheet has {[h for h in header if h]}")
    breasts: dict[tuple[str, str], Breast] = {}
    for n, row in rows:
        value = {c: (row[i] if i < len(row) else "") for c, i in where.items()}
        patient, side = value["ID1"].upper(), side_letter(value["LeftRight"])
        at = f"{path} row {n} / {patient} {value['LeftRight']}"
        classification = _word(value["classification"])
        abnormality = _word(value["abnormality"])
        subtype_text = value.get("subtype", "")
        subtype = _SUBTYPE_WORDS.get(_word(subtype_text)) if subtype_text else None
        bad = [
            (column, text, expected)
            for column, text, ok, expected in (
                ("ID1", patient, bool(patient), "a patient ID"),
                ("LeftRight", value["LeftRight"], side is not None, "L or R"),
                (
                    "classification",
                    value["classification"],
                    classification in CLASSIFICATIONS,
                    "Benign or Malignant",
                ),
                (
                    "abnormality",
                    value["abnormality"],
                    not abnormality or abnormality in ABNORMALITIES,
                    "calcification, mass or both",
                ),
                ("subtype", subtype_text, not subtype_text or subtype is not None, " / ".join(SUBTYPES)),
            )
            if not ok
        ]
        if bad:
            problems.append(
                (at, "; ".join(f"column '{c}': unreadable value {t!r} (expected {e})" for c, t, e in bad))
            )
            if rejected is not None and patient and side is not None:
                rejected[(patient, side)] = n
            continue
        assert side is not None
        if (patient, side) in breasts:
            first = breasts[(patient, side)].row
            problems.append((at, f"a second row for patient {patient} side {side} (first: row {first})"))
            continue
        malignant = classification == "malignant"
        breasts[(patient, side)] = Breast(
            row=n,
            patient=patient,
            side=side,
            malignant=malignant,
            labels={
                "pathology": int(malignant),
                "cancer": int(malignant),
                "abnormality": ABNORMALITIES.index(abnormality) if abnormality else None,
                "subtype": SUBTYPES.index(subtype) if subtype else None,
            },
            meta={
                "cmmd_id": patient,
                "clinical_row": n,
                "age": _number(value.get("Age", "")),
                "number": _number(value.get("number", "")),
                "abnormality": value["abnormality"] or None,
                "classification": value["classification"],
                "subtype": subtype_text or None,
            },
        )
    return breasts


def dicom_files(root: Path) -> list[Path]:
    """Every ``*.dcm`` (any case) below ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file())


def _uid(ds: Any, name: str) -> str | None:
    return str(ds.get(name, "") or "").strip() or None


def find_films(
    root: Path,
    clinical: Path,
    breasts: dict[tuple[str, str], Breast],
    problems: list[tuple[str, str]],
    rejected: dict[tuple[str, str], int] | None = None,
) -> tuple[list[Film], dict[str, Any]]:
    """Join the image headers to the breasts (``rejected``: breasts whose row was unreadable, by row
    number); films get their split later.

    Returns:
        the films (split ``train``) and the join report.
    """
    patients = {p for p, _ in breasts}
    films: list[Film] = []
    files = dicom_files(root)
    unjoined = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            ds = read_header(path)
        except DicomError as e:
            problems.append((str(path), str(e)))
            continue
        patient = (_uid(ds, "PatientID") or "").upper() or None
        if patient is None:
            # an ID stripped from the header still names the patient's folder of the TCIA tree
            folders = path.relative_to(root).parts[:-1]
            patient = next((part.upper() for part in folders if part.upper() in patients), None)
        side = dicom_laterality(ds, path)
        view = dicom_view(ds, path)
        if patient is None:
            problems.append((str(path), f"{path}: no PatientID in the header (the join key with {clinical})"))
            continue
        if side is None:
            problems.append(
                (str(path), f"{path}: no ImageLaterality in the header (the join key with {clinical})")
            )
            continue
        breast = breasts.get((patient, side))
        bad_row = (rejected or {}).get((patient, side))
        if breast is None and bad_row is not None:
            problems.append(
                (str(path), f"{path}: its row ({clinical} row {bad_row}) has an unreadable value")
            )
            continue
        if breast is None:
            unjoined += 1
            problems.append(
                (str(path), f"{path}: not in {clinical} (no row with ID1 {patient}, side {side})")
            )
            continue
        breast.films.append(path)
        films.append(
            Film(
                path=str(path),
                key=record_key(rel),
                patient_id=patient,
                split="train",
                labels={**breast.labels, **common_labels(side, view)},
                laterality=side,
                view=view,
                meta={
                    **breast.meta,
                    "study_uid": _uid(ds, "StudyInstanceUID"),
                    "series_uid": _uid(ds, "SeriesInstanceUID"),
                    "sop_uid": _uid(ds, "SOPInstanceUID"),
                },
            )
        )
    lonely = [b for b in breasts.values() if not b.films]
    for b in sorted(lonely, key=lambda b: b.row):
        problems.append(
            (
                f"{clinical} row {b.row} / {b.patient} {b.side}",
                f"no image file: no DICOM file below {root} has PatientID {b.patient} and ImageLaterality "
                f"{b.side}",
            )
        )
    report = {
        "join": "clinical sheet (ID1, LeftRight) = DICOM header (PatientID, ImageLaterality)",
        "rows": len(breasts),
        "images": len(files),
        "rows_without_image": len(lonely),
        "images_without_row": unjoined,
        "films": len(films),
    }
    return films, report


def assign_splits(
    films: list[Film], breasts: dict[tuple[str, str], Breast], val_fraction: float, test_fraction: float,
    seed: int,
) -> None:  # fmt: skip
    """Draw val/test by patient, stratified by the patient's worst classification."""

    def malignant(film: Film) -> int:
        return int(breasts[(film.patient_id, str(film.laterality))].malignant)

    split_films(films, malignant, val_fraction, test_fraction, seed)


def prepare_cmmd(
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
    clinical: str | None = None,
) -> Path:
    """Build a cache of whole CMMD films with their breast's clinical labels.

    Args:
        root: the download folder (the one holding ``CMMD/``, or ``CMMD/`` itself); every ``*.dcm`` below it
            is read.
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (area filter; spacing follows); None =
            native pixels.
        flip_to: mirror films so the breast lies on this side; ``none`` keeps them as stored.
        spacing_mm: pixel spacing to assume for files without PixelSpacing or ImagerPixelSpacing.
        val_fraction: share of patients drawn for ``val`` (stratified by worst classification).
        test_fraction: share of patients drawn for ``test`` (CMMD has no official split).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        clinical: the clinical sheet (``CMMD_clinicaldata_revision.xlsx``, or a CSV export of it); None =
            ``<root>/CMMD_clinicaldata_revision.xlsx``. Reading an XLSX needs the ``collections`` extra.

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root, sheet or required column, a bad input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: CMMD download folder not found")
    sheet = Path(clinical) if clinical else base / CLINICAL_NAME
    problems: list[tuple[str, str]] = []
    rejected: dict[tuple[str, str], int] = {}
    breasts = read_breasts(sheet, problems, rejected)
    films, report = find_films(base, sheet, breasts, problems, rejected)
    assign_splits(films, breasts, val_fraction, test_fraction, seed)
    check = {
        "root": str(base.resolve()),
        "clinical": str(sheet.resolve()),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    return prepare_films(
        films,
        problems,
        source=SOURCE,
        labels=LABELS,
        settings=FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm),
        check=check,
        metadata_files=[str(sheet)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra={
            "join": report,
            "breasts": dict(Counter("malignant" if b.malignant else "benign" for b in breasts.values())),
            "licence": LICENCE,
        },
    )
