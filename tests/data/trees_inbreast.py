"""Builders of INbreast folders: ``AllDICOMs/<id>_<hash>_MG_<side>_<CC|ML>_ANON.dcm``, ``AllXML/<id>.xml``
contour plists and the ``;``-separated ``INbreast.csv``, with the release's spellings."""

from __future__ import annotations

import hashlib
import plistlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from film_fakes import real_film, write_film

HEADER = [
    "Patient ID",
    "Patient age",
    "Laterality",
    "View",
    "Acquisition date",
    "File Name",
    "ACR",
    "Bi-Rads",
]
SPACING = 0.07  # mm: INbreast's detector pitch, for the PixelSpacing tag of the fake files

Roi = tuple[str, Sequence[tuple[float, float]]]


@dataclass
class InbreastImage:
    """One image of the fake release and its CSV row.

    Attributes:
        fileid: the 8-digit file id.
        patient: the file name's hash field.
        side / view: ``L``/``R`` and ``CC``/``MLO`` (the file name writes MLO as ``ML``).
        rois: contours ``(Name, [(x, y), ...])``; None = no XML file.
        row: the CSV cells by column, overriding the defaults (``File Name`` = the id as a number,
            ``Patient ID`` = ``removed`` ...); None = no row.
        file: write the DICOM file.
    """

    fileid: str
    patient: str
    side: str
    view: str
    acr: Any = 2
    birads: Any = "2"
    rois: list[Roi] | None = None
    row: dict[str, Any] | None = field(default_factory=dict)
    file: bool = True
    case: int = 0

    @property
    def name(self) -> str:
        view = "ML" if self.view == "MLO" else self.view
        return f"{self.fileid}_{self.patient}_MG_{self.side}_{view}_ANON.dcm"


def write_contours(path: Path, rois: Sequence[Roi]) -> Path:
    """An ``AllXML/<id>.xml`` plist as the release writes it (the keys the reader needs, and some more)."""
    items = []
    for i, (name, points) in enumerate(rois):
        items.append(
            {
                "Area": 0.0,
                "Center": "({:.6f}, {:.6f})".format(*points[0]),
                "IndexInImage": i,
                "Name": name,
                "NumberOfPoints": len(points),
                "Point_mm": [f"({x * SPACING:.6f}, {y * SPACING:.6f}, 0.000000)" for x, y in points],
                "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points],
                "Type": 15 if len(points) > 1 else 19,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(items), "ROIs": items}]}, f)
    return path


def write_csv(
    path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str] = HEADER, sep: str = ";"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(sep.join(str(v) for v in r) for r in [header, *rows])
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_inbreast(root: Path, images: Sequence[InbreastImage], shrink: int = 8, sep: str = ";") -> Path:
    """Write the images, their contour files and ``INbreast.csv``; returns the CSV."""
    rows = []
    for im in images:
        if im.file:
            view = f"{im.side.lower()}{im.view.lower()}"
            write_film(root / "AllDICOMs" / im.name, real_film(view, im.case, shrink), patient_id=im.patient,
                       laterality=im.side, view=im.view, spacing=SPACING)  # fmt: skip
        if im.rois is not None:
            write_contours(root / "AllXML" / f"{im.fileid}.xml", im.rois)
        if im.row is not None:
            cells = {"Patient ID": "removed", "Patient age": "removed", "Laterality": im.side,
                     "View": im.view, "Acquisition date": "201001", "File Name": int(im.fileid),
                     "ACR": im.acr, "Bi-Rads": im.birads, **im.row}  # fmt: skip
            rows.append([cells[h] for h in HEADER])
    (root / "AllXML").mkdir(parents=True, exist_ok=True)
    return write_csv(root / "INbreast.csv", rows, sep=sep)


def build_inbreast_tree(root: Path, n_patients: int, shrink: int = 8) -> Path:
    """A valid INbreast folder of ``n_patients`` × 4 films (L/R × CC/MLO); every odd patient's right CC has
    a mass contour and BI-RADS 4c, the rest BI-RADS 1–3. Returns the CSV."""
    images = []
    for i in range(n_patients):
        patient = hashlib.sha1(str(i).encode()).hexdigest()[:16]
        for k, (side, view) in enumerate((("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
            lesion = i % 2 == 1 and k == 0
            images.append(
                InbreastImage(
                    str(20586908 + 1000 * i + 26 * k), patient, side, view, acr=1 + i % 4,
                    birads="4c" if lesion else str(1 + (i + k) % 3), case=i % 2,
                    rois=[("Mass", [(100.0, 200.0), (150.0, 210.0), (140.0, 260.0)])] if lesion else None,
                )
            )  # fmt: skip
    return write_inbreast(root, images, shrink=shrink)
