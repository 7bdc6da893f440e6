"""``miram prepare cdd-cesm``: CDD-CESM (contrast-enhanced spectral mammography, TCIA) → a cache of films.

CDD-CESM (Khaled et al., Scientific Data 2022) holds 2,006 JPEG images of 326 patients: for each breast and
view a LOW-ENERGY image, which looks like an ordinary mammogram (``Type`` DM), and a SUBTRACTED image of the
contrast uptake (``Type`` CESM), which does not. Only low-energy images are read unless
``include_subtracted`` is set (then a ``type`` label says which each film is).

Layout (as TCIA's download unpacks; third-party copies move folders around)::

    <root>/Low energy images of CDD-CESM/P2_L_DM_MLO.jpg      P<patient>_<L|R>_<DM|CM>_<CC|MLO>.jpg
    <root>/Subtracted images of CDD-CESM/P2_L_CM_MLO.jpg
    <root>/Radiology manual annotations.xlsx                 (``annotations``: elsewhere, or a CSV export)

The sheet is found at that path, else as the shallowest ``*.xlsx`` (then ``*.csv``) below ``root`` with that
name in any punctuation (``Radiology-manual-annotations.xlsx``, as TCIA's link saves it).

Every ``*.jpg`` / ``*.jpeg`` below ``root`` (any depth, suffix in any case) is an image, known by its file
stem; a second file of one stem is reported and the shallowest one is used. The sheet named ``all`` is read
(the workbook's other sheets describe findings), else the first sheet. Columns (compared without case,
spaces or punctuation): required ``Image_name`` (the file stem), ``Patient_ID``, ``Type`` (DM / CESM),
``Breast density (ACR)`` (or ``Breast density``, ``ACR``), ``BIRADS``, ``Pathology Classification/ Follow
up`` (Normal / Benign / Malignant); read when present: ``Side``, ``View``, ``Age``, ``Findings``, ``Tags``,
``Machine``.

Join key: ``Image_name`` (stripped, in any case) = the image file's stem. Reported as problems (skipped under
``on_error=skip``): a row whose image is missing; an image with no row (subtracted images are passed over
unless ``include_subtracted``); a row with an unreadable value, named by row and column, or whose
``Patient_ID``, ``Side``, ``View`` or ``Type`` contradicts its image name; a second row for one image.
``cache.json → join`` counts them.

Labels (:mod:`miram.data.collections.schema`): ``density`` (ACR A–D, from 1–4 or letters; None where empty
or ``_``: the sheet leaves density blank on subtracted rows, which then take their low-energy twin's),
``birads`` (0–6; ``4a`` → 4; a cell listing one assessment per finding, ``4$2``, takes the highest),
``pathology3`` (normal / benign / malignant), ``pathology`` (benign / malignant; None for normal),
``cancer`` (malignant), ``laterality`` and ``view`` (``Side``/``View``, else the file name) and, with
``include_subtracted``, ``type`` (low energy / subtracted). ``meta`` keeps the sheet's values as written
and its row number (``Findings`` as ``sheet_findings``). The hand-drawn segmentations (a separate CSV) are
not read: films have no finding boxes.

Spacing: the JPEGs carry no pixel size, and none is published with them: films have no spacing unless
``spacing_mm`` states one (recorded as ``assumed``).

Splits: no official split; ``val`` and ``test`` are drawn by patient, stratified by the patient's worst
pathology (malignant > benign > normal), seeded. Test films never enter pre-training.

Tolerated: column names in any case and spacing, both density spellings; ``Image_name`` with stray spaces or
a ``.jpg`` suffix; values with stray spaces and in any case; ``Patient_ID`` written ``2``, ``2.0`` or
``P2``; ``LEFT``/``RIGHT``; ``CM`` for CESM; empty ``Side``/``View``/``Patient_ID``/``Type`` (taken from the
file name); density ``_`` / ``-`` / empty; BI-RADS ``4a`` and ``$``-joined lists; empty rows; a CSV export
(``,``, ``;`` or tab separated) of the sheet.

Licence: CC BY 4.0 (The Cancer Imaging Archive, DOI 10.7937/29kw-ae92; our reading of TCIA's page, not the
authors' word): trained weights may be published; cite the collection and its paper.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from miram.data.cache import LabelSpec, PrepareError, record_key
from miram.data.collections.schema import COMMON, birads_index, common_labels, density_index, side_letter
from miram.data.collections.tables import read_sheet
from miram.data.films import Film, FilmSettings, prepare_films, split_films

SOURCE = "cdd-cesm"
SHEET_NAME = "Radiology manual annotations.xlsx"
SHEET_TAB = "all"
FOLDERS = {"DM": "Low energy images of CDD-CESM", "CESM": "Subtracted images of CDD-CESM"}
PATHOLOGIES = ("normal", "benign", "malignant")
TYPES = ("DM", "CESM")
# key -> the column names it is read from, compared by :func:`_column`
COLUMNS = {
    "image": ("Image_name",),
    "patient": ("Patient_ID",),
    "type": ("Type",),
    "density": ("Breast density (ACR)", "Breast density", "ACR"),
    "birads": ("BIRADS",),
    "pathology": ("Pathology Classification/ Follow up", "Pathology Classification", "Pathology"),
    "side": ("Side",),
    "view": ("View",),
    "age": ("Age",),
    "findings": ("Findings",),
    "tags": ("Tags",),
    "machine": ("Machine",),
}
REQUIRED = ("image", "patient", "type", "density", "birads", "pathology")
LABELS: dict[str, LabelSpec] = {
    "density": COMMON["density"],
    "birads": COMMON["birads"],
    "pathology3": LabelSpec("multiclass", list(PATHOLOGIES)),
    "pathology": COMMON["pathology"],
    "cancer": COMMON["cancer"],
    "laterality": COMMON["laterality"],
    "view": COMMON["view"],
}
TYPE_LABEL = LabelSpec("multiclass", ["low energy", "subtracted"])
LICENCE = {
    "name": "CC BY 4.0 (The Cancer Imaging Archive, CDD-CESM)",
    "weights_restricted": False,
    "notice": "CDD-CESM is CC BY 4.0 (as TCIA lists it): cite the collection, DOI 10.7937/29kw-ae92, and "
    "Khaled et al., Scientific Data 9, 122 (2022).",
}
_NAME = re.compile(r"P(\d+)_([LR])_(DM|CM)_(CC|MLO)", re.IGNORECASE)
_TYPE_WORDS = {"DM": "DM", "CESM": "CESM", "CM": "CESM"}
_EMPTY = {"", "_", "-", "--", "na", "n/a", "none", "nan"}


def _column(name: str) -> str:
    """A column name compared without case, spaces or punctuation (``"Breast density (ACR)"`` →
    ``breastdensityacr``)."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def _stem(name: str) -> str:
    """An ``Image_name`` cell as a file stem: stray spaces and a ``.jpg``/``.jpeg`` suffix removed."""
    return re.sub(r"\.jpe?g$", "", name.strip(), flags=re.IGNORECASE).strip()


