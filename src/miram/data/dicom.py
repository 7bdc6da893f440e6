"""The one DICOM decoder of miram: a grey image in, uint16 ``(H, W)`` display-ready pixels out.

Pipeline (DICOM PS3.3 C.11, see ``docs/cbis-ddsm.md`` §10.2): raw stored values (masked to BitsStored by
pydicom) → PixelPaddingValue noted → Modality LUT (rescale or LUT sequence) → VOI (LUT sequence, else
window centre/width with LINEAR / LINEAR_EXACT / SIGMOID) → scaled to the full uint16 range from the
*declared* range of that stage (``2**BitsStored - 1``, LUT descriptor bits, or the window), never from a
fixed 65535 → MONOCHROME1 inverted *after* VOI so dense tissue is bright → padding pixels set to 0.

RLE and uncompressed data decode with pydicom + numpy; JPEG / JPEG-LS / JPEG 2000 need the optional
``miram[dicom]`` extra, and a missing decoder is reported with the transfer syntax and the install command.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

INSTALL_HINT = "pip install 'miram[dicom]'"
_U16 = 65535.0


class DicomError(ValueError):
    """A file that cannot be decoded; the message names the file and the problem."""


@dataclass
class DicomImage:
    """A decoded grey DICOM image.

    Attributes:
        pixels: uint16 ``(H, W)``, bright = dense, padding = 0.
        ds: the dataset (pixel data still attached; drop the reference to free it).
        path: source file.
    """

    pixels: np.ndarray
    ds: Dataset
    path: str


def _open(path: str | Path, stop_before_pixels: bool) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise DicomError(f"{p}: file not found")
    try:
        ds = _read(p, stop_before_pixels, force=False)
    except pydicom.errors.InvalidDicomError:
        # no 'DICM' preamble: some writers omit it; retry leniently
        try:
            ds = _read(p, stop_before_pixels, force=True)
        except Exception as e:  # forced parsing of arbitrary bytes can fail (or run off the end) in many ways
            raise DicomError(f"{p}: not a DICOM file ({type(e).__name__}: {e})") from e
        if "Rows" not in ds or "Columns" not in ds:
            raise DicomError(f"{p}: not a DICOM file (no DICM preamble and no image header)") from None
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    if "TransferSyntaxUID" not in ds.file_meta or not ds.file_meta.TransferSyntaxUID:
        raise DicomError(f"{p}: corrupt DICOM file (the file meta holds no TransferSyntaxUID)")
    return ds


def _read(p: Path, stop_before_pixels: bool, force: bool) -> Dataset:
    """``dcmread`` whose failures and end-of-file warnings become a :class:`DicomError` saying truncated."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels, force=force)
        except pydicom.errors.InvalidDicomError:
            raise
        except Exception as e:  # pydicom raises EOFError, OSError, ValueError, KeyError, struct.error ...
            raise DicomError(f"{p}: truncated or corrupt DICOM file ({type(e).__name__}: {e})") from e
    # pydicom drops an element cut by the end of the file with only a warning (a truncated RLE / JPEG
    # PixelData then looks like "no pixel data"): say what happened
    ends = [str(w.message) for w in caught if "End of file" in str(w.message)]
    if ends:
        raise DicomError(f"{p}: truncated DICOM file ({ends[0]})")
    return ds


def read_header(path: str | Path) -> Dataset:
    """Read the header only (``stop_before_pixels``); fast enough to index a whole download.

    Raises:
        DicomError: missing, non-DICOM or truncated file.
    """
    return _open(path, stop_before_pixels=True)


def _check_decoder(ds: Dataset, path: str | Path) -> None:
    ts = pydicom.uid.UID(str(ds.file_meta.TransferSyntaxUID))
    if not ts.is_transfer_syntax:
        raise DicomError(
            f"{path}: transfer syntax '{ts}' is private or unknown; its pixel data cannot be decoded"
        )
    if not ts.is_compressed:
        return
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError as e:
        raise DicomError(f"{path}: transfer syntax {ts.name} ({ts}) is not supported by pydicom") from e
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies)
        raise DicomError(
            f"{path}: no decoder installed for transfer syntax {ts.name} ({ts}); "
            f"install the optional extra: {INSTALL_HINT} (pydicom can use: {options})"
        )


