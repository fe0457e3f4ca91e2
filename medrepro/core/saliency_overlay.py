"""Heat maps (Grad-CAM) drawn on the original image, at the original's own resolution.

The model sees a pre-processed copy of the image (cropped to the head, resized, squashed to
a square); its heat map is laid back over the part of the original that copy shows
(``box``: the whole image when ``None``) and stretched to that part's own size, so the map
lies on the anatomy it was computed from.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pytorch_grad_cam.utils.image import show_cam_on_image

from medrepro.core.run_folder import atomic_file

# (top, bottom, left, right), inclusive pixel indices of the original (brain_box's convention)
Box = tuple[int, int, int, int]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grayscale(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 in [0, 1] from ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[:, :, :3] @ _LUMA if image.shape[2] >= 3 else image[:, :, 0]
    return np.clip(image, 0.0, 1.0)


def cam_on_original(cam: np.ndarray, shape: tuple[int, ...], box: Box | None = None) -> np.ndarray:
    """The heat map ``cam`` (``[h, w]``, the model input's grid) on the original's pixel grid
    ``shape[:2]``: stretched over ``box`` (bilinear), zero outside it. ``float32`` in [0, 1]."""
    height, width = int(shape[0]), int(shape[1])
    top, bottom, left, right = _clipped(box, height, width)
    placed = np.zeros((height, width), np.float32)
    size = (right - left + 1, bottom - top + 1)  # cv2 wants (width, height)
    stretched = cv2.resize(np.asarray(cam, np.float32), size, interpolation=cv2.INTER_LINEAR)
    placed[top : bottom + 1, left : right + 1] = stretched
    return np.clip(placed, 0.0, 1.0)


def cam_peak(cam: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` (column, row) of the heat map's maximum (the first one)."""
    row, column = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(column), int(row)


def overlay_on_original(
    original: np.ndarray, cam: np.ndarray, box: Box | None = None
) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB: the original (``[H, W]`` or ``[H, W, C]`` in [0, 1]) in
    grayscale, with ``cam`` (``[h, w]`` in [0, 1]) as a jet-coloured heat map over ``box``
    (half image, half heat map; pytorch_grad_cam's ``show_cam_on_image``). Outside ``box``,
    which the model did not see, the original shows plain."""
    gray = grayscale(original)
    height, width = gray.shape
    top, bottom, left, right = _clipped(box, height, width)
    placed = cam_on_original(cam, gray.shape, box)
    rgb = np.repeat(np.round(gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    region = np.repeat(gray[top : bottom + 1, left : right + 1, None], 3, axis=2)
    rgb[top : bottom + 1, left : right + 1] = show_cam_on_image(
        region, placed[top : bottom + 1, left : right + 1], use_rgb=True
    )
    return rgb


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``uint8 [H, W, 3]`` RGB (or ``[H, W]`` gray) as a PNG, atomically."""
    path = Path(path)
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    encoded, data = cv2.imencode(".png", pixels)
    if not encoded:
        raise ValueError(f"could not encode an image of shape {pixels.shape} as PNG")
    with atomic_file(path, "wb") as stream:
        stream.write(data.tobytes())
    return path


def _clipped(box: Box | None, height: int, width: int) -> Box:
    if box is None:
        return 0, height - 1, 0, width - 1
    top, bottom, left, right = (round(float(v)) for v in box)
    top, left = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
    return top, min(max(bottom, top), height - 1), left, min(max(right, left), width - 1)