def name_fields(stem: str) -> tuple[str, str, str, str] | None:
    """``(patient, side, type, view)`` of a file name: ``P2_L_CM_MLO`` → ``("P2", "L", "CESM", "MLO")``;
    None for another pattern."""
    m = _NAME.fullmatch(stem.strip())
    if m is None:
        return None
    return f"P{int(m.group(1))}", m.group(2).upper(), _TYPE_WORDS[m.group(3).upper()], m.group(4).upper()


def patient_key(text: str) -> str | None:
    """``2``, ``2.0``, ``P2``, ``p 2`` → ``P2``; other text as written (upper case); empty → None."""
    m = re.fullmatch(r"(?:P\s*)?0*(\d+)(?:\.0+)?", text.strip(), re.IGNORECASE)
    if m:
        return f"P{int(m.group(1))}"
    return text.strip().upper() or None


def birads_of(text: str) -> int | None:
    """The highest BI-RADS of a cell (``4$2`` → 4, ``4a`` → 4); None when empty.

    Raises:
        ValueError: a part outside BI-RADS 0–6.
    """
    parts = [p.strip() for p in text.split("$") if p.strip().lower() not in _EMPTY]
    values = [birads_index(p) for p in parts]
    if any(v is None for v in values):
        raise ValueError(text)
    return max((v for v in values if v is not None), default=None)


