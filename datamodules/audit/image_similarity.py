"""Confirm a near-duplicate candidate by comparing the two images' pixels.

A perceptual-hash match (:mod:`medrepro.datamodules.audit.perceptual_hash`) only says that
two images have similar coarse structure; two chest X-rays of different children often do.
:func:`aligned_similarity` decides: both images are shrunk to :data:`SIDE` x :data:`SIDE`
grayscale, the second is aligned to the first by an affine transform (OpenCV's ECC
maximisation, coarse to fine over 32, 64 and :data:`SIDE` pixels, so a resized or slightly
cropped copy lines up) and its brightness and contrast are matched to the first's; the
score is the lower of two measures over the part both images cover: the structural
similarity (SSIM, Wang et al. 2004, computed by torchmetrics) and the correlation of their
fine detail (each image minus its blur), which only a copy shares.

Measured on the team's real sample images (48 chest X-rays and 20 brain MRIs of the
public data sets; ``python benchmark.py --similarity``): copies re-saved as JPEG at quality
60, halved, resized to 224 px or brightened score at least 0.984, copies cropped by 2 % per
side 0.934, and copies cropped 3 % on two sides, shrunk to 3/4 and re-saved as JPEG 0.938;
distinct images score at most 0.695 (two brain MRIs). :data:`MIN_SIMILARITY` = 0.85 sits in
that gap. Images are compared at :data:`SIDE` pixels, or at half the smaller image's size
when that is less, so that JPEG blocks and pixel noise of a small copy average out.
Synthetic phantoms drawn from one template (the demo data) are the hard case: distinct demo
phantoms score up to 0.9, so a few of them may be confirmed.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

SIDE = 128
PYRAMID = (32, 64)  # coarser levels of the alignment, then the comparison size
MIN_SIMILARITY = 0.85
DETAIL_SIGMA = 1.5  # pixels at SIDE: the finest scale a copy resized to SIDE keeps
RETRY_SCALES = (1.04, 1.08, 0.96, 0.92)  # a copy cropped by 2 or 4 % per side, or padded
MAX_SCALE_CHANGE = 1.3  # a slight crop scales by a few per cent; more is a drifted alignment
MIN_OVERLAP = 0.5  # an alignment that leaves less than half of the image in common fails
_ECC_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def shrink(gray: np.ndarray, side: int = SIDE) -> np.ndarray:
    """``gray`` (2-D: an integer image, or floats in [0, 1]) as a ``side`` x ``side``
    float32 image in [0, 255]."""
    gray = np.asarray(gray)
    if np.issubdtype(gray.dtype, np.integer):
        scale = 255.0 / np.iinfo(gray.dtype).max
    else:
        scale = 255.0
    scaled = gray.astype(np.float32) * np.float32(scale)
    return cv2.resize(scaled, (side, side), interpolation=cv2.INTER_AREA)


def aligned_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """The lower of SSIM and fine-detail correlation (see the module docstring) of two
    grayscale images after aligning ``second`` to ``first`` and matching its brightness and
    contrast to ``first``'s (a least-squares gain and offset over the part both cover, so
    that a brightened copy is still a copy); 0 when they cannot be aligned over half their
    area. They are compared at :data:`SIDE` pixels, or at the smaller image's own size when
    that is smaller (at least 32), so a small copy is not asked for detail it cannot have.
    Inputs as :func:`shrink` takes them."""
    side = int(np.clip(min(*np.shape(first)[:2], *np.shape(second)[:2]) // 2, PYRAMID[0], SIDE))
    big_a, big_b = shrink(first, side), shrink(second, side)
    warp = _align(big_a, big_b)
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(big_b, warp, (side, side), flags=flags)
    covered = cv2.warpAffine(np.ones_like(big_b), warp, (side, side), flags=flags)
    covered = cv2.erode(covered, np.ones((11, 11), np.uint8)) > 0.5  # SSIM's window
    if covered.mean() < MIN_OVERLAP:
        return 0.0
    gain, offset = np.polyfit(aligned[covered], big_a[covered], 1) \
        if aligned[covered].std() > 0 else (0.0, float(big_a[covered].mean()))
    matched = np.clip(gain * aligned + offset, 0, 255).astype(np.float32)
    _, ssim_map = structural_similarity_index_measure(
        torch.from_numpy(big_a)[None, None], torch.from_numpy(matched)[None, None],
        data_range=255.0, return_full_image=True,
    )
    structure = float(ssim_map[0, 0][torch.from_numpy(covered)].mean())
    return min(structure, _detail_correlation(big_a, matched, covered))


def _detail_correlation(first: np.ndarray, second: np.ndarray, covered: np.ndarray) -> float:
    """Pearson correlation of the two images' fine detail (each minus its Gaussian blur of
    :data:`DETAIL_SIGMA` pixels) over ``covered``: a copy keeps the original's fine
    texture, a different image of a similar layout (two phantoms drawn from one template,
    two chest X-rays) does not."""
    details = [(image - cv2.GaussianBlur(image, (0, 0), DETAIL_SIGMA))[covered]
               for image in (first, second)]
    if min(d.std() for d in details) == 0:
        return 0.0
    return float(np.corrcoef(details[0], details[1])[0, 1])


def _align(big_a: np.ndarray, big_b: np.ndarray) -> np.ndarray:
    """The affine warp (2 x 3) that maps ``big_a``'s pixels onto ``big_b``'s (both square,
    of one size), estimated coarse to fine from the identity; where that drifts to an
    implausible warp (a crop that removed a white frame can pull it away), from centred
    zooms of :data:`RETRY_SCALES`, keeping the plausible result with the highest ECC
    correlation; the identity when none is plausible."""
    plain = _align_from(big_a, big_b, 1.0)
    if plain is not None:
        return plain[0]
    found = [_align_from(big_a, big_b, scale) for scale in RETRY_SCALES]
    found = [result for result in found if result is not None]
    if not found:
        return np.eye(2, 3, dtype=np.float32)
    return max(found, key=lambda result: result[1])[0]


def _align_from(big_a: np.ndarray, big_b: np.ndarray,
                scale: float) -> tuple[np.ndarray, float] | None:
    """ECC from a centred zoom by ``scale``: the warp and its final correlation, or
    ``None`` when it drifts to an implausible warp."""
    side = big_a.shape[0]
    levels = [level for level in PYRAMID if level < side] + [side]
    shift = levels[0] * (1 - scale) / 2  # a zoom about the centre
    warp = np.array([[scale, 0, shift], [0, scale, shift]], dtype=np.float32)
    correlation = -1.0
    for index, level in enumerate(levels):
        a, b = _normalised(big_a, level), _normalised(big_b, level)
        try:
            correlation, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE,
                                                     _ECC_STOP, None, 1)
        except cv2.error:
            correlation = -1.0  # no convergence at this level: keep the estimate so far
        if not _plausible(warp, level):
            return None  # drifted: a copy is never that far off
        if index + 1 < len(levels):
            warp[:, 2] *= levels[index + 1] / level
    return warp, float(correlation)


def _plausible(warp: np.ndarray, side: int) -> bool:
    """Whether ``warp`` is what a resize, a slight crop or a small shift does: scales
    within :data:`MAX_SCALE_CHANGE` of 1 and a shift of at most a quarter of the image."""
    scales = np.linalg.svd(warp[:, :2], compute_uv=False)
    shift = np.abs(warp[:, 2]).max() / side
    return bool(scales.min() >= 1 / MAX_SCALE_CHANGE and scales.max() <= MAX_SCALE_CHANGE
                and shift <= 0.25)


def _normalised(image: np.ndarray, side: int) -> np.ndarray:
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(side / SIDE, 0.25))
    return (small - small.mean()) / (small.std() + 1e-6)
