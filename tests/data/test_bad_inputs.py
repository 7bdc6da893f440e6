"""No input file stops a ``prepare`` run: every bad file is a reported skip naming it (or, under ``fail``,
one error naming it). Hand-made bad files and a fuzzed corpus (truncations and tag deletions of real
DICOMs) go through ``read_image`` and ``prepare folder``; every input is accounted for."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from cbis_fakes import FakeLesion, synthetic_breast, write_dicom
from pydicom.dataelem import DataElement

from miram.data.cache import Cache, PrepareError
from miram.data.cbis_ddsm import prepare_cbis_ddsm
from miram.data.folder import prepare_folder
from miram.data.images import ImageError, image_shape, read_image


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available (install the test extra: pydicom-data)")
    return Path(path)


def edit(src: Path, dst: Path, **changes: object) -> Path:
    """Copy a DICOM with header elements replaced (``None`` deletes the element)."""
    ds = pydicom.dcmread(src)
    for name, value in changes.items():
        if name == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        elif value is None:
            delattr(ds, name)
        elif isinstance(value, DataElement):
            ds[value.tag] = value
        else:
            setattr(ds, name, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def bad_files(folder: Path) -> dict[str, str]:
    """The hand-made bad files of issue 14 -> a pattern their error message must match."""
    good = write_dicom(folder / "good.dcm", synthetic_breast(40, 30, 0))
    edit(good, folder / "window_empty.dcm", WindowCenter="", WindowWidth="")
    edit(good, folder / "window_text.dcm", WindowCenter=DataElement(0x00281050, "LO", "abc"),
         WindowWidth=DataElement(0x00281051, "LO", "wide"))  # fmt: skip
    edit(good, folder / "private_syntax.dcm", TransferSyntaxUID="1.2.3.4.5.6")
    image_tags = ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                  "PhotometricInterpretation", "PixelRepresentation")  # fmt: skip
    no_image = dict.fromkeys(image_tags)
    edit(good, folder / "structured_report.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.22", **no_image)
    edit(good, folder / "palette.dcm", PhotometricInterpretation="PALETTE COLOR")
    rle = write_dicom(folder / "rle.dcm", synthetic_breast(40, 30, 1), rle=True).read_bytes()
    (folder / "rle_truncated.dcm").write_bytes(rle[:-300])
    return {
        "window_empty.dcm": "window centre/width",
        "window_text.dcm": "window centre/width",
        "private_syntax.dcm": "transfer syntax '1.2.3.4.5.6'",
        "structured_report.dcm": "holds no image",
        "palette.dcm": "PALETTE COLOR",
        "rle_truncated.dcm": "truncated",
    }


def test_bad_files_raise_image_error_naming_file_and_problem(tmp_path: Path) -> None:
    for name, pattern in bad_files(tmp_path).items():
        with pytest.raises(ImageError, match=re.escape(pattern)) as e:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value), e.value
    with pytest.raises(ImageError, match="holds no image"):
        image_shape(tmp_path / "structured_report.dcm")
    assert read_image(tmp_path / "good.dcm").shape == (40, 30)


def skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as f:
        return {row["input"]: row["reason"] for row in csv.DictReader(f)}


def test_prepare_folder_skips_each_bad_file_and_fail_names_it(tmp_path: Path) -> None:
    expected = bad_files(tmp_path / "in" / "a")
    cache = Cache(prepare_folder(str(tmp_path / "in"), str(tmp_path / "c"), workers=0, progress=False))
    reasons = {Path(k).name: v for k, v in skipped(tmp_path / "c").items()}
    assert {Path(r.source).name for r in cache.records} == {"good.dcm", "rle.dcm"}
    for name, pattern in expected.items():
        assert pattern in reasons[name], (name, reasons[name])
    with pytest.raises(PrepareError, match=r"a/\w+\.dcm: "):
        prepare_folder(str(tmp_path / "in"), str(tmp_path / "d"), workers=0, progress=False, on_error="fail")


def test_prepare_cbis_ddsm_skips_bad_headers_and_ignores_a_report_in_a_series(
    fake_tree, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root, csv_dir = fake_tree("A", [FakeLesion("P_00001"), FakeLesion("P_00002"), FakeLesion("P_00003")])
    full = {
        p: next(root.rglob(f"Mass-Training_{p}_LEFT_CC/*/*full*/1-1.dcm")) for p in ("P_00001", "P_00002")
    }
    edit(full["P_00001"], full["P_00001"], WindowCenter="", WindowWidth="")
    edit(full["P_00002"], full["P_00002"].with_name("1-2.dcm"), SOPClassUID="1.2.840.10008.5.1.4.1.1.88.22",
         Rows=None, Columns=None, PixelData=None)  # fmt: skip
    cache = Cache(prepare_cbis_ddsm(str(root), str(csv_dir), str(tmp_path / "c"), workers=0, progress=False,
                                    min_size=8, min_crop=0))  # fmt: skip
    reasons = skipped(tmp_path / "c")
    assert "window centre/width" in reasons["Mass-Training_P_00001_LEFT_CC_1"]
    assert {r.key for r in cache.records} == {
        "Mass-Training_P_00002_LEFT_CC_1",
        "Mass-Training_P_00003_LEFT_CC_1",
    }
    assert "holds no image" in reasons[str(full["P_00002"].with_name("1-2.dcm"))]


def fuzzed_corpus(folder: Path, sources: list[Path], truncations: int = 12) -> list[Path]:
    """Per source: ``truncations`` cuts spread over the file, and every element (file meta included)
    deleted once and emptied once (an empty value, as in a WindowCenter written blank)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        data = src.read_bytes()
        for k in range(1, truncations + 1):
            path = folder / f"{src.stem}_cut{k:02d}.dcm"
            path.write_bytes(data[: len(data) * k // (truncations + 1)])
            out.append(path)
        original = pydicom.dcmread(src)
        for where, elements in (("meta", list(original.file_meta)), ("data", list(original))):
            for elem in elements:
                for how in ("del", "empty"):
                    fuzzed = pydicom.dcmread(src)
                    target = fuzzed.file_meta if where == "meta" else fuzzed
                    if how == "del":
                        del target[elem.tag]
                    else:
                        target[elem.tag].value = None
                    path = folder / f"{src.stem}_{how}_{elem.tag:08x}.dcm"
                    try:
                        fuzzed.save_as(path)
                    except Exception:  # noqa: BLE001 - pydicom refuses to write some of them: not an input then
                        path.unlink(missing_ok=True)
                        continue
                    out.append(path)
    return out


def reason_kind(reason: str) -> str:
    """The reason without the file name and details, for counting skips by kind."""
    return re.sub(r"\s*\(.*", "", reason.split(": ", 1)[1]).strip()


def test_fuzzed_real_dicoms_never_stop_prepare(tmp_path: Path) -> None:
    sources = [pydicom_file(n) for n in ("MR_small.dcm", "MR_small_RLE.dcm")]
    corpus = fuzzed_corpus(tmp_path / "in", sources)
    for path in corpus:  # read_image raises nothing but ImageError, naming the file
        try:
            read_image(path)
        except ImageError as e:
            assert str(path) in str(e)
    cache = Cache(prepare_folder(str(tmp_path / "in"), str(tmp_path / "c"), workers=0, progress=False,
                                 min_size=8))  # fmt: skip
    reasons = skipped(tmp_path / "c")
    assert len(cache) + len(reasons) == len(corpus)  # every input accounted for
    assert {Path(r.source) for r in cache.records} | {Path(k) for k in reasons} == set(corpus)
    kinds = Counter(reason_kind(r) for r in reasons.values())
    print(f"fuzzed corpus: {len(corpus)} inputs, {len(cache)} records, {len(reasons)} skipped: {dict(kinds)}")
    assert len(cache) > 0 and len(reasons) > 0