def _padding_mask(raw: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or inside [value, range limit]), on the stored values."""
    if "PixelPaddingValue" not in ds:
        return None
    lo = int(ds.PixelPaddingValue)
    hi = int(ds.get("PixelPaddingRangeLimit", lo))
    lo, hi = min(lo, hi), max(lo, hi)
    mask = (raw >= lo) & (raw <= hi)
    return mask if mask.any() else None


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_bits(item: Dataset) -> int:
    desc = [int(v) for v in item.LUTDescriptor]
    return desc[2] if len(desc) > 2 and desc[2] > 0 else 16


def _modality(arr: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float]]:
    """Apply the Modality LUT; return the values and their declared range."""
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels.processing import apply_modality_lut

        out = apply_modality_lut(arr, ds)
        return out, (0.0, 2.0 ** _lut_bits(ds.ModalityLUTSequence[0]) - 1)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == 0.0:
        return arr, (lo, hi)
    out = arr.astype(np.float64) * slope + intercept
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return out, (ends[0], ends[1])


def _window_value(ds: Dataset, name: str, index: int, path: str | Path) -> float:
    """``WindowCenter`` / ``WindowWidth`` number ``index`` (the last one when fewer are given).

    Raises:
        DicomError: an empty or non-numeric value.
    """
    value = ds[name].value
    values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    try:
        number = float(values[min(index, len(values) - 1)])
    except (TypeError, ValueError, IndexError):
        number = float("nan")
    if not np.isfinite(number):
        raise DicomError(
            f"{path}: invalid window centre/width (WindowCenter={ds.get('WindowCenter')!r}, "
            f"WindowWidth={ds.get('WindowWidth')!r}); pass voi=False to decode without the window"
        )
    return number


def _window(x: np.ndarray, ds: Dataset, index: int, path: str | Path) -> np.ndarray:
    """Window centre/width to [0, 1] (PS3.3 C.11.2.1.2/3)."""
    c = _window_value(ds, "WindowCenter", index, path)
    w = max(_window_value(ds, "WindowWidth", index, path), 1.0)
    fn = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    x = x.astype(np.float64, copy=False)
    if fn == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if fn == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    return np.clip((x - (c - 0.5)) / max(w - 1.0, 1.0) + 0.5, 0.0, 1.0)


def to_uint16(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map values declared to lie in [lo, hi] linearly onto [0, 65535] (uint16, same shape)."""
    if values.dtype == np.uint16 and lo == 0 and hi == _U16:
        return values  # CBIS-DDSM fast path: 16-bit unsigned, nothing to do
    scaled = (values.astype(np.float64) - lo) * (_U16 / max(hi - lo, 1e-12))
    return np.clip(np.rint(scaled), 0, _U16).astype(np.uint16)


