"""The `dicom` extra: permissively licensed decoders only, and with it every compressed syntax of pydicom's
real test files decodes (lossless ones to exactly the uncompressed pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from miram.data.dicom import DicomError, read_dicom

REPO = Path(__file__).resolve().parents[2]
GPL_DECODERS = {"pylibjpeg-libjpeg"}  # GPL-3.0: must not come with an Apache-2.0 package


def _extra(name: str) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [req.split(">")[0].split("=")[0].strip() for req in project["optional-dependencies"][name]]


def test_the_dicom_extra_has_no_gpl_decoder() -> None:
    packages = set(_extra("dicom"))
    assert packages == {"pylibjpeg", "pylibjpeg-openjpeg", "python-gdcm"}
    assert not packages & GPL_DECODERS


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("JPEG-LL.dcm", None),  # JPEG lossless, process 14 SV1, 16 bit
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", None),  # the same, 8 bit
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, 12 bit
        ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, 15 bit radiograph
        ("JPEG2000.dcm", None),  # JPEG 2000
    ],
)
def test_compressed_syntaxes_decode_with_the_extra(compressed: str, reference: str | None) -> None:
    pytest.importorskip("gdcm", reason="the dicom extra is not installed")
    data = pytest.importorskip("pydicom.data")
    image = read_dicom(data.get_testdata_file(compressed)).pixels
    assert image.dtype == np.uint16 and image.ndim == 2 and int(image.max()) > int(image.min())
    if reference is not None:
        np.testing.assert_array_equal(image, read_dicom(data.get_testdata_file(reference)).pixels)


def test_12_bit_jpeg_extended_without_libjpeg_is_a_missing_decoder_not_damage() -> None:
    pytest.importorskip("gdcm", reason="the dicom extra is not installed")
    data = pytest.importorskip("pydicom.data")
    try:
        import libjpeg  # noqa: F401  (GPL-3.0; a user may install it)
    except ImportError:
        pass
    else:
        pytest.skip("pylibjpeg-libjpeg is installed here: 12-bit JPEG Extended decodes")
    with pytest.raises(DicomError, match="12-bit samples has no permissively licensed decoder.*GPL-3.0"):
        read_dicom(data.get_testdata_file("JPEG-lossy.dcm"))
