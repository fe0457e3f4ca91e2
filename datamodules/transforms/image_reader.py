"""Read any supported image file into one numeric convention.

The convention (used by every later step):

* ``float32`` array of shape ``[H, W, C]`` with ``C`` = 1 (grayscale) or 3 (RGB);
* values in ``[0, 1]``: integer images are divided by the maximum of their storage type
  (255 for 8-bit, 65535 for 16-bit), so the same picture stored as 8-bit PNG, 8-bit
  JPEG or 16-bit TIFF reads to the same numbers (up to JPEG loss); float images are
  clipped to ``[0, 1]``;
* colour to grayscale uses ITU-R BT.601 luma (``0.299 R + 0.587 G + 0.114 B``, as
  Pillow's ``convert("L")``); grayscale to RGB repeats the channel;
* palette (``P``) images are expanded through their palette; an alpha channel is
  dropped (medical images carry no meaning in it);
* multi-page TIFFs are refused (they are stacks, not single images);
* DICOM (``.dcm``): the modality LUT (rescale slope and intercept) is applied, then the
  file's VOI LUT or window (centre and width, the first one if several) maps the values
  to [0, 1] over the window's output range; without either, the image's own minimum and
  maximum map to 0 and 1. ``MONOCHROME1`` images (bright = low values) are inverted, so
  bone is bright in every file. Colour DICOMs follow the integer rule above. Multi-frame
  files are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrepro.core.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
TIFF_EXTENSIONS = (".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm",)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with a supported image extension (any case)."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path, channels: int = 1) -> np.ndarray:
    """Read ``path`` to a ``float32 [H, W, channels]`` array in ``[0, 1]``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in DICOM_EXTENSIONS:
            return _to_channels(read_dicom(path), channels)
        array = _read_tiff(path) if suffix in TIFF_EXTENSIONS else _read_pil(path)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, RuntimeError,
            NotImplementedError, AttributeError, KeyError) as error:
        raise DataError(
            f"Cannot read image {path} ({error}); replace or delete the file "
            "(`python audit.py` lists every unreadable file)."
        ) from error
    return _to_channels(_to_unit_float(array), channels)


def _read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB" if image.mode != "1" else "L")
        elif image.mode == "I;16B":
            image = image.convert("I;16")
        array = np.asarray(image)
    if image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # Pillow reads some 16-bit files as 32-bit "I"
    return array


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            raise DataError(
                f"{path} is a multi-page TIFF with {len(tif.pages)} pages; "
                "export one image per file."
            )
        return tif.pages[0].asarray()


def read_dicom(path: str | Path) -> np.ndarray:
    """A single-frame DICOM file as ``float32 [H, W]`` (grayscale) or ``[H, W, 3]`` in [0, 1]."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise ValueError(f"not a DICOM file: {error}") from error
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{path} is a multi-frame DICOM with {frames} frames; export one image per file."
        )
    if "PixelData" not in ds:
        raise DataError(f"{path} is a DICOM file without an image; remove it from the data set.")
    pixels = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        return _to_unit_float(pixels)
    values = np.asarray(apply_modality_lut(pixels, ds))
    if "VOILUTSequence" in ds:  # the LUT's own values span its output range
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        low, high = lut.min(), lut.max()
        values = np.asarray(apply_voi_lut(np.round(values).astype(np.int64), ds), np.float64)
    elif "WindowCenter" in ds:  # the window's output range: far below and far above it
        low, high = np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds), dtype=np.float64)
        values = np.asarray(apply_voi_lut(values.astype(np.float64), ds), dtype=np.float64)
    else:
        values = values.astype(np.float64)
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    span = high - low
    unit = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF: samples first
    if array.ndim == 3 and array.shape[2] in (2, 4):  # LA or RGBA: drop alpha
        array = array[:, :, :-1]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise DataError(f"Image with shape {array.shape} is neither grayscale nor colour.")
    if array.shape[2] == channels:
        return np.ascontiguousarray(array, dtype=np.float32)
    if channels == 1:
        return (array @ _LUMA)[:, :, None].astype(np.float32)
    return np.repeat(array, 3, axis=2)
