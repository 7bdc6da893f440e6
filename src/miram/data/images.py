"""Image files of any supported kind → uint16 ``(H, W)``; reading only (crops: :mod:`miram.data.crops`).

PNG (8- or 16-bit), JPEG and DICOM are read; 8-bit data are scaled by 257 so that 255 → 65535 and every
source shares the cache's uint16 range. Colour images are converted to luminance (ITU-R 601).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from miram.data.dicom import DicomError, check_image_header, read_dicom, read_header

DICOM_SUFFIXES = (".dcm", ".dicom", "")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm")


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def is_dicom_path(path: Path) -> bool:
    """DICOM by suffix (``.dcm``, ``.dicom``, or no suffix as NBIA / PACS exports often have)."""
    return path.suffix.lower() in DICOM_SUFFIXES


def to_uint16_array(a: np.ndarray, path: str | Path) -> np.ndarray:
    """Grey uint16 from a decoded raster: 8-bit ×257, 16-bit as is, colour → luminance.

    Args:
        a: ``(H, W)`` or ``(H, W, C)`` uint8 / uint16 / int32 (PIL's ``I`` mode) / bool.
        path: for messages.

    Returns:
        uint16 ``(H, W)``.
    """
    if a.ndim == 3:
        if a.shape[2] in (3, 4):
            a = (a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).round().astype(a.dtype)
        elif a.shape[2] == 1:
            a = a[..., 0]
    if a.ndim != 2:
        raise ImageError(f"{path}: expected a grey or RGB image, got array of shape {a.shape}")
    if a.dtype == np.bool_:
        return a.astype(np.uint16) * np.uint16(65535)
    if a.dtype == np.uint8:
        return a.astype(np.uint16) * np.uint16(257)  # 255 -> 65535 exactly
    if a.dtype == np.uint16:
        return a
    if np.issubdtype(a.dtype, np.integer) and a.min() >= 0 and a.max() <= 65535:
        return a.astype(np.uint16)  # PIL opens some 16-bit PNGs as int32 'I'
    raise ImageError(f"{path}: unsupported pixel type {a.dtype} (range {a.min()}..{a.max()})")


def read_raster(path: str | Path) -> np.ndarray:
    """PNG / JPEG / TIFF → uint16 ``(H, W)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            conv = im.convert("RGB") if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "RGBA") else im
            arr = np.asarray(conv)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image, truncated or corrupt ({e})") from e
    return to_uint16_array(arr, path)


def read_image(path: str | Path) -> np.ndarray:
    """Any supported image file → uint16 ``(H, W)``; DICOM through :func:`miram.data.dicom.read_dicom`.

    Raises:
        ImageError: missing, unreadable or unsupported file, and nothing else: a failure this module did not
            foresee is reported as an ImageError too, naming the file and the exception, so that one file
            can always be skipped.
    """
    p = Path(path)
    try:
        if p.suffix.lower() in RASTER_SUFFIXES:
            return read_raster(p)
        return read_dicom(p).pixels
    except ImageError:
        raise
    except DicomError as e:
        raise ImageError(str(e)) from e
    except MemoryError:
        raise  # not the file's fault: a machine out of memory must stop the run
    except Exception as e:  # noqa: BLE001 - decoders raise anything on hostile bytes
        raise ImageError(f"{p}: cannot read the image ({type(e).__name__}: {e})") from e


def image_shape(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the header only (DICOM ``Rows``/``Columns`` or the raster header).

    Raises:
        ImageError: as :func:`read_image` (a DICOM without an image says so).
    """
    p = Path(path)
    try:
        if p.suffix.lower() in RASTER_SUFFIXES:
            from PIL import Image

            with Image.open(p) as im:
                return im.size[1], im.size[0]
        return check_image_header(read_header(p), p)
    except DicomError as e:
        raise ImageError(str(e)) from e
    except FileNotFoundError:
        raise ImageError(f"{p}: file not found") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises UnidentifiedImageError, OSError, SyntaxError ...
        raise ImageError(f"{p}: not a readable image ({type(e).__name__}: {e})") from e
