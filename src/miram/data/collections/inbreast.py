"""``miram prepare inbreast``: INbreast (full-field digital mammograms with lesion contours) → a cache.

Layout (as the authors distribute it)::

    <root>/AllDICOMs/<file id>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm
    <root>/AllXML/<file id>.xml        lesion contours (Apple XML plists); not every image has one
    <root>/INbreast.csv                ';'-separated (``csv``: elsewhere)

``INbreast.csv`` columns: ``Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads``.
Required: ``File Name`` (the 8-digit file id, often written as a number: ``20586908`` or ``20586908.0``),
``Laterality`` (L/R), ``View`` (CC/MLO), ``ACR`` (density 1–4) and ``Bi-Rads`` (``1`` … ``6`` with
``4a``/``4b``/``4c``). The release's ``INbreast.xls`` is not read: export it as a ``;``-separated CSV. A
``,``-separated file is refused (it would read as one column), with the fix in the message.

Join key: ``File Name`` = the first ``_`` field of a DICOM file name (any ``*.dcm`` below ``AllDICOMs``);
contours: ``AllXML/<file id>.xml``. Reported as problems (skipped under ``on_error=skip``): a row whose
image is missing; an image with no row (or a name without a file id); a contour file with no row or that
cannot be parsed (its image is skipped too: its lesions would be incomplete); a row with an unreadable value
(named by row and column); a second row or a second image of the same file id. An image without a contour
file has no findings (INbreast outlines every lesion it reports). ``cache.json → join`` counts them.

Patient: the release anonymises ``Patient ID`` (``removed``); the second field of the file name is a hash
shared by the images of one patient (all views, all exams), so it is the patient key. A ``Patient ID``
that is not a placeholder (``removed``, ``anonymised``, ``n/a``, ``-``, empty) takes precedence; a file name
without the hash falls back to the DICOM PatientID, then to the file id (the file is its own patient).
``meta → patient_from`` says which.

Labels (:mod:`miram.data.collections.schema`): ``density`` (ACR 1–4 → A–D), ``birads`` (0–6; ``4a``/``4b``/
``4c`` → 4, the string as written kept in ``meta → birads``), ``suspicious`` (yes when BI-RADS ≥ 4: the
assessment is the only malignancy signal the CSV gives; INbreast has no biopsy column), ``laterality``,
``view`` and ``lesions`` (multilabel over the contours' ROI names: mass, calcification, cluster, asymmetry,
distortion, spiculated region). ``Film.findings`` holds one ``{"box": [y0, x0, y1, x1], "name": ...}`` per
contour (the bounding box of its ``Point_px`` points, x then y; a one-point ROI, a single calcification,
gets a one-pixel box); names outside the six (``Point 1`` ...) stay as findings but not in ``lesions``, and
``cache.json → join → roi_names`` counts every name read.

Splits: no official split; ``val`` and ``test`` are drawn by patient, stratified by whether any of the
patient's images is suspicious, seeded. Test films never enter pre-training.

Tolerated: column names in any case with stray spaces; values with stray spaces and in any case; ``LEFT``/
``RIGHT``; the view written ``ML`` (INbreast's file names call MLO so); an empty laterality or view (taken
from the file name); file ids as numbers (``20586908.0``); empty lines; ROI names in any case and the
spellings ``Calcifications``, ``Assymetry``, ``Spiculated region``; points written ``(x, y)`` or ``{x, y}``.

Licence: distributed by its authors on request; the terms are theirs (no public licence states whether
trained weights may be published).
"""

from __future__ import annotations

import plistlib
import re
from collections import Counter
from csv import reader as csv_reader
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, birads_index, common_labels, density_index, side_letter
from miram.data.dicom import DicomError, read_header
from miram.data.films import Film, FilmSettings, prepare_films, split_films

SOURCE = "inbreast"
CSV_NAME = "INbreast.csv"
DICOM_DIR = "AllDICOMs"
XML_DIR = "AllXML"
LESIONS = ("mass", "calcification", "cluster", "asymmetry", "distortion", "spiculated region")
ROI_ALIASES = {"calcifications": "calcification", "assymetry": "asymmetry", "assymmetry": "asymmetry",
               "masses": "mass", "architectural distortion": "distortion"}  # fmt: skip
PLACEHOLDERS = {"", "removed", "anonymised", "anonymized", "anon", "n/a", "na", "none", "unknown", "-", "?"}
# column -> its name in INbreast.csv; compared without case, spaces or punctuation
COLUMNS = {
    "patient": "Patient ID",
    "age": "Patient age",
    "laterality": "Laterality",
    "view": "View",
    "date": "Acquisition date",
    "file": "File Name",
    "acr": "ACR",
    "birads": "Bi-Rads",
}
REQUIRED = ("file", "laterality", "view", "acr", "birads")

