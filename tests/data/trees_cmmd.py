"""Builders of CMMD download trees (TCIA layout, 8-bit DICOM files, the clinical XLSX or a CSV export)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from film_fakes import real_film, write_film

HEADER = ["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
SPACING = 0.094  # mm: a value for the PixelSpacing tag of the fake files


def image_path(root: Path, patient: str, index: int) -> Path:
    """``<root>/CMMD/<patient>/<study folder>/<series folder>/1-<index>.dcm``, as NBIA's retriever writes."""
    number = sum(map(ord, patient))
    study, series = f"07-18-2010-NA-NA-{number:05d}", f"1.000000-NA-{number * 7:05d}"
    return root / "CMMD" / patient / study / series / f"1-{index}.dcm"


def write_image(
    root: Path, patient: str, side: str | None, view: str | None, index: int, case: int = 0, shrink: int = 8,
    **tags: Any,
) -> Path:  # fmt: skip
    """One 8-bit CMMD film of ``patient`` (ImageLaterality ``side``, ViewPosition ``view``; None = tag
    absent), pixels of the real film of that side and view."""
    name = f"{(side or 'L').lower()}{'cc' if view in (None, 'CC') else 'mlo'}"
    tags.setdefault("spacing", SPACING)
    return write_film(
        image_path(root, patient, index),
        real_film(name, case, shrink),
        patient_id=patient,
        laterality=side,
        view=view,
        bits=8,
        **tags,
    )


def write_clinical(path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str] = HEADER) -> Path:
    """The clinical sheet: an XLSX (one sheet, header row then ``rows``) or, for ``*.csv``, a CSV export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([list(header), *[["" if v is None else v for v in r] for r in rows]])
        return path
    openpyxl = pytest.importorskip("openpyxl", reason="the test extra (openpyxl) is not installed")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Sheet1"
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def build_cmmd_tree(root: Path, n_patients: int, clinical: str = "xlsx", shrink: int = 8) -> Path:
    """A valid CMMD tree of ``n_patients`` × 4 films (both breasts, CC and MLO), one clinical row per breast.

    Patient ``i`` is ``D1-####`` (even i) or ``D2-####``; its left breast is benign, its right one benign
    for even i and malignant (``Luminal A``) for odd i; abnormality cycles calcification / mass / both.

    Returns:
        the clinical sheet (``<root>/CMMD_clinicaldata_revision.xlsx``, or ``.csv`` for ``clinical="csv"``).
    """
    rows = []
    for i in range(n_patients):
        patient = f"D{1 + i % 2}-{i + 1:04d}"
        for k, (side, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))):
            write_image(root, patient, side, view, k + 1, case=i % 2, shrink=shrink)
        abnormality = ("calcification", "mass", "both")[i % 3]
        rows.append([patient, "L", 40 + i % 30, 2, abnormality, "Benign", None])
        malignant = i % 2 == 1
        rows.append(
            [patient, "R", 40 + i % 30, 2, abnormality, "Malignant" if malignant else "Benign",
             "Luminal A" if malignant else None]
        )  # fmt: skip
    name = "CMMD_clinicaldata_revision." + ("csv" if clinical == "csv" else "xlsx")
    return write_clinical(root / name, rows)