def _agree(
    column: str | None, text: str, got: str | None, from_name: str | None, name: str, expected: str,
    bad: list[str],
) -> str | None:  # fmt: skip
    """A cell's value, else the image name's; an unreadable cell or one that contradicts the name is noted in
    ``bad``."""
    if text.strip() and got is None:
        bad.append(f"column '{column}': unreadable value {text!r} (expected {expected})")
    elif got is not None and from_name is not None and got != from_name:
        bad.append(f"column '{column}': {text!r} contradicts the image name {name}")
    return got if got is not None else from_name


@dataclass
class Entry:
    """One usable row of the sheet."""

    row: int
    name: str
    patient: str
    side: str | None
    view: str | None
    type: str
    density: int | None
    birads: int | None
    pathology: int
    meta: dict[str, Any]


def read_rows(
    path: Path, include_subtracted: bool, problems: list[tuple[str, str]]
) -> tuple[dict[str, Entry], set[str], int, int]:
    """The sheet's usable rows by upper-case image name; the upper-case names of rows that were read but not
    used (unreadable, repeated, or subtracted when not included), so their images are not also reported;
    the number of rows and of subtracted rows passed over.

    Raises:
        PrepareError: missing or unreadable sheet, or a missing required column.
    """
    header, rows = read_sheet(path, "CDD-CESM annotation sheet", "annotations", sheet=SHEET_TAB)
    names = [_column(h) for h in header]
    where: dict[str, int] = {}
    for key, spellings in COLUMNS.items():
        found = [names.index(_column(s)) for s in spellings if _column(s) in names]
        if found:
            where[key] = found[0]
    missing = [COLUMNS[key][0] for key in REQUIRED if key not in where]
    if missing:
        raise PrepareError(f"{path}: missing column(s) {missing}; the sheet has {[h for h in header if h]}")
    label = {key: header[i] for key, i in where.items()}
    entries: dict[str, Entry] = {}
    unused: set[str] = set()
    passed_over = 0
    for n, row in rows:
        value = {key: (row[i] if i < len(row) else "") for key, i in where.items()}
        name = _stem(value["image"])
        at = f"{path} row {n} / {name or '?'}"
        if not name:
            problems.append((at, f"column '{label['image']}': empty"))
            continue
        fields = name_fields(name) or (None, None, None, None)
        bad: list[str] = []
        kind = _agree(label.get("type"), value["type"], _TYPE_WORDS.get(value["type"].strip().upper()),
                      fields[2], name, "DM or CESM", bad)  # fmt: skip
        if kind == "CESM" and not include_subtracted and not bad:
            passed_over += 1
            unused.add(name.upper())
            continue
        patient = _agree(label.get("patient"), value["patient"], patient_key(value["patient"]), fields[0],
                         name, "a patient number", bad)  # fmt: skip
        side_text = value.get("side", "")
        side = _agree(label.get("side"), side_text, side_letter(side_text), fields[1], name, "L or R", bad)
        view_text = value.get("view", "")
        view = _agree(label.get("view"), view_text, view_text.strip().upper() or None, fields[3], name,
                      "CC or MLO", bad)  # fmt: skip
        density_text = value["density"]
        blank = density_text.strip().lower() in _EMPTY
        density = None if blank else density_index(density_text)
        if density is None and not blank:
            bad.append(f"column '{label['density']}': unreadable value {density_text!r} (expected A-D, 1-4)")
        try:
            birads = birads_of(value["birads"])
        except ValueError:
            bad.append(f"column '{label['birads']}': unreadable value {value['birads']!r} (expected 0-6)")
            birads = None
        pathology_text = re.sub(r"\s+", " ", value["pathology"]).strip().lower()
        if pathology_text not in PATHOLOGIES:
            bad.append(
                f"column '{label['pathology']}': unreadable value {value['pathology']!r} (expected Normal, "
                "Benign or Malignant)"
            )
        if kind is None:
            bad.append(f"column '{label['type']}': empty and the image name {name} does not say DM or CM")
        if patient is None:
            bad.append(f"column '{label['patient']}': empty and the image name {name} names no patient")
        if name.upper() in entries:
            bad.append(f"a second row for image {name} (first: row {entries[name.upper()].row})")
        if bad:
            problems.append((at, "; ".join(bad)))
            if name.upper() not in entries:
                unused.add(name.upper())
            continue
        assert kind is not None and patient is not None
        entries[name.upper()] = Entry(
            row=n,
            name=name,
            patient=patient,
            side=side,
            view=view,
            type=kind,
            density=density,
            birads=birads,
            pathology=PATHOLOGIES.index(pathology_text),
            meta={
                "image_name": name,
                "cdd_patient_id": value["patient"] or None,
                "type": kind,
                "sheet_row": n,
                "density": density_text or None,
                "birads": value["birads"] or None,
                "pathology": value["pathology"],
                "sheet_findings": value.get("findings") or None,  # meta → findings holds boxes
                **{key: value.get(key) or None for key in ("age", "tags", "machine")},
            },
        )
    for entry in entries.values():
        if entry.type == "CESM" and entry.density is None:
            twin = entries.get(re.sub(r"_CM_", "_DM_", entry.name.upper()))
            if twin is not None and twin.patient == entry.patient and twin.density is not None:
                entry.density = twin.density
                entry.meta["density_from"] = twin.name
    return entries, unused, len(rows), passed_over


