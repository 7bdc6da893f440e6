"""Builders of CDD-CESM trees: ``P<n>_<L|R>_<DM|CM>_<CC|MLO>.jpg`` (8-bit JPEG of :func:`film_fakes.real_film`
pixels) in TCIA's two image folders and ``Radiology manual annotations.xlsx`` (sheet ``all`` after a findings
sheet, as the release's workbook has several) or a CSV export of it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from film_fakes import real_film
from PIL import Image

HEADER = [
    "Image_name", "Patient_ID", "Side", "Type", "Age", "Breast density (ACR)", "BIRADS", "Findings", "View",
    "Tags", "Machine", "Pathology Classification/ Follow up",
]  # fmt: skip
FOLDERS = {"DM": "Low energy images of CDD-CESM", "CM": "Subtracted images of CDD-CESM"}


def image_path(root: Path, name: str) -> Path:
    """Where TCIA's download puts image ``name`` (``P2_L_DM_MLO``): by its DM / CM part."""
    return root / FOLDERS[name.split("_")[2]] / f"{name}.jpg"


def write_image(root: Path, name: str, case: int = 0, shrink: int = 8, path: Path | None = None) -> Path:
    """Image ``name`` as an 8-bit JPEG: the real film of its side and view (a subtracted image too: only its
    name matters here)."""
    _, side, _, view = name.split("_")
    pixels = (real_film(f"{side.lower()}{view.lower()}", case, shrink) >> 8).astype(np.uint8)
    path = path or image_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    return path


def write_sheet(path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str] = HEADER) -> Path:
    """The annotation sheet: an XLSX whose sheet ``all`` (second, after a ``mass_description`` sheet) holds
    ``header`` and ``rows``; for ``*.csv``, a CSV export of that sheet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([list(header), *[["" if v is None else v for v in r] for r in rows]])
        return path
    openpyxl = pytest.importorskip("openpyxl", reason="the test extra (openpyxl) is not installed")
    book = openpyxl.Workbook()
    decoy = book.active
    assert decoy is not None
    decoy.title = "mass_description"
    decoy.append(["Image_name", "Mass shape", "Mass margin"])
    decoy.append(["P1_L_DM_CC", "oval", "circumscribed"])
    sheet = book.create_sheet("all")
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def row(name: str, pathology: str, density: Any = "B", birads: Any = 1, **kw: Any) -> list[Any]:
    """A sheet row for image ``name`` with the columns of :data:`HEADER` (``kw`` overrides by column name)."""
    patient, side, kind, view = name.strip().split("_") if name.strip() else ("P0", "L", "DM", "CC")
    values = {
        "Image_name": name, "Patient_ID": int(patient[1:]), "Side": side,
        "Type": "DM" if kind == "DM" else "CESM", "Age": 50, "Breast density (ACR)": density,
        "BIRADS": birads, "Findings": "", "View": view, "Tags": "", "Machine": 1,
        "Pathology Classification/ Follow up": pathology, **kw,
    }  # fmt: skip
    return [values[c] for c in HEADER]


def build_cdd_cesm_tree(root: Path, n_patients: int, shrink: int = 8, subtracted: bool = True) -> Path:
    """A valid CDD-CESM tree of ``n_patients`` × 4 low-energy films (both breasts, CC and MLO), with their
    subtracted images when ``subtracted``, one sheet row per image.

    Patient ``P<i+1>``: the left breast is normal; the right one normal, benign or malignant as ``i % 3``;
    density cycles A–D, BI-RADS follows the pathology (1, 3, 5).

    Returns:
        the sheet (``<root>/Radiology manual annotations.xlsx``).
    """
    rows = []
    for i in range(n_patients):
        for side in ("L", "R"):
            pathology = "Normal" if side == "L" else ("Normal", "Benign", "Malignant")[i % 3]
            birads = {"Normal": 1, "Benign": 3, "Malignant": 5}[pathology]
            for view in ("CC", "MLO"):
                for kind in ("DM", "CM") if subtracted else ("DM",):
                    name = f"P{i + 1}_{side}_{kind}_{view}"
                    write_image(root, name, case=i % 2, shrink=shrink)
                    density = "ABCD"[i % 4] if kind == "DM" else "_"
                    rows.append(row(name, pathology, density, birads))
    return write_sheet(root / "Radiology manual annotations.xlsx", rows)
