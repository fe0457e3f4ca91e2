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
* Images of more than ``max_pixels`` pixels (``data.checks.max_image_pixels``, default
  :data:`DEFAULT_MAX_IMAGE_PIXELS`) are refused as possible decompression bombs
  (:class:`ImageTooLarge`), in every format. Pillow's own guard,
  ``PIL.Image.MAX_IMAGE_PIXELS``, is raised to the limit in use (never lowered), so an
  image within the limit decodes without Pillow's ``DecompressionBombWarning``.
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrepro.core.errors import DataError

# 200 million pixels (about 14,142 x 14,142): above any radiograph or MRI slice (an 11,000 x
# 11,000 scan is 121 million), below what a few bytes of crafted PNG can inflate to
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000
MAX_PIXELS_SETTING = "data.checks.max_image_pixels"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
TIFF_EXTENSIONS = (".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm",)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with a supported image extension (any case)."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


class UnreadableImage(DataError):
    """An image file that cannot be decoded; ``path`` and ``reason`` (a phrase) say which
    and why, the message is the whole sentence."""

    def __init__(self, path: str | Path, reason: str, sentence: str | None = None) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(sentence or (
            f"Cannot read image {path} ({reason}); replace or delete the file "
            "(`python audit.py` lists every unreadable file)."
        ))


class ImageTooLarge(UnreadableImage):
    """An image of more pixels than the limit: a possible decompression bomb.

    ``size`` is ``(width, height)`` where known; ``pixels`` their product (or the count
    Pillow's ``DecompressionBombError`` gave, or ``None``)."""

    def __init__(self, path: str | Path, max_pixels: int, size: tuple[int, int] | None = None,
                 pixels: int | None = None) -> None:
        self.size, self.max_pixels = size, int(max_pixels)
        self.pixels = size[0] * size[1] if size else pixels
        super().__init__(path, self.reason_phrase(), too_large_sentence(path, self))

    def reason_phrase(self) -> str:
        """``possible decompression bomb: 20000x20000 = 400,000,000 pixels, more than ...``"""
        if self.size:
            count = f"{self.size[0]}x{self.size[1]} = {self.pixels:,} pixels, more than"
        elif self.pixels:
            count = f"{self.pixels:,} pixels, more than"
        else:
            count = "more pixels than"
        return (f"possible decompression bomb: {count} {MAX_PIXELS_SETTING} "
                f"({self.max_pixels:,}) allows")


def too_large_sentence(path: str | Path, error: ImageTooLarge, other_fix: str = "delete it",
                       also: str = "") -> str:
    """One sentence naming ``path`` as a possible decompression bomb and the setting that
    allows large images; ``other_fix`` is what to do with a file that is not genuine,
    ``also`` a parenthesis on other files."""
    needed = (f"={error.pixels} (or more)" if error.pixels
              else f" higher than {error.max_pixels}")
    return (
        f"Image {path} is refused as a {error.reason_phrase()}{also}; if it is a genuine "
        f"image, set {MAX_PIXELS_SETTING}{needed}, otherwise {other_fix}."
    )


def check_pixel_count(path: str | Path, width: int, height: int, max_pixels: int) -> None:
    """Raise :class:`ImageTooLarge` when ``width x height`` exceeds ``max_pixels``."""
    if int(width) * int(height) > max_pixels:
        raise ImageTooLarge(path, max_pixels, size=(int(width), int(height)))


def allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's process-wide guard ``Image.MAX_IMAGE_PIXELS`` to ``max_pixels`` (never
    lower it: our own check, :func:`check_pixel_count`, enforces each caller's limit), so
    images within the limit open without a ``DecompressionBombWarning``."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


# header checks open images from several threads; catch_warnings saves and restores the
# process-wide filter list, so one thread at a time
_WARNING_FILTERS = threading.Lock()


