"""Crop a brain MRI slice to the head: the usual threshold, largest contour, extreme points.

This is the recipe of the navoneel brain tumour notebooks that study 2 follows (after
Rosebrock's "extreme points" tutorial): blur the grayscale image, threshold it, remove
specks with an opening (erode, then dilate), take the largest external contour (the head)
and crop to its leftmost, rightmost, topmost and bottommost points. Unlike the
notebooks, the extreme points themselves are kept (the box is inclusive) and an optional
``margin`` adds pixels on every side, so the crop never cuts into the head.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def brain_box(
    image: np.ndarray,
    threshold: float = 15 / 255,
    blur: int = 5,
    opening_iterations: int = 2,
    margin: int = 4,
) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (inclusive) of the head in ``image``, or ``None``.

    ``image`` is ``[H, W]`` or ``[H, W, C]`` in [0, 1] (the reading convention).
    ``threshold`` is in the same units (45/255 is the notebooks' 45 of 255).
    """
    gray = image if image.ndim == 2 else (image[:, :, :3] @ _LUMA[: min(3, image.shape[2])]
                                           if image.shape[2] == 3 else image[:, :, 0])
    gray = np.asarray(gray, dtype=np.float32)
    if blur > 1:
        gray = cv2.GaussianBlur(gray, (blur | 1, blur | 1), 0)
    mask = (gray > threshold).astype(np.uint8)
    if opening_iterations:
        mask = cv2.erode(mask, None, iterations=opening_iterations)
        mask = cv2.dilate(mask, None, iterations=opening_iterations)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    head = max(contours, key=cv2.contourArea)[:, 0, :]  # (x, y) points
    height, width = gray.shape
    left, top = head.min(axis=0) - margin
    right, bottom = head.max(axis=0) + margin
    return max(int(top), 0), min(int(bottom), height - 1), max(int(left), 0), min(int(right), width - 1)


class CropToBrain(A.ImageOnlyTransform):
    """Albumentations transform: crop to :func:`brain_box`; images without a head above
    the threshold are returned unchanged. Deterministic (``p=1``), for ``data.preprocess.steps``."""

    def __init__(
        self,
        threshold: float = 15 / 255,
        blur: int = 5,
        opening_iterations: int = 2,
        margin: int = 4,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.threshold = threshold
        self.blur = blur
        self.opening_iterations = opening_iterations
        self.margin = margin

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        box = brain_box(img, self.threshold, self.blur, self.opening_iterations, self.margin)
        if box is None:
            return img
        top, bottom, left, right = box
        return np.ascontiguousarray(img[top : bottom + 1, left : right + 1])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("threshold", "blur", "opening_iterations", "margin")