def find_sheet(base: Path) -> Path:
    """``<root>/Radiology manual annotations.xlsx``, else the shallowest ``*.xlsx`` (then ``*.csv``) below
    ``root`` named so with any punctuation (TCIA's link saves ``Radiology-manual-annotations.xlsx``); else
    the default path, which the reader then reports missing."""
    default = base / SHEET_NAME
    if default.is_file():
        return default
    found = sorted(
        (
            p
            for p in base.rglob("*")
            if p.suffix.lower() in (".xlsx", ".csv") and _column(p.stem) == _column(Path(SHEET_NAME).stem)
        ),
        key=lambda p: (len(p.relative_to(base).parts), p.suffix.lower() != ".xlsx", p.as_posix()),
    )
    return next((p for p in found if p.is_file()), default)


def image_files(base: Path, problems: list[tuple[str, str]]) -> dict[str, Path]:
    """The ``*.jpg`` / ``*.jpeg`` files below ``base`` by upper-case stem (the shallowest of a repeated stem;
    the others reported)."""
    files = sorted(
        (p for p in base.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()),
        key=lambda p: (len(p.relative_to(base).parts), p.as_posix()),
    )
    found: dict[str, Path] = {}
    for path in files:
        key = path.stem.strip().upper()
        if key in found:
            problems.append((str(path), f"a second file for image {path.stem} ({found[key]} is used)"))
            continue
        found[key] = path
    return found


def find_films(
    base: Path,
    sheet: Path,
    entries: dict[str, Entry],
    unused: set[str],
    include_subtracted: bool,
    problems: list[tuple[str, str]],
) -> tuple[list[Film], dict[str, Any]]:
    """Join the rows to the image files; films get their split later."""
    files = image_files(base, problems)
    films: list[Film] = []
    rows_without_image = 0
    for key in sorted(entries, key=lambda k: entries[k].row):
        entry = entries[key]
        path = files.get(key)
        if path is None:
            rows_without_image += 1
            expected = base / FOLDERS[entry.type] / f"{entry.name}.jpg"
            problems.append((f"{sheet} row {entry.row} / {entry.name}", f"no image file {expected}"))
            continue
        labels: dict[str, Any] = {
            "density": entry.density,
            "birads": entry.birads,
            "pathology3": entry.pathology,
            "pathology": None if entry.pathology == 0 else entry.pathology - 1,
            "cancer": int(entry.pathology == 2),
            **common_labels(entry.side, entry.view),
        }
        if include_subtracted:
            labels["type"] = TYPES.index(entry.type)
        films.append(
            Film(
                path=str(path),
                key=record_key(entry.name),
                patient_id=entry.patient,
                split="train",
                labels=labels,
                laterality=entry.side,
                view=entry.view,
                meta=dict(entry.meta),
            )
        )
    ignored = 0
    stray = []
    for key, path in sorted(files.items(), key=lambda kv: kv[1].as_posix()):
        fields = name_fields(path.stem)
        if fields is not None and fields[2] == "CESM" and not include_subtracted and key not in entries:
            ignored += 1
            continue
        if key in entries or key in unused:
            continue
        stray.append(path)
        problems.append((str(path), f"not in {sheet}"))
    report = {
        "join": "sheet Image_name = image file stem (*.jpg below root)",
        "rows": len(entries),
        "images": len(files) - ignored,
        "rows_without_image": rows_without_image,
        "images_without_row": len(stray),
        "films": len(films),
        "subtracted_images_passed_over": ignored,
    }
    return films, report


