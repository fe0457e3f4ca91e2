"""Inspect one image file for the data audit: size, content hash, header facts, problems.

Two depths:

* ``quick``: the file's bytes are hashed (exact duplicates), its header is parsed
  (format, mode, size, bit depth), an image of more pixels than ``max_pixels`` is marked a
  possible decompression bomb, and JPEG and PNG files are checked for their end marker
  (truncation). No pixel is decoded, so it takes about as long as reading the files once.
* full (before every training, and ``python audit.py``): the image is also decoded with
  the training reader, which finds every file training would fail on, and its perceptual
  hash (near-duplicate candidates) and the hash of its 8-bit grayscale pixels (copies with
  other bytes but the same pixels) are computed. Training remembers these facts per file
  (:class:`~medrepro.datamodules.audit.file_facts_store.FileFactsStore`), so each file is
  decoded for them once.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrepro.datamodules.audit.perceptual_hash import perceptual_hash
from medrepro.datamodules.transforms.image_reader import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DICOM_EXTENSIONS,
    ImageTooLarge,
    UnreadableImage,
    open_image,
    pixels_in_bomb_error,
    read_image,
)

ZERO_BYTES = "zero-byte file"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable"
TOO_LARGE = "possible decompression bomb"
BITS_PER_MODE = {"1": 1, "L": 8, "P": 8, "LA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
                 "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
JPEG_END = b"\xff\xd9"
# a (nearly) flat image has no layout for a perceptual hash to describe (its bits are
# noise): it gets none, and is a copy only of images with its exact pixels
MIN_CONTRAST = 2 / 255
PNG_END = b"IEND"


@dataclass
class FileFacts:
    """What the audit knows about one file; ``problem`` is ``None`` for a good file."""

    path: str
    bytes: int = 0
    sha256: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    bit_depth: int | None = None
    problem: str | None = None
    detail: str | None = None
    phash: int | None = None
    pixel_sha256: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_file(path: str | Path, quick: bool = True, max_pixels: int | None = None) -> FileFacts:
    """Facts about ``path``; the full inspection (``quick=False``) decodes the image.
    Images of more than ``max_pixels`` pixels (default
    :data:`~medrepro.datamodules.transforms.image_reader.DEFAULT_MAX_IMAGE_PIXELS`) get the
    problem :data:`TOO_LARGE` and are not decoded."""
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    facts = FileFacts(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return _with_problem(facts, UNREADABLE, str(error))
    facts.bytes = len(data)
    if not data:
        return _with_problem(facts, ZERO_BYTES, "the file is empty")
    facts.sha256 = hashlib.sha256(data).hexdigest()
    try:
        _read_header(facts, data, max_pixels)
    except Image.DecompressionBombError as error:  # more than twice Pillow's guard
        too_large = ImageTooLarge(path, max_pixels, pixels=pixels_in_bomb_error(error))
        return _with_problem(facts, TOO_LARGE, too_large.reason)
    except Exception as error:  # noqa: BLE001  (any parser failure: not an image)
        return _with_problem(facts, NOT_AN_IMAGE, f"{type(error).__name__}: {error}")
    if size_problem(facts, max_pixels):
        return facts
    if _is_truncated(facts.format, data):
        return _with_problem(facts, TRUNCATED, f"{facts.format} file without its end marker")
    if not quick:
        try:
            gray = read_image(path, 1, max_pixels)[:, :, 0]
        except UnreadableImage as error:
            return _with_problem(facts, decoding_problem(error.reason), error.reason)
        facts.phash = perceptual_hash(gray) if np.std(gray) >= MIN_CONTRAST else None
        facts.pixel_sha256 = pixel_hash(gray)
    return facts


def pixel_hash(gray: np.ndarray) -> str:
    """SHA-256 of a 2-D image in ``[0, 1]`` as 8-bit pixels, with its shape."""
    pixels = np.round(np.asarray(gray, dtype=np.float32) * 255).astype(np.uint8)
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def size_problem(facts: FileFacts, max_pixels: int) -> bool:
    """Mark ``facts`` (of a file without another problem) :data:`TOO_LARGE` when its header
    size exceeds ``max_pixels``; whether it did."""
    size = (facts.width, facts.height)
    if facts.problem is not None or not all(size) or size[0] * size[1] <= max_pixels:
        return False
    _with_problem(facts, TOO_LARGE, ImageTooLarge(facts.path, max_pixels, size=size).reason)
    return True


def decoding_problem(reason: str) -> str:
    """The audit's problem for a file the reader could not decode, from the reason
    (:attr:`UnreadableImage.reason`)."""
    if reason.startswith(TOO_LARGE):
        return TOO_LARGE
    return TRUNCATED if "truncated" in reason else UNREADABLE


def _with_problem(facts: FileFacts, problem: str, detail: str) -> FileFacts:
    facts.problem, facts.detail = problem, detail
    return facts


def _read_header(facts: FileFacts, data: bytes, max_pixels: int) -> None:
    if Path(facts.path).suffix.lower() in DICOM_EXTENSIONS:
        _read_dicom_header(facts, data)
        return
    try:
        with open_image(io.BytesIO(data), max_pixels) as image:
            facts.format, facts.mode = image.format, image.mode
            facts.width, facts.height = image.size
            facts.bit_depth = _bit_depth(image)
    except UnidentifiedImageError as error:
        raise ValueError("no known image format") from error


def _bit_depth(image: Image.Image) -> int | None:
    bits = image.info.get("bits") or getattr(image, "bits", None)
    if image.format == "TIFF":
        sample_bits = image.tag_v2.get(258)  # BitsPerSample
        if sample_bits:
            return int(sample_bits[0] if isinstance(sample_bits, tuple) else sample_bits)
    return int(bits) if isinstance(bits, int) and bits > 0 and image.mode != "P" else \
        BITS_PER_MODE.get(image.mode)


def _read_dicom_header(facts: FileFacts, data: bytes) -> None:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    facts.format = "DICOM"
    facts.mode = str(ds.get("PhotometricInterpretation", "unknown"))
    facts.width, facts.height = int(ds.Columns), int(ds.Rows)
    facts.bit_depth = int(ds.get("BitsStored", ds.get("BitsAllocated", 0))) or None


def _is_truncated(image_format: str | None, data: bytes) -> bool:
    tail = data[-4096:].rstrip(b"\x00")
    if image_format == "JPEG":
        return JPEG_END not in tail
    if image_format == "PNG":
        return PNG_END not in tail[-16:]
    return False
