"""The bootstrap over patients: resample whole patients (all their images), stratified by
class, and read a percentile interval off the resampled statistic.

Images of one patient are not independent (one patient's two radiographs tend to be right
or wrong together), so resampling images as if they were understates the uncertainty.
The cluster (or "block") bootstrap resamples the independent units, the patients, instead
(Davison & Hinkley 1997, "Bootstrap Methods and their Application", section 3.8; Field &
Welsh 2007, "Bootstrapping clustered data", JRSS B 69:369-390). Stratifying by class keeps
each resample's class mix close to the test set's, so that no resample lacks a class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

GROUPED_BOOTSTRAP_METHOD = (
    "{level:.0%} percentile bootstrap over patients ({resamples} resamples): in each "
    "resample the patients of each class are drawn with replacement, as many as the class "
    "has, each with all their images (a patient's class is the most frequent label among "
    "their images, ties to the first class); an image without a patient id counts as a "
    "patient of its own."
)


def group_keys(groups, n: int | None = None) -> np.ndarray:
    """One integer per image naming its group: images with the same id share a group; an
    image whose id is missing (None, NaN, pandas' NA or an empty string) is a group of its
    own. ``groups=None`` makes every image its own group (``n`` images)."""
    if groups is None:
        if n is None:
            raise ValueError("give the groups or the number of images")
        return np.arange(n)
    ids = pd.Series(list(groups), dtype=object)
    missing = ids.isna() | (ids.astype(str).str.strip() == "")
    keys = np.empty(len(ids), dtype=np.int64)
    known = pd.factorize(ids[~missing].astype(str), sort=False)[0]
    keys[~missing.to_numpy()] = known
    start = known.max() + 1 if len(known) else 0
    keys[missing.to_numpy()] = start + np.arange(int(missing.sum()))
    return keys


def group_classes(labels, keys: np.ndarray) -> np.ndarray:
    """The class of each group (indexed by key): the most frequent label among the group's
    images, the smallest label on a tie."""
    labels = np.asarray(labels)
    n_groups = int(keys.max()) + 1 if len(keys) else 0
    classes = np.unique(labels)
    counts = np.zeros((n_groups, len(classes)), dtype=np.int64)
    np.add.at(counts, (keys, np.searchsorted(classes, labels)), 1)
    return classes[np.argmax(counts, axis=1)]  # argmax takes the first (smallest) on ties


def grouped_bootstrap_indices(labels, groups, resamples: int, seed: int = 0) -> list[np.ndarray]:
    """``resamples`` bootstrap resamples of the images as index arrays into ``labels``.

    Each resample draws, for each class c (in ascending order), as many groups of class c as
    there are, with replacement and uniformly among the groups of class c, and takes every
    image of each drawn group (a group drawn twice contributes its images twice). Groups
    and their classes: :func:`group_keys`, :func:`group_classes`. So a resample keeps
    patients whole and has the test set's number of patients of each class; its number of
    images varies when patients have different numbers of images. With one image per
    patient (or ``groups=None``) this is the ordinary bootstrap of images stratified by
    class. Seeded: the same arguments give the same resamples.
    """
    labels = np.asarray(labels)
    keys = group_keys(groups, len(labels))
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} group ids for {len(labels)} labels")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not len(labels):
        return [np.empty(0, dtype=np.int64) for _ in range(resamples)]
    # the images of each group, contiguous: members[starts[g] : starts[g] + sizes[g]]
    members = np.argsort(keys, kind="stable")
    sizes = np.bincount(keys)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    classes = group_classes(labels, keys)
    strata = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        drawn = np.concatenate([stratum[rng.integers(0, len(stratum), len(stratum))]
                                for stratum in strata])
        counts = sizes[drawn]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        samples.append(members[np.repeat(starts[drawn], counts) + offsets])
    return samples


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``values``: their (1 - level)/2 and (1 + level)/2
    quantiles (numpy's default linear interpolation), ignoring NaN and infinite values;
    ``(nan, nan)`` when none is finite (Efron & Tibshirani 1993, chapter 13)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level!r}")
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if not len(values):
        return (math.nan, math.nan)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def grouped_bootstrap_interval(
    statistic: Callable[[np.ndarray], float], labels, groups, resamples: int = 1000,
    seed: int = 0, level: float = 0.95,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic`` of all images (called with every index) and
    the percentile interval of ``statistic`` over :func:`grouped_bootstrap_indices`.
    ``statistic`` takes an index array into the test set and returns a number, e.g.
    ``lambda i: roc_auc_score(truth[i], scores[i])``."""
    n = len(np.asarray(labels))
    estimate = float(statistic(np.arange(n)))
    values = [statistic(indices)
              for indices in grouped_bootstrap_indices(labels, groups, resamples, seed)]
    return (estimate, *percentile_interval(values, level))
