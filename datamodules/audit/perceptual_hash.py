"""Perceptual hash (pHash) of an image and the near-duplicate pairs among many hashes.

pHash (Zauner 2010, as in the ``imagehash`` package): shrink the grayscale image to
32 x 32, take its 2-D DCT, keep the 8 x 8 lowest frequencies and set one bit per
coefficient above their median (the DC term left out of the median). Re-saved,
re-compressed, resized or slightly brightened copies of an image differ in a few of the
64 bits; different images, even two chest X-rays, in many more. The Hamming distance
between two hashes is the number of differing bits.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.fft import dctn

HASH_SIDE = 8
SHRUNK_SIDE = 32
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(HASH_SIDE * HASH_SIDE, dtype=np.uint64))


def perceptual_hash(gray: np.ndarray) -> int:
    """The 64-bit pHash of a 2-D grayscale image (any value range) as a Python int."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ValueError(f"perceptual_hash takes a 2-D image, not shape {gray.shape}.")
    shrunk = cv2.resize(gray, (SHRUNK_SIDE, SHRUNK_SIDE), interpolation=cv2.INTER_AREA)
    low = dctn(shrunk.astype(np.float64), norm="ortho")[:HASH_SIDE, :HASH_SIDE].ravel()
    bits = low > np.median(low[1:])
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[bits], initial=np.uint64(0)))


def hamming_distance(a: int, b: int) -> int:
    return int(a ^ b).bit_count()


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1024,
                         limit: int | None = None):
    """``(i, j, distance)`` for every ``i < j`` whose hashes differ in at most
    ``max_distance`` bits (``hashes``: ``uint64`` array). Vectorised in row chunks, so
    tens of thousands of images take seconds. ``None`` as soon as there are more than
    ``limit`` pairs."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), chunk):
        rows = hashes[start : start + chunk]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distances <= max_distance)
        keep = j > i + start
        if limit is not None and len(pairs) + int(keep.sum()) > limit:
            return None
        for a, b in zip(i[keep] + start, j[keep]):
            pairs.append((int(a), int(b), int(distances[a - start, b])))
    return pairs