def assign_splits(films: list[Film], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Draw val/test by patient, stratified by the patient's worst pathology (malignant > benign > normal)."""
    split_films(films, lambda f: int(f.labels["pathology3"]), val_fraction, test_fraction, seed)


def prepare_cdd_cesm(
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
    annotations: str | None = None,
    include_subtracted: bool = False,
) -> Path:
    """Build a cache of CDD-CESM low-energy films (optionally the subtracted ones too) with their labels.

    Args:
        root: the download folder (holding the two image folders); every ``*.jpg`` below it is an image.
        out: cache directory (created; an interrupted run resumes here).
        max_size: downscale films whose longest side exceeds this (area filter); None = native pixels.
        flip_to: mirror films so the breast lies on this side (``none`` keeps them as stored).
        spacing_mm: pixel spacing (mm) to record for the films: the JPEGs carry none and none is published
            with them; None leaves them without one (no crops of a physical size).
        val_fraction: share of patients drawn for ``val`` (stratified by worst pathology).
        test_fraction: share of patients drawn for ``test`` (CDD-CESM has no official split).
        seed: seed of the split draw.
        workers: decoding processes (0 or 1 = in this process).
        on_error: ``skip`` lists bad inputs in ``skipped.csv``; ``fail`` stops at the first one.
        overwrite: discard an existing cache in ``out`` instead of resuming it.
        progress: show a progress bar.
        annotations: the sheet (``Radiology manual annotations.xlsx``, sheet ``all``, or a CSV export of it);
            None = ``<root>/Radiology manual annotations.xlsx``, else the first file below ``root`` named so
            with any punctuation. Reading an XLSX needs the ``collections`` extra.
        include_subtracted: also cache the subtracted (contrast) images, with a ``type`` label; they do not
            look like mammograms, so pre-training pools usually should not hold them.

    Returns:
        the cache directory (``cache.json → join`` counts what joined, ``licence`` the terms).

    Raises:
        PrepareError: missing root, sheet or required column, a bad input under ``fail``, or nothing usable.
    """
    base = Path(root)
    if not base.is_dir():
        raise PrepareError(f"{base}: CDD-CESM download folder not found")
    sheet = Path(annotations) if annotations else find_sheet(base)
    problems: list[tuple[str, str]] = []
    entries, unused, n_rows, passed_over = read_rows(sheet, include_subtracted, problems)
    films, report = find_films(base, sheet, entries, unused, include_subtracted, problems)
    assign_splits(films, val_fraction, test_fraction, seed)
    check = {
        "root": str(base.resolve()),
        "annotations": str(sheet.resolve()),
        "include_subtracted": include_subtracted,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    labels = {**LABELS, "type": TYPE_LABEL} if include_subtracted else LABELS
    return prepare_films(
        films,
        problems,
        source=SOURCE,
        labels=labels,
        settings=FilmSettings(out=out, max_size=max_size, flip_to=flip_to, spacing_mm=spacing_mm),
        check=check,
        metadata_files=[str(sheet)],
        workers=workers,
        on_error=on_error,
        overwrite=overwrite,
        progress=progress,
        extra={
            "join": {**report, "sheet_rows": n_rows, "subtracted_rows_passed_over": passed_over},
            "pathology": dict(Counter(PATHOLOGIES[e.pathology] for e in entries.values())),
            "licence": LICENCE,
        },
    )