LABELS: dict[str, LabelSpec] = {
    "density": COMMON["density"],
    "birads": COMMON["birads"],
    "suspicious": LabelSpec("binary", ["no", "yes"]),
    "laterality": COMMON["laterality"],
    "view": COMMON["view"],
    "lesions": LabelSpec("multilabel", list(LESIONS)),
}

LICENCE = {
    "name": "INbreast: distributed by its authors on request (no public licence)",
    "weights_restricted": False,
    "notice": "INbreast is distributed by its authors (Moreira et al., Academic Radiology 2012) on request: "
    "obtain it from them and follow their terms, including for trained weights.",
}


def _column(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def file_id(value: Any) -> str | None:
    """``20586908``, ``"20586908.0"``, ``" 20586908 "`` → ``"20586908"``; anything else → None."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        return None
    return str(int(number))


def _view(value: str) -> str | None:
    """``CC``, ``MLO`` (also ``ML``: INbreast's name for it), another view as written, empty → None."""
    text = value.strip().upper()
    return {"ML": "MLO"}.get(text, text) or None


def roi_name(name: str) -> str:
    """A contour's ROI name, lower case with single spaces and the release's misspellings fixed."""
    text = re.sub(r"\s+", " ", name).strip().lower()
    return ROI_ALIASES.get(text, text)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def read_contours(path: Path) -> list[dict[str, Any]]:
    """The findings of one ``AllXML/<file id>.xml``: ``{"box": [y0, x0, y1, x1], "name": ...}`` per ROI with
    points.

    Raises:
        ValueError: not a plist of the INbreast form, or a point that is not two numbers.
    """
    try:
        with open(path, "rb") as f:
            data = plistlib.load(f)
    except Exception as e:  # noqa: BLE001 - plistlib raises ExpatError, InvalidFileException, ValueError...
        raise ValueError(f"not a readable plist ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("Images"), list):
        raise ValueError("no 'Images' array at the top of the plist")
    findings = []
    for image in data["Images"]:
        for roi in image.get("ROIs", []) if isinstance(image, dict) else []:
            if not isinstance(roi, dict):
                continue
            points = []
            for text in roi.get("Point_px", []) or []:
                numbers = _NUMBER.findall(str(text))
                if len(numbers) != 2:
                    raise ValueError(f"ROI {roi.get('Name')!r}: point {text!r} is not '(x, y)'")
                points.append((float(numbers[0]), float(numbers[1])))
            if not points:
                continue
            xs, ys = [max(p[0], 0.0) for p in points], [max(p[1], 0.0) for p in points]
            y0, x0 = min(ys), min(xs)
            # a single calcification is one point: keep a one-pixel box so it survives the downscale
            y1, x1 = max(max(ys), y0 + 1.0), max(max(xs), x0 + 1.0)
            findings.append({"box": [y0, x0, y1, x1], "name": roi_name(str(roi.get("Name", "")))})
    return findings


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")  # the release's Portuguese notes are not always UTF-8
    except OSError as e:
        raise PrepareError(f"{path}: cannot read ({e})") from e


@dataclass
class Row:
    """One row of ``INbreast.csv``."""

    row: int
    fileid: str
    patient: str | None
    side: str | None
    view: str | None
    density: int | None
    birads: int | None
    meta: dict[str, Any]


def read_rows(
    path: Path, problems: list[tuple[str, str]], rejected: dict[str, int] | None = None
) -> dict[str, Row]:
    """The CSV's rows by file id; rows with unreadable values go to ``problems`` (and their file id to
    ``rejected``, with the row number, where it is readable).

    Raises:
        PrepareError: missing, ``.xls``, ``,``-separated file or a missing required column.
    """
    if path.suffix.lower() in (".xls", ".xlsx"):
        raise PrepareError(
            f"{path}: a spreadsheet; export it as a ';'-separated CSV (INbreast.csv) and pass that with --csv"
        )
    if not path.is_file():
        xls = path.with_suffix(".xls")
        hint = (
            f"; {xls} is there: export it as a ';'-separated CSV to {path}"
            if xls.is_file()
            else " (pass --csv with its path)"
        )
        raise PrepareError(f"{path}: INbreast metadata CSV not found{hint}")
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
    if not lines:
        raise PrepareError(f"{path}: empty")
    if ";" not in lines[0]:
        sep = "','" if "," in lines[0] else "'\\t'" if "\t" in lines[0] else "nothing"
        raise PrepareError(
            f"{path}: the header is separated by {sep}, not ';' as in the released INbreast.csv "
            f"({lines[0][:80]!r}); save it again with ';' as the separator"
        )
    table = list(csv_reader(lines, delimiter=";"))
    header = [_column(h) for h in table[0]]
    where = {key: header.index(_column(name)) for key, name in COLUMNS.items() if _column(name) in header}
    missing = [COLUMNS[k] for k in REQUIRED if k not in where]
    if missing:
        raise PrepareError(f"{path}: missing column(s) {missing}; the file has {[h for h in table[0] if h]}")
    rows: dict[str, Row] = {}
    for n, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        value = {k: (cells[i].strip() if i < len(cells) else "") for k, i in where.items()}
        fileid = file_id(value["file"])
        at = f"{path} row {n} / {fileid or value['file']}"
        side = side_letter(value["laterality"])
        density, birads = density_index(value["acr"]), birads_index(value["birads"])
        bad = [
            (COLUMNS[k], value[k], expected)
            for k, ok, expected in (
                ("file", fileid is not None, "the file id, a number"),
                ("laterality", not value["laterality"] or side is not None, "L or R"),
                ("acr", not value["acr"] or density is not None, "1 to 4"),
                ("birads", not value["birads"] or birads is not None, "0 to 6, 4a, 4b or 4c"),
            )
            if not ok
        ]
        if bad:
            problems.append(
                (at, "; ".join(f"column '{c}': unreadable value {t!r} (expected {e})" for c, t, e in bad))
            )
            if rejected is not None and fileid is not None:
                rejected[fileid] = n
            continue
        assert fileid is not None
        if fileid in rows:
            problems.append((at, f"a second row for file id {fileid} (first: row {rows[fileid].row})"))
            continue
        patient = value.get("patient", "")
        age = value.get("age", "")
        rows[fileid] = Row(
            row=n,
            fileid=fileid,
            patient=None if patient.lower() in PLACEHOLDERS else patient,
            side=side,
            view=_view(value["view"]),
            density=density,
            birads=birads,
            meta={
                "file_id": fileid,
                "csv_row": n,
                "acr": value["acr"] or None,
                "birads": value["birads"] or None,
                "acquisition_date": value.get("date") or None,
                "age": int(age) if age.isdigit() else None,
            },
        )
    return rows


def _name_fields(path: Path) -> tuple[str | None, str | None, str | None, str | None]:
    """File id, patient hash, side and view of ``<id>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm`` (None if absent)."""
    parts = path.stem.split("_")
    fileid = parts[0] if parts[0].isdigit() else None
    patient = parts[1] if len(parts) > 1 and re.fullmatch(r"[0-9a-fA-F]{8,}", parts[1]) else None
    side = view = None
    if len(parts) > 4 and parts[2].upper() == "MG":
        side, view = side_letter(parts[3]), _view(parts[4])
    return fileid, patient, side, view


def _dicom_patient(path: Path) -> str | None:
    try:
        return str(read_header(path).get("PatientID", "") or "").strip() or None
    except DicomError:
        return None  # the decode step reports the file


def find_films(
    root: Path,
    table: Path,
    rows: dict[str, Row],
    contours: bool,
    problems: list[tuple[str, str]],
    rejected: dict[str, int] | None = None,
) -> tuple[list[Film], dict[str, Any]]:
    """Join the DICOM files and contour files to the rows (``rejected``: file ids whose row was unreadable,
    by row number); films get their split later.

    Returns:
        the films (split ``train``) and the join report.
    """
    dicom_dir, xml_dir = root / DICOM_DIR, root / XML_DIR
    if not dicom_dir.is_dir():
        raise PrepareError(
            f"{dicom_dir}: INbreast image folder not found (expected {DICOM_DIR}/ under the root)"
        )
    if contours and not xml_dir.is_dir():
        raise PrepareError(
            f"{xml_dir}: INbreast contour folder not found (expected {XML_DIR}/ under the root); pass "
            "--contours false to prepare the films without lesions"
        )
    xmls: dict[str, Path] = {}
    xml_unjoined = 0
    if contours:
        for path in sorted(p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file()):
            fileid = file_id(path.stem)
            if fileid is not None and fileid in (rejected or {}):
                continue  # its row is reported
            if fileid is None or fileid not in rows:
                xml_unjoined += 1
                problems.append((str(path), f"{path}: not in {table} (no row with File Name {path.stem})"))
                continue
            xmls[fileid] = path
    files = sorted(p for p in dicom_dir.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file())
    films: list[Film] = []
    joined: set[str] = set()
    unjoined, disagree, with_contours = 0, 0, 0
    names: Counter[str] = Counter()
    for path in files:
        fileid, hashed, name_side, name_view = _name_fields(path)
        if fileid is None:
            unjoined += 1
            problems.append((str(path), f"{path}: the file name does not start with an INbreast file id"))
            continue
        row = rows.get(fileid)
        bad_row = (rejected or {}).get(fileid)
        if row is None and bad_row is not None:
            problems.append((str(path), f"{path}: its row ({table} row {bad_row}) has an unreadable value"))
            continue
        if row is None:
            unjoined += 1
            problems.append((str(path), f"{path}: not in {table} (no row with File Name {fileid})"))
            continue
        if fileid in joined:
            problems.append((str(path), f"{path}: a second image of file id {fileid}"))
            continue
        joined.add(fileid)
        side, view = row.side or name_side, row.view or name_view
        disagree += bool(row.side and name_side and row.side != name_side)
        findings: list[dict[str, Any]] = []
        xml = xmls.get(fileid)
        if xml is not None:
            try:
                findings = read_contours(xml)
            except ValueError as e:
                problems.append((str(xml), f"{xml}: {e}; image {path.name} skipped (its lesions unknown)"))
                continue
            with_contours += 1
            names.update(f["name"] for f in findings)
        patient, patient_from = row.patient, "csv"
        if patient is None:
            patient, patient_from = hashed, "file name hash"
        if patient is None:
            patient, patient_from = _dicom_patient(path), "dicom"
        if patient is None:
            patient, patient_from = fileid, "file id"
        labels = {
            "density": row.density,
            "birads": row.birads,
            "suspicious": None if row.birads is None else int(row.birads >= 4),
            **common_labels(side, view),
        }
        if contours:
            labels["lesions"] = sorted({LESIONS.index(f["name"]) for f in findings if f["name"] in LESIONS})
        films.append(
            Film(
                path=str(path),
                key=record_key(path.relative_to(root).as_posix()),
                patient_id=patient,
                split="train",
                labels=labels,
                laterality=side,
                view=view,
                meta={
                    **row.meta,
                    "patient_hash": hashed,
                    "patient_from": patient_from,
                    "xml": None if xml is None else str(xml),
                },
                findings=findings,
            )
        )
    lonely = sorted((r for r in rows.values() if r.fileid not in joined), key=lambda r: r.row)
    for r in lonely:
        problems.append((f"{table} row {r.row} / {r.fileid}", f"no image file {dicom_dir}/{r.fileid}_*.dcm"))
    report = {
        "join": f"{CSV_NAME} File Name (file id) = first '_' field of the DICOM file name; contours "
        f"{XML_DIR}/<file id>.xml; patient = Patient ID unless anonymised, else the file name's hash field",
        "rows": len(rows),
        "images": len(files),
        "rows_without_image": len(lonely),
        "images_without_row": unjoined,
        "xml": len(xmls) + xml_unjoined,
        "xml_without_row": xml_unjoined,
        "images_with_contours": with_contours,
        "laterality_csv_vs_file_name": disagree,
        "roi_names": dict(sorted(names.items())),
        "films": len(films),
    }
    return films, report


def assign_splits(films: list[Film], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Draw val/test by patient, stratified by whether any image of the patient is suspicious."""
    split_films(films, lambda f: int(f.labels["suspicious"] == 1), val_fraction, test_fraction, seed)


def prepare_inbreast(
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
    csv: str | None = None,
    contours: bool = True,
) -> Path:
    """Build a cache of whole INbreast films with density, BI-RADS and lesion contours.

    Args:
        root: the INbreast folder (holding ``AllDICOMs/``, ``AllXML/`` and ``INbreast.csv``).
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (area filter; spacing and lesion boxes
            follow); None = native pixels.
        flip_to: mirror films so the breast lies on this side (lesion boxes follow); ``none`` keeps them.
        spacing_mm: pixel spacing to assume for files without PixelSpacing or ImagerPixelSpacing.
        val_fraction: share of patients drawn for ``val`` (stratified by any suspicious image).
        test_fraction: share of patients drawn for ``test`` (INbreast has no official split).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        csv: the ``;``-separated metadata (``INbreast.csv``); None = ``<root>/INbreast.csv``. The ``.xls``
            of some copies must be exported as such a CSV first.
        contours: read ``AllXML/`` into finding boxes and the ``lesions`` label; false = films without them.

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root, folder, CSV or required column, a ``,``-separated or ``.xls`` file, a bad
            input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: INbreast folder not found")
    table = Path(csv) if csv else base / CSV_NAME
    problems: list[tuple[str, str]] = []
    rejected: dict[str, int] = {}
    rows = read_rows(table, problems, rejected)
    films, report = find_films(base, table, rows, contours, problems, rejected)
    assign_splits(films, val_fraction, test_fraction, seed)
    labels = LABELS if contours else {k: v for k, v in LABELS.items() if k != "lesions"}
    check = {
        "root": str(base.resolve()),
        "csv": str(table.resolve()),
        "contours": contours,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    xml_files = sorted(f.meta["xml"] for f in films if f.meta["xml"])
    return prepare_films(
        films,
        problems,
        source=SOURCE,
        labels=labels,
        settings=FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm),
        check=check,
        metadata_files=[str(table), *xml_files],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra={"join": report, "licence": LICENCE},
    )
