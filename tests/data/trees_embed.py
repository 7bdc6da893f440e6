"""Builders of EMBED open-release trees: ``images/cohort_<n>/<empi_anon>/<study>/<SOP>.dcm`` with real
mammogram pixels (:mod:`film_fakes`), and ``tables/EMBED_OpenData_metadata.csv`` (one row per file) and
``tables/EMBED_OpenData_clinical.csv`` (one row per finding) with the shipped column names."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from film_fakes import real_film, write_film

# a subset of the shipped columns in their order, with the unnamed pandas index column the tables open with
METADATA_COLUMNS = [
    "",
    "Manufacturer",
    "ManufacturerModelName",
    "PatientSex",
    "SeriesDescription",
    "StudyDescription",
    "ViewPosition",
    "WindowCenter",
    "WindowWidth",
    "empi_anon",
    "acc_anon",
    "study_date_anon",
    "cohort_num",
    "ImageLateralityFinal",
    "FinalImageType",
    "spot_mag",
    "png_path",
    "png_filename",
    "anon_dicom_path",
    "num_roi",
    "ROI_coords",
    "SRC_DST",
    "match_level",
]
CLINICAL_COLUMNS = [
    "",
    "empi_anon",
    "acc_anon",
    "study_date_anon",
    "desc",
    "tissueden",
    "asses",
    "numfind",
    "side",
    "total_L_find",
    "total_R_find",
    "massshape",
    "massmargin",
    "massdens",
    "calcfind",
    "calcdistri",
    "calcnumber",
    "bside",
    *(f"path{i}" for i in range(1, 11)),
    "path_severity",
    "age_at_study",
    "ETHNIC_GROUP_DESC",
]
NAS = "/mnt/NAS2/mammo/anon_dicom"  # where the publisher's anon_dicom_path values point
VIEW_CODES = {("L", "CC"): "lcc", ("L", "MLO"): "lmlo", ("R", "CC"): "rcc", ("R", "MLO"): "rmlo"}


@dataclass
class EmbedImage:
    """One metadata row (and, unless ``write`` is False, its DICOM file)."""

    empi: str
    acc: str
    sop: str
    side: str
    view: str
    kind: str = "2D"
    spot_mag: str = ""
    roi: str = "()"
    match_level: str = ""
    cohort: int = 1
    study: str = "1.2.840.1"
    path_style: str = "nas"  # nas: /mnt/NAS2/... ; aws: ./images/cohort_1/...
    case: int = 0
    write: bool = True
    imager_spacing: float | None = 0.07
    acc_in_metadata: str | None = None  # the acc_anon as the metadata writes it (e.g. "123.0")

    @property
    def rel(self) -> str:
        return f"cohort_{self.cohort}/{self.empi}/{self.study}/{self.sop}.dcm"

    @property
    def file(self) -> str:
        return f"images/{self.rel}"

    def anon_dicom_path(self) -> str:
        return f"{NAS}/{self.rel}" if self.path_style == "nas" else f"./images/{self.rel}"

    def row(self, index: int) -> dict[str, str]:
        n_roi = self.roi.count("(") - 1 if self.roi.startswith("((") else 0
        return {
            "": str(index),
            "Manufacturer": "HOLOGIC, Inc.",
            "ManufacturerModelName": "Selenia Dimensions",
            "PatientSex": "F",
            "SeriesDescription": f"{self.side} {self.view}" + (" C-View" if self.kind == "cview" else ""),
            "StudyDescription": "MG Screen Bilat w/Tomo/CAD Stnd Protocol",
            "ViewPosition": self.view,
            "WindowCenter": "2047.0",
            "WindowWidth": "4096.0",
            "empi_anon": self.empi,
            "acc_anon": self.acc_in_metadata or self.acc,
            "study_date_anon": "2017-04-19",
            "cohort_num": str(self.cohort),
            "ImageLateralityFinal": self.side,
            "FinalImageType": self.kind,
            "spot_mag": self.spot_mag,
            "png_path": f"/mnt/NAS3/mammo/png/cohort_{self.cohort}/extracted-images/{self.sop}.png",
            "png_filename": f"{self.sop}.png",
            "anon_dicom_path": self.anon_dicom_path(),
            "num_roi": str(n_roi),
            "ROI_coords": self.roi,
            "SRC_DST": "",
            "match_level": self.match_level,
        }


def finding(
    empi: str,
    acc: str,
    side: str,
    asses: str,
    tissueden: str = "2",
    numfind: int = 1,
    path_severity: str = "",
    bside: str = "",
    desc: str = "MG Screen Bilat w/Tomo/CAD Stnd Protocol",
) -> dict[str, str]:
    """One clinical row (a finding) with the shipped column names."""
    return {
        "empi_anon": empi,
        "acc_anon": acc,
        "study_date_anon": "2017-04-20",
        "desc": desc,
        "tissueden": tissueden,
        "asses": asses,
        "numfind": str(numfind),
        "side": side,
        "bside": bside,
        "path1": "ID" if path_severity in ("0", "0.0") else "",
        "path_severity": path_severity,
        "age_at_study": "52.03",
        "ETHNIC_GROUP_DESC": "Non-Hispanic or Latino",
    }


def write_table(path: Path, columns: list[str], rows: Iterable[Mapping[str, str]]) -> Path:
    """A CSV as pandas writes the EMBED tables (missing values empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, row in enumerate(rows):
            writer.writerow([row.get(c, str(i) if c == "" else "") for c in columns])
    return path


def write_images(root: Path, images: Iterable[EmbedImage]) -> None:
    """The DICOM files of ``images`` (real pixels of the matching view, shrunk 8 times)."""
    for im in images:
        if not im.write:
            continue
        write_film(
            root / im.file,
            real_film(VIEW_CODES[(im.side, im.view)], case=im.case, shrink=8),
            patient_id=im.empi,
            laterality=im.side,
            view=im.view,
            imager_spacing=im.imager_spacing,
            SOPInstanceUID=im.sop,
        )


def write_tree(root: Path, images: list[EmbedImage], findings: list[dict[str, str]]) -> Path:
    """Files, metadata and clinical tables under ``root``; returns ``root``."""
    write_images(root, images)
    write_table(
        root / "tables" / "EMBED_OpenData_metadata.csv",
        METADATA_COLUMNS,
        [im.row(i) for i, im in enumerate(images)],
    )
    write_table(root / "tables" / "EMBED_OpenData_clinical.csv", CLINICAL_COLUMNS, findings)
    return root


# per patient (by index mod 4): the exam's findings and what they say about (left, right) cancer
PATTERNS: tuple[tuple[tuple[str, str, str, str], ...], ...] = (
    (("", "N", "2", ""),),  # negative screening: one row without a side
    (("L", "A", "3", ""), ("R", "N", "3", "")),  # additional evaluation of the left breast
    (("L", "S", "3", "0"), ("R", "B", "3", "")),  # biopsied left cancer
    (("B", "B", "4", "4"),),  # benign pathology, bilateral
)


def build_embed_tree(root: Path, n_patients: int, cohort: int = 1) -> Path:
    """A valid EMBED tree of ``n_patients`` × 4 films (L/R CC/MLO of one screening exam each; ROI boxes on
    the suspicious ones) with clinical rows cycling through :data:`PATTERNS`.

    Returns:
        ``root``.
    """
    images: list[EmbedImage] = []
    findings: list[dict[str, str]] = []
    for p in range(n_patients):
        empi, acc = str(10_000_000 + p), str(6_555_526_148_046_184 + p)
        study = f"1.2.840.113619.2.{p}"
        pattern = PATTERNS[p % len(PATTERNS)]
        for k, (side, view) in enumerate(VIEW_CODES):
            roi = "((120, 60, 180, 140),)" if pattern[0][1] == "S" and side == "L" else "()"
            images.append(
                EmbedImage(
                    empi, acc, f"1.2.826.0.1.3680043.8.498.{p}.{k}", side, view, roi=roi,
                    match_level="[['1']]" if roi != "()" else "", cohort=cohort, study=study, case=p % 2,
                )
            )  # fmt: skip
        for numfind, (side, asses, density, severity) in enumerate(pattern, start=1):
            findings.append(finding(empi, acc, side, asses, density, numfind, severity))
    return write_tree(root, images, findings)
