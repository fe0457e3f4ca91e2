"""The area under the ROC curve, its DeLong variance and interval, and the paired DeLong
test of two scores of the same images.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach", Biometrics
44:837-845, estimate the covariance of AUCs from the structural components (placement
values) of each positive and each negative image. Sun & Xu (2014), "Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393, obtain the same
components from mid-ranks in O(N log N) instead of comparing every positive with every
negative; that is the algorithm here. The results agree with pROC's ``var``, ``ci.auc``
and ``roc.test(method="delong")``.

Conventions: ``truth`` holds 1 (positive) and 0; a higher score means "more positive" (the
direction is never flipped, so a model worse than chance has an AUC below 0.5); ties count
one half.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

DELONG_INTERVAL_METHOD = (
    "AUROC: {level:.0%} DeLong interval (DeLong et al. 1988, computed by the fast algorithm of "
    "Sun & Xu 2014): AUC ± z·SE on the AUC scale, clipped to [0, 1], as pROC's ci.auc."
)
PAIRED_DELONG_METHOD = (
    "Two models tested on the same images: paired DeLong test of their AUROCs (DeLong et "
    "al. 1988; Sun & Xu 2014), two-sided, z = difference / SE of the difference, which "
    "accounts for the correlation of the two models' scores on the same images."
)


class PairedDelong(NamedTuple):
    """The paired DeLong test of two AUCs on the same images."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    z: float
    p_value: float  # two-sided; NaN where the difference has no variance


def auc(truth, scores) -> float:
    """The area under the ROC curve of one score (ties count one half), from the mid-ranks
    (Mann-Whitney U / (n1 n0)); NaN when a class is absent. Equal to scikit-learn's
    ``roc_auc_score`` without its per-call input validation, which costs milliseconds: the
    bootstrap calls this a thousand times per report."""
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, dtype=float)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def delong_covariance(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` scores of the same images.

    ``scores`` is ``[N]`` or ``[k, N]``. Following Sun & Xu (2014), with m positive and n
    negative images, for each score: T_Z the mid-ranks among all images, T_X among the
    positives, T_Y among the negatives; then::

        AUC = (sum of T_Z over the positives) / (m n) - (m + 1) / (2 n)
        V10 = (T_Z[positives] - T_X) / n          (one per positive image)
        V01 = 1 - (T_Z[negatives] - T_Y) / m      (one per negative image)
        S   = cov(V10) / m + cov(V01) / n         (sample covariances, ddof 1)

    Returns ``(aucs [k], covariance [k, k])``. AUCs are NaN when a class is absent; the
    covariance is NaN with fewer than two images of either class.
    """
    truth = _truth(truth)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != truth.size:
        raise ValueError(f"{scores.shape[1]} scores for {truth.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("the scores hold NaN or infinite values")
    k = scores.shape[0]
    positives, negatives = scores[:, truth], scores[:, ~truth]
    m, n = positives.shape[1], negatives.shape[1]
    if m == 0 or n == 0:
        return np.full(k, math.nan), np.full((k, k), math.nan)
    t_x = stats.rankdata(positives, axis=1)
    t_y = stats.rankdata(negatives, axis=1)
    t_z = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = t_z[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), math.nan)
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1 - (t_z[:, m:] - t_y) / m
    covariance = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, covariance


def delong_auc_variance(truth, scores) -> tuple[float, float]:
    """The AUC of ``scores`` against binary ``truth`` and its DeLong variance (see
    :func:`delong_covariance`; NaN where it is undefined)."""
    aucs, covariance = delong_covariance(truth, np.asarray(scores, dtype=float).ravel())
    return float(aucs[0]), float(covariance[0, 0])


def delong_interval(truth, scores, level: float = 0.95) -> tuple[float, float, float]:
    """``(auc, low, high)``: the AUC and its DeLong confidence interval at ``level``.

    The interval is the Wald interval on the AUC scale, AUC ± z·sqrt(DeLong variance) with z
    the normal quantile at (1 + level) / 2, clipped to [0, 1]. This is pROC's
    ``ci.auc(method="delong")`` and so what published studies mostly report, which makes our
    intervals comparable with theirs. (A logit-scale interval covers better near AUC = 1 with
    few images, but is undefined at AUC = 1 and rarely published.) Where the variance is 0
    (perfectly separated or completely tied scores) the interval is the AUC itself: with
    few images, read it together with a bootstrap interval.
    """
    _check_level(level)
    auc, variance = delong_auc_variance(truth, scores)
    if not math.isfinite(variance):
        return auc, math.nan, math.nan
    half = stats.norm.ppf((1 + level) / 2) * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def paired_delong_test(truth, scores_a, scores_b) -> PairedDelong:
    """The paired DeLong test of ``H0: AUC_a = AUC_b`` for two scores of the same images
    (two models tested on one test set; for two arms, per seed or on each arm's
    seed-averaged probabilities).

    z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab), with the DeLong covariance of
    :func:`delong_covariance`; the p-value is two-sided from the standard normal. ``z`` and
    ``p_value`` are NaN where the variance of the difference is 0 (e.g. identical scores)
    or undefined (fewer than two images of a class).
    """
    scores_a = np.asarray(scores_a, dtype=float).ravel()
    scores_b = np.asarray(scores_b, dtype=float).ravel()
    if scores_a.size != scores_b.size:
        raise ValueError(f"the two scores have {scores_a.size} and {scores_b.size} values")
    aucs, covariance = delong_covariance(truth, np.stack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if not math.isfinite(variance) or variance <= 1e-15:
        return PairedDelong(float(aucs[0]), float(aucs[1]), difference, math.nan, math.nan)
    z = difference / math.sqrt(variance)
    return PairedDelong(float(aucs[0]), float(aucs[1]), difference, z,
                        float(2 * stats.norm.sf(abs(z))))


def _truth(truth) -> np.ndarray:
    array = np.asarray(truth).ravel()
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError("truth must hold 0/1 or True/False only (1: positive)")
        array = array.astype(bool)
    return array


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level!r}")
