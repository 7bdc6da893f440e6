"""Builders of VinDr-Mammo v1.0.0 trees: ``images/<study_id>/<image_id>.dicom`` plus the two annotation CSVs
with PhysioNet's exact column names and value spellings (``BI-RADS 4``, ``DENSITY C``, ``training``/``test``,
finding_categories as Python list strings), pixels from :func:`film_fakes.real_film`."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from film_fakes import real_film, write_film

Box = tuple[object, object, object, object]  # xmin, ymin, xmax, ymax as written (numbers, or text for traps)

BREAST_COLUMNS = [
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
    "breast_density", "split",
]  # fmt: skip
FINDING_COLUMNS = [
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
    "breast_density", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split",
]  # fmt: skip


@dataclass
class VindrImage:
    """One image of a fake VinDr tree.

    Attributes:
        view: ``lcc`` | ``lmlo`` | ``rcc`` | ``rmlo`` (the pixels and the laterality/view_position columns).
        findings: finding rows as ``(finding_categories cell, finding_birads cell, (xmin, ymin, xmax, ymax) or
            None)``; empty = one ``['No Finding']`` row.
        file: write the image file (False = a row whose image is missing).
        row: write its breast-level and finding rows (False = an image with no row).
        suffix: the file's suffix.
    """

    study_id: str
    image_id: str
    view: str
    birads: str = "BI-RADS 1"
    density: str = "DENSITY B"
    split: str = "training"
    findings: list[tuple[str, str, Box | None]] = field(default_factory=list)
    case: int = 0
    file: bool = True
    row: bool = True
    suffix: str = ".dicom"


def write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_vindr(root: Path, images: list[VindrImage], shrink: int = 8, spacing: float = 0.07) -> Path:
    """Write the files and the two CSVs of ``images`` under ``root``; returns ``root``."""
    breast, finding = [], []
    for im in images:
        pixels = real_film(im.view, im.case, shrink)
        side, view = im.view[0].upper(), im.view[1:].upper()
        if im.file:
            write_film(
                root / "images" / im.study_id / f"{im.image_id}{im.suffix}",
                pixels,
                patient_id=im.study_id[:8],
                laterality=side,
                view=view,
                spacing=spacing,
            )
        if not im.row:
            continue
        row: dict[str, object] = {
            "study_id": im.study_id, "series_id": f"se-{im.study_id}", "image_id": im.image_id,
            "laterality": side, "view_position": view, "height": pixels.shape[0], "width": pixels.shape[1],
            "breast_birads": im.birads, "breast_density": im.density, "split": im.split,
        }  # fmt: skip
        breast.append(row)
        for categories, birads, box in im.findings or [("['No Finding']", "", None)]:
            coords = dict(zip(("xmin", "ymin", "xmax", "ymax"), box or ("", "", "", ""), strict=True))
            finding.append({**row, "finding_categories": categories, "finding_birads": birads, **coords})
    write_csv(root / "breast-level_annotations.csv", BREAST_COLUMNS, breast)
    write_csv(root / "finding_annotations.csv", FINDING_COLUMNS, finding)
    return root


def build_vindr_tree(root: Path, n_patients: int, test_every: int = 5, shrink: int = 8) -> Path:
    """A valid VinDr tree of ``n_patients`` studies × 4 films (every ``test_every``-th study in ``test``),
    BI-RADS 1–5 and density A–D cycling, a Mass box on the left CC of every study with BI-RADS ≥ 3."""
    images = []
    for i in range(n_patients):
        study = f"{i:04d}{'f' * 28}"
        birads = 1 + i % 5
        for j, view in enumerate(("lcc", "lmlo", "rcc", "rmlo")):
            findings: list[tuple[str, str, Box | None]] = []
            if view == "lcc" and birads >= 3:
                findings = [("['Mass']", f"BI-RADS {birads}", (40.0, 120.0, 100.0, 200.0))]
            images.append(
                VindrImage(
                    study_id=study,
                    image_id=f"{i:04d}{j}{'e' * 27}",
                    view=view,
                    birads=f"BI-RADS {birads if view == 'lcc' else 1}",
                    density=f"DENSITY {'ABCD'[i % 4]}",
                    split="test" if test_every and i % test_every == test_every - 1 else "training",
                    findings=findings,
                    case=i % 2,
                )
            )
    return write_vindr(root, images, shrink=shrink)