def open_image(source, max_pixels: int) -> Image.Image:
    """``Image.open(source)`` for a caller that checks ``max_pixels`` itself
    (:func:`check_pixel_count`): Pillow's guard is raised to the limit and its
    ``DecompressionBombWarning`` for images between its guard and twice it is not printed
    (above twice it, Pillow still raises ``DecompressionBombError``), so a refused image is
    reported once, in our sentence."""
    allow_pixels(max_pixels)
    with _WARNING_FILTERS, warnings.catch_warnings():  # the filters are process-wide
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def pixels_in_bomb_error(error: Exception | str) -> int | None:
    """The pixel count in Pillow's ``DecompressionBombError`` message (or in our own
    reason, :meth:`ImageTooLarge.reason_phrase`), when it says one."""
    found = re.search(r"\((\d+) pixels\)|= ([\d,]+) pixels|: ([\d,]+) pixels", str(error))
    return int(next(g for g in found.groups() if g).replace(",", "")) if found else None


def read_image(path: str | Path, channels: int = 1, max_pixels: int | None = None) -> np.ndarray:
    """Read ``path`` to a ``float32 [H, W, channels]`` array in ``[0, 1]``.

    A file that cannot be decoded raises :class:`UnreadableImage` (a ``DataError``), one of
    more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_IMAGE_PIXELS`)
    :class:`ImageTooLarge`."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in DICOM_EXTENSIONS:
            return _to_channels(read_dicom(path, max_pixels), channels)
        if suffix in TIFF_EXTENSIONS:
            array = _read_tiff(path, max_pixels)
        else:
            array = _read_pil(path, max_pixels)
        return _to_channels(_to_unit_float(array), channels)
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # more than twice Pillow's guard
        raise ImageTooLarge(path, max_pixels, pixels=pixels_in_bomb_error(error)) from error
    except (OSError, EOFError, UnidentifiedImageError, ValueError, TypeError, SyntaxError,
            RuntimeError, NotImplementedError, AttributeError, KeyError, IndexError,
            struct.error, zlib.error) as error:  # what the decoders raise on a bad file
        raise UnreadableImage(path, str(error) or type(error).__name__) from error


def thumbnail(path: str | Path, min_side: int, max_pixels: int | None = None) -> np.ndarray:
    """The image as a 2-D ``float32`` grayscale array in ``[0, 1]`` whose shorter side is at
    least ``min_side`` where the image is that large (for comparing images, not training).
    A JPEG is decoded directly at a reduced scale (its DCT allows 1/2, 1/4 and 1/8), which
    is several times faster than a full decode; other formats are read by
    :func:`read_image`. Errors as :func:`read_image`."""
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        try:
            with open_image(path, max_pixels) as image:
                check_pixel_count(path, *image.size, max_pixels)
                if image.format == "JPEG" and image.mode in ("L", "RGB"):
                    image.draft("L", (min_side, min_side))
                    return _to_unit_float(np.asarray(image.convert("L")))
        except DataError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError):
            pass  # read_image says what is wrong
    return read_image(path, 1, max_pixels)[:, :, 0]


def _read_pil(path: Path, max_pixels: int) -> np.ndarray:
    with open_image(path, max_pixels) as image:
        check_pixel_count(path, *image.size, max_pixels)
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


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            raise UnreadableImage(path, f"a multi-page TIFF with {len(tif.pages)} pages", (
                f"{path} is a multi-page TIFF with {len(tif.pages)} pages; "
                "export one image per file."
            ))
        page = tif.pages[0]
        check_pixel_count(path, page.imagewidth, page.imagelength, max_pixels)
        return page.asarray()


def read_dicom(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
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
        raise UnreadableImage(path, f"a multi-frame DICOM with {frames} frames", (
            f"{path} is a multi-frame DICOM with {frames} frames; export one image per file."
        ))
    if "PixelData" not in ds:
        raise UnreadableImage(path, "a DICOM file without pixel data", (
            f"{path} is a DICOM file without an image; remove it from the data set."
        ))
    check_pixel_count(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0),
                      int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS))
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
        raise ValueError(f"an image of shape {array.shape} is neither grayscale nor colour")
    if array.shape[2] == channels:
        return np.ascontiguousarray(array, dtype=np.float32)
    if channels == 1:
        return (array @ _LUMA)[:, :, None].astype(np.float32)
    return np.repeat(array, 3, axis=2)
