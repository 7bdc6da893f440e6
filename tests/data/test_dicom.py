"""DICOM decoding: pipeline order, bit depths, LUTs, codecs, bad files; breast mask and orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from cbis_fakes import synthetic_breast, write_dicom

from miram.data.breast import breast_mask, breast_side, flip_needed, largest_component
from miram.data.dicom import DicomError, read_dicom, read_header, view
from miram.data.dicom import laterality as side_of


def fixture_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available (install the test extra: pydicom-data)")
    return str(path)


def test_read_dicom_uint16_passthrough_when_16_bit(tmp_path: Path) -> None:
    px = synthetic_breast(40, 24, seed=0)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", px)).pixels
    assert out.dtype == np.uint16 and np.array_equal(out, px)


def test_read_dicom_bits_stored_12_scaled_to_full_range(tmp_path: Path) -> None:
    px = np.array([[0, 2048, 4095]], dtype=np.uint16).repeat(4, 0)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", px, BitsStored=12, HighBit=11)).pixels
    assert out[0].tolist() == [0, round(2048 * 65535 / 4095), 65535]


def test_read_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    px = np.array([[0, 100, 255]], dtype=np.uint8).repeat(3, 0)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", px, PhotometricInterpretation="MONOCHROME1")).pixels
    assert out[0].tolist() == [65535, 65535 - 100 * 257, 0]


def test_read_dicom_monochrome1_inverted_after_window(tmp_path: Path) -> None:
    # window [100, 200): values below it are black *before* inversion, so white after it
    px = np.array([[50, 150, 250]], dtype=np.uint16).repeat(3, 0)
    ds_path = write_dicom(tmp_path / "a.dcm", px, PhotometricInterpretation="MONOCHROME1",
                          WindowCenter=150, WindowWidth=100)  # fmt: skip
    out = read_dicom(ds_path).pixels[0]
    assert out[0] == 65535 and out[2] == 0 and 30000 < out[1] < 35000
    assert read_dicom(ds_path, voi=False).pixels[0, 0] == 65535 - 50  # modality values, inverted


def test_read_dicom_sigmoid_window(tmp_path: Path) -> None:
    px = np.array([[100, 150, 200]], dtype=np.uint16).repeat(2, 0)
    p = write_dicom(tmp_path / "a.dcm", px, WindowCenter=150, WindowWidth=100, VOILUTFunction="SIGMOID")
    out = read_dicom(p).pixels[0].astype(int)
    assert abs(out[1] - 32768) <= 1 and out[0] < out[1] < out[2]


def test_read_dicom_rle_roundtrip(tmp_path: Path) -> None:
    px = synthetic_breast(32, 20, seed=1)
    p = write_dicom(tmp_path / "rle.dcm", px, rle=True)
    assert pydicom.dcmread(p).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert np.array_equal(read_dicom(p).pixels, px)


def test_read_dicom_real_monochrome1_bits_stored_15() -> None:
    ds = pydicom.dcmread(fixture_file("RG1_UNCR.dcm"))
    out = read_dicom(fixture_file("RG1_UNCR.dcm"), voi=False).pixels
    raw = ds.pixel_array.astype(np.float64)
    assert ds.BitsStored == 15 and ds.PhotometricInterpretation == "MONOCHROME1"
    expected = 65535 - np.rint(raw * 65535 / (2**15 - 1))  # scaled by 2**15-1, not 65535, then inverted
    assert np.abs(out.astype(np.float64) - expected).max() <= 1


def test_read_dicom_real_j2k_matches_uncompressed() -> None:
    pytest.importorskip("openjpeg", reason="JPEG 2000 decoder (miram[dicom] extra) not installed")
    a = read_dicom(fixture_file("RG1_UNCR.dcm")).pixels
    b = read_dicom(fixture_file("RG1_J2KR.dcm")).pixels
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["RG3_UNCR.dcm", "vlut_04.dcm", "mlut_18.dcm", "MR2_UNCR.dcm"])
def test_read_dicom_real_lut_cases_use_full_range(name: str) -> None:
    out = read_dicom(fixture_file(name)).pixels
    assert out.dtype == np.uint16 and out.max() > 50000 and out.min() < 15000


def test_read_dicom_voi_lut_sequence_follows_lut() -> None:
    from pydicom.pixels.processing import apply_voi

    ds = pydicom.dcmread(fixture_file("vlut_04.dcm"))
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expected = apply_voi(ds.pixel_array, ds).astype(np.float64) * 65535 / (2**bits - 1)
    assert np.abs(read_dicom(fixture_file("vlut_04.dcm")).pixels - expected).max() <= 1


def test_read_dicom_padding_value_zeroed() -> None:
    ds = pydicom.dcmread(fixture_file("693_UNCR.dcm"))
    pad = ds.pixel_array == ds.PixelPaddingValue
    out = read_dicom(fixture_file("693_UNCR.dcm")).pixels
    assert pad.any() and (out[pad] == 0).all()


def test_read_dicom_missing_decoder_names_extra_and_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels.decoders.base as decoders

    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg-libjpeg"]

    # whether a JPEG-LS plugin is installed depends on the environment: simulate its absence
    monkeypatch.setattr(decoders, "get_decoder", lambda uid: Missing())
    with pytest.raises(DicomError, match=r"JPEG-LS Lossless.*pip install 'miram\[dicom\]'"):
        read_dicom(fixture_file("MR_small_jpeg_ls_lossless.dcm"))


def test_read_dicom_bad_files_name_the_file(tmp_path: Path) -> None:
    good = write_dicom(tmp_path / "good.dcm", synthetic_breast(64, 40, seed=0))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-2000])
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a DICOM file\n" * 20)
    for path, pattern in [
        (truncated, "truncated"),
        (text, "not a DICOM file"),
        (tmp_path / "nope.dcm", "not found"),
    ]:
        with pytest.raises(DicomError, match=pattern) as e:
            read_dicom(path)
        assert str(path) in str(e.value)


def test_read_header_and_orientation_helpers(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "x.dcm", synthetic_breast(16, 16, 0), Laterality="R", PatientOrientation="MLO")
    ds = read_header(p)
    assert "PixelData" not in ds and side_of(ds) == "R" and view(ds) == "MLO"
    assert side_of(None, "Calc-Test_P_00038_LEFT_CC.dcm") == "L" and view(None, "img_RCC.png") == "CC"


def test_breast_mask_drops_burned_in_label_and_fills_holes() -> None:
    img = synthetic_breast(400, 240, seed=0)
    img[150:170, 40:60] = 0  # fatty hole inside the breast
    img[20:40, 200:230] = 65535  # burned-in view label, separate from the breast
    mask = breast_mask(img)
    assert not mask[20:40, 200:230].any()
    assert mask[150:170, 40:60].all() and mask[200, 10]
    assert breast_side(mask) == "left" and flip_needed(mask, "right") and not flip_needed(mask, "left")


def test_largest_component_picks_biggest() -> None:
    m = np.zeros((10, 10), dtype=bool)
    m[0:2, 0:2] = True
    m[5:9, 5:9] = True
    assert largest_component(m).sum() == 16


def test_padding_zeroed_in_the_output_not_in_the_dataset(tmp_path: Path) -> None:
    px = synthetic_breast(32, 24, seed=2)
    px[:4] = 7  # padding rows
    im = read_dicom(write_dicom(tmp_path / "pad.dcm", px, PixelPaddingValue=7))
    assert (im.pixels[:4] == 0).all() and (im.ds.pixel_array[:4] == 7).all()  # the dataset keeps its values


def test_real_palette_color_refused() -> None:
    with pytest.raises(DicomError, match="PALETTE COLOR"):
        read_dicom(fixture_file("OBXXXX1A.dcm"))


def test_voi_lut_range_follows_the_descriptor_bits_as_the_standard_says(tmp_path: Path) -> None:
    # PS3.3 C.11.2.1.1: entries range over 0..2**n-1, n = the descriptor's third value; a 12-bit table
    # under a 16-bit descriptor is displayed dark by a conforming viewer, and here too (docs/data.md)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    px = np.array([[0, 2048, 4095]], dtype=np.uint16).repeat(2, 0)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", list(range(4096)))  # LUTData: identity, 12-bit values
    p = write_dicom(tmp_path / "voi.dcm", px, BitsStored=12, HighBit=11, VOILUTSequence=Sequence([item]))
    assert read_dicom(p).pixels[0].tolist() == [0, 2048, 4095]