def decode_pixels(
    ds: Dataset, path: str | Path = "<dataset>", voi: bool = True, window_index: int = 0
) -> np.ndarray:
    """Decode the pixels of a dataset read with pixel data; see the module docstring for the order.

    Args:
        ds: dataset with PixelData.
        path: used in error messages.
        voi: apply the VOI LUT or window when present (False keeps the modality values).
        window_index: which window to use when WindowCenter/Width are multi-valued.

    Returns:
        uint16 ``(H, W)``.

    Raises:
        DicomError: no pixel data, colour or multi-frame image, missing decoder, truncated pixel data.
    """
    check_image_header(ds, path)
    if "PixelData" not in ds:
        raise DicomError(f"{path}: no pixel data (PixelData element missing)")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(
            f"{path}: colour image (SamplesPerPixel={ds.SamplesPerPixel}); only grey images are supported"
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(
            f"{path}: multi-frame image ({ds.NumberOfFrames} frames); only single-frame images are supported"
        )
    _check_decoder(ds, path)
    try:
        raw = ds.pixel_array
    except Exception as e:  # decoders raise ValueError, RuntimeError, struct errors on short data
        if "12-bit precision" in str(e):  # GDCM and Pillow refuse it: not damage, a missing decoder
            raise DicomError(
                f"{path}: {ds.file_meta.TransferSyntaxUID.name} with {ds.get('BitsStored')}-bit samples has "
                "no permissively licensed decoder (GDCM and Pillow refuse it); pylibjpeg-libjpeg decodes it "
                "but is GPL-3.0, so miram[dicom] leaves it out: install it yourself if its licence suits you"
            ) from e
        raise DicomError(
            f"{path}: cannot decode pixel data, file truncated or corrupt ({type(e).__name__}: {e})"
        ) from e
    if raw.ndim != 2:
        raise DicomError(f"{path}: expected a 2-D image, got pixel array of shape {raw.shape}")
    padding = _padding_mask(raw, ds)
    values, (lo, hi) = _modality(raw, ds)
    if voi and "VOILUTSequence" in ds:
        from pydicom.pixels.processing import apply_voi

        item = ds.VOILUTSequence[min(window_index, len(ds.VOILUTSequence) - 1)]
        values = apply_voi(values, ds, index=min(window_index, len(ds.VOILUTSequence) - 1))
        lo, hi = 0.0, 2.0 ** _lut_bits(item) - 1
    elif voi and "WindowCenter" in ds and "WindowWidth" in ds:
        values, lo, hi = _window(values, ds, window_index, path), 0.0, 1.0
    out = to_uint16(values, lo, hi)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = np.subtract(np.uint16(65535), out, dtype=np.uint16)  # after VOI: dense tissue ends up bright
    if padding is not None:
        if not out.flags.writeable or np.shares_memory(out, raw):
            out = out.copy()  # the fast path hands back ds.pixel_array itself: the dataset keeps its values
        out[padding] = 0
    return out


def check_image_header(ds: Dataset, path: str | Path) -> tuple[int, int]:
    """``(Rows, Columns)`` of a dataset that holds one grey image.

    Raises:
        DicomError: no image in the file (a structured report, a presentation state ...), or an image
            whose PhotometricInterpretation is not MONOCHROME1/2 (PALETTE COLOR holds palette indices,
            not intensities, and is refused rather than decoded as grey).
    """
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except (TypeError, ValueError):
        rows, columns = 0, 0
    if rows <= 0 or columns <= 0:
        kind = pydicom.uid.UID(str(ds.get("SOPClassUID", "") or "unknown SOP class"))
        name = kind.name if kind.is_valid else str(kind)
        raise DicomError(f"{path}: holds no image ({name}: no Rows/Columns); not an image file")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if photometric == "PALETTE COLOR":
        raise DicomError(
            f"{path}: PALETTE COLOR image (pixel values index a colour palette, not intensities); "
            "only grey MONOCHROME1/2 images are supported"
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2") and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        raise DicomError(f"{path}: PhotometricInterpretation {photometric!r} is not a grey image")
    return rows, columns


def read_dicom(path: str | Path, voi: bool = True, window_index: int = 0) -> DicomImage:
    """Read and decode one grey DICOM file.

    Args:
        path: the file.
        voi: apply the VOI LUT or window when present.
        window_index: which window to use when several are given.

    Returns:
        the image, pixels uint16 ``(H, W)``.

    Raises:
        DicomError: missing, non-DICOM, truncated or undecodable file (message names the file).
    """
    ds = _open(path, stop_before_pixels=False)
    return DicomImage(decode_pixels(ds, path, voi=voi, window_index=window_index), ds, str(path))


_SIDE_WORDS = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}
_VIEWS = ("MLO", "CC", "ML", "LM", "XCCL", "XCCM", "LMO", "SIO", "AT", "FB")


def laterality(ds: Dataset | None, path: str | Path | None = None) -> str | None:
    """Side of the breast: ImageLaterality, then Laterality, then the file name. Returns ``"L"``, ``"R"``
    or None."""
    if ds is not None:
        for tag in ("ImageLaterality", "Laterality"):
            v = str(ds.get(tag, "") or "").strip().upper()
            if v in ("L", "R"):
                return v
    if path is not None:
        for token in re.split(r"[^A-Za-z]+", Path(path).name.upper()):
            if token in ("LEFT", "RIGHT"):
                return _SIDE_WORDS[token]
        m = re.search(r"(?:^|[^A-Z])([LR])[-_ ]?(CC|MLO)(?:[^A-Z]|$)", Path(path).name.upper())
        if m:
            return m.group(1)
    return None


def view(ds: Dataset | None, path: str | Path | None = None) -> str | None:
    """View position: ViewPosition, then PatientOrientation (CBIS-DDSM stores it there), then the file
    name. Returns e.g. ``"CC"``, ``"MLO"`` or None."""
    if ds is not None:
        for tag in ("ViewPosition", "PatientOrientation"):
            raw = ds.get(tag, "")
            values = list(raw) if isinstance(raw, pydicom.multival.MultiValue) else [raw]
            for v in values:
                v = str(v or "").strip().upper()
                if v in _VIEWS:
                    return v
    if path is not None:
        for token in re.split(r"[^A-Za-z]+", Path(path).name.upper()):
            for v in _VIEWS:
                if token in (v, "L" + v, "R" + v):
                    return v
    return None


def pixel_spacing(ds: Dataset | None) -> tuple[tuple[float, float] | None, str | None]:
    """Millimetres per pixel, ``(row, column)``, and the tag it came from.

    PixelSpacing (calibrated to the patient) first, then ImagerPixelSpacing (at the detector): mammography
    writers fill one or the other. Scanned films often carry neither: ``(None, None)``.
    """
    if ds is None:
        return None, None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        raw = ds.get(tag)
        if raw is None:
            continue
        values = list(raw) if isinstance(raw, pydicom.multival.MultiValue) else [raw]
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            continue
        if len(numbers) == 1:
            numbers *= 2
        if len(numbers) >= 2 and all(np.isfinite(v) and v > 0 for v in numbers[:2]):
            return (numbers[0], numbers[1]), tag
    return None, None
