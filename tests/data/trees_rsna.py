"""Builders of RSNA Screening Mammography (Kaggle) trees: ``train_images/<patient_id>/<image_id>.dcm`` and
``train.csv`` with the competition's exact columns and value spellings (``0.0``-style numbers, empty BIRADS /
density, ``True``/``False`` difficult_negative_case), pixels from :func:`film_fakes.real_film`."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from film_fakes import real_film, write_film

COLUMNS = [
    "site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
    "BIRADS", "implant", "density", "machine_id", "difficult_negative_case",
]  # fmt: skip


@dataclass
class RsnaImage:
    """One image of a fake RSNA tree.

    Attributes:
        film: ``lcc`` | ``lmlo`` | ``rcc`` | ``rmlo``: the pixels and the laterality column.
        view: the view column (default from ``film``; RSNA also has ML, LM, AT ...).
        syntax: ``explicit`` or ``j2k`` (JPEG 2000, as many RSNA files).
        file: write the image file (False = a row whose image is missing).
        row: write its row (False = an image with no row).
    """

    patient_id: str
    image_id: str
    film: str
    cancer: str = "0"
    biopsy: str = "0"
    invasive: str = "0"
    birads: str = ""
    density: str = ""
    age: str = "58.0"
    view: str | None = None
    syntax: str = "explicit"
    case: int = 0
    file: bool = True
    row: bool = True
    imager_spacing: float | None = 0.07


def write_rsna(root: Path, images: list[RsnaImage], shrink: int = 8) -> Path:
    """Write the files and ``train.csv`` of ``images`` under ``root``; returns ``root``."""
    rows = []
    for im in images:
        side, view = im.film[0].upper(), im.view or im.film[1:].upper()
        if im.file:
            write_film(
                root / "train_images" / im.patient_id / f"{im.image_id}.dcm",
                real_film(im.film, im.case, shrink),
                patient_id=im.patient_id,
                laterality=side,
                view=view,
                imager_spacing=im.imager_spacing,
                syntax=im.syntax,
            )
        if im.row:
            rows.append({
                "site_id": 2, "patient_id": im.patient_id, "image_id": im.image_id, "laterality": side,
                "view": view, "age": im.age, "cancer": im.cancer, "biopsy": im.biopsy,
                "invasive": im.invasive, "BIRADS": im.birads, "implant": 0, "density": im.density,
                "machine_id": 49,
                "difficult_negative_case": "False",
            })  # fmt: skip
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def build_rsna_tree(
    root: Path, n_patients: int, cancer_every: int = 4, j2k_every: int = 2, shrink: int = 8
) -> Path:
    """A valid RSNA tree of ``n_patients`` patients × 4 films; every ``cancer_every``-th patient has cancer in
    the left breast, every ``j2k_every``-th patient's files are JPEG 2000; BIRADS and density are empty for
    cancer patients (as often in RSNA) and cycle otherwise."""
    images = []
    for i in range(n_patients):
        patient = str(10000 + i)
        cancer = bool(cancer_every) and i % cancer_every == cancer_every - 1
        for j, film in enumerate(("lcc", "lmlo", "rcc", "rmlo")):
            sick = cancer and film[0] == "l"
            images.append(
                RsnaImage(
                    patient_id=patient,
                    image_id=str(100000 * (i + 1) + j),
                    film=film,
                    cancer=str(int(sick)),
                    biopsy=str(int(sick)),
                    invasive=str(int(sick)),
                    birads="" if cancer else f"{i % 3}.0",
                    density="" if cancer else "ABCD"[i % 4],
                    syntax="j2k" if j2k_every and i % j2k_every == 0 else "explicit",
                    case=i % 2,
                )
            )
    return write_rsna(root, images, shrink=shrink)
