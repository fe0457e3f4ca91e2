"""Crop to the brain (study 2's pre-processing). About 3 s."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
from conftest import shared_data
from scipy import ndimage

from medrepro.datamodules.transforms.brain_crop import CropToBrain, brain_box
from medrepro.datamodules.transforms.image_reader import read_image


def head_mask(gray: np.ndarray) -> np.ndarray:
    """Independent oracle: the largest blob brighter than 0.08 after a median filter and a
    5 x 5 opening (scipy, not the crop's OpenCV contours)."""
    bright = cv2.medianBlur((gray * 255).astype(np.uint8), 5) > 0.08 * 255
    bright = ndimage.binary_opening(bright, np.ones((5, 5)))
    labels, _ = ndimage.label(bright)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == np.argmax(sizes) + 1


@pytest.fixture(scope="module")
def samples():
    root = shared_data("brain_mri_sample")
    return {p.name: read_image(p, 1)[:, :, 0] for p in sorted(root.glob("*/*"))}


def test_crop_removes_the_black_border_and_never_cuts_into_the_head(samples):
    cropped_a_lot = 0
    for name, gray in samples.items():
        top, bottom, left, right = brain_box(gray)
        head = head_mask(gray)
        inside = head[top : bottom + 1, left : right + 1].sum()
        assert inside == head.sum(), f"{name}: the crop cuts {head.sum() - inside} head pixels"
        kept = np.zeros(gray.shape, bool)
        kept[top : bottom + 1, left : right + 1] = True
        if (~kept).any():
            assert np.percentile(gray[~kept], 99) < 0.1, f"{name}: the crop removed more than border"
        cropped_a_lot += kept.mean() < 0.8
    assert cropped_a_lot >= 8  # most of the sample has wide black borders


def test_the_notebooks_threshold_of_45_cuts_into_faint_scalp(samples):
    cut = 0
    for gray in samples.values():
        top, bottom, left, right = brain_box(gray, threshold=45 / 255, margin=0)
        head = head_mask(gray)
        cut += head[top : bottom + 1, left : right + 1].sum() < head.sum()
    assert cut >= 5  # why the default is 15/255 with a 4-pixel margin


def test_synthetic_head_gives_the_exact_box():
    image = np.zeros((60, 80, 3), np.float32)
    cv2.ellipse(image, (40, 30), (20, 12), 0, 0, 360, (0.6, 0.6, 0.6), -1)
    image[2, 2] = 1.0  # a speck outside the head is ignored
    # the ellipse spans rows 18-42 and columns 20-60; the 5 x 5 blur widens it by a pixel
    assert brain_box(image, margin=0) == (17, 43, 19, 61)
    out = CropToBrain(margin=2)(image=image)["image"]
    assert out.shape == (31, 47, 3)


def test_blank_image_is_returned_unchanged_and_pipeline_resizes():
    blank = np.zeros((30, 40, 1), np.float32)
    assert CropToBrain()(image=blank)["image"].shape == (30, 40, 1)
    image = np.zeros((50, 70, 1), np.float32)
    image[10:40, 20:60] = 0.5
    pipeline = A.Compose([CropToBrain(), A.Resize(100, 100), A.Resize(32, 32)])
    out = pipeline(image=image)["image"]
    # rows 5-44 and columns 15-64 kept (4-pixel margin, 1 of blur): 30 x 40 of 40 x 50 at 0.5
    assert out.shape == (32, 32, 1) and out.mean() == pytest.approx(0.3, abs=0.01)
