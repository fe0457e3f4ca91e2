"""DeLong's AUROC variance, interval and paired test: the AUC against scikit-learn, the
variance and covariance against DeLong's 1988 definition computed pair by pair (not the
mid-rank algorithm), and variance, interval and paired test against the `pauc` package
(pROC's method in Python) on Hanley & McNeil's published rating data and on simulated
correlated models."""

from __future__ import annotations

import math

import numpy as np
import pauc
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medrepro.statistics.delong import (
    auc,
    delong_auc_variance,
    delong_covariance,
    delong_interval,
    paired_delong_test,
)

# Hanley & McNeil (1982), Radiology 143:29-36, Table 1: 109 CT images rated 1 (definitely
# normal) to 5 (definitely abnormal); the area they publish is 0.893
HANLEY_MCNEIL_NORMAL = (33, 6, 6, 11, 2)
HANLEY_MCNEIL_ABNORMAL = (3, 2, 2, 11, 33)


def hanley_mcneil():
    ratings = np.arange(1, 6)
    truth = np.r_[np.zeros(58, int), np.ones(51, int)]
    scores = np.r_[np.repeat(ratings, HANLEY_MCNEIL_NORMAL), np.repeat(ratings, HANLEY_MCNEIL_ABNORMAL)]
    return truth, scores.astype(float)


def two_models(n=120, seed=0, rounding=2):
    """Two correlated models' scores of the same images (rounded: ties)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = truth * 1.2 + shared + 0.7 * rng.normal(size=n)
    b = truth * 0.8 + shared + 0.7 * rng.normal(size=n)
    return truth, np.round(stats.norm.cdf(a), rounding), np.round(stats.norm.cdf(b), rounding)


def slow_delong(truth, scores_a, scores_b):
    """DeLong et al. (1988) from the definition: psi(X, Y) = 1, 1/2, 0 for every pair of a
    positive X and a negative Y; structural components V10(X_i) = mean_j psi(X_i, Y_j),
    V01(Y_j) = mean_i psi(X_i, Y_j); Cov = S10/m + S01/n from their sample covariances."""
    truth = np.asarray(truth, bool)
    components = []
    for scores in (scores_a, scores_b):
        x, y = scores[truth], scores[~truth]
        psi = np.array([[1.0 if xi > yj else 0.5 if xi == yj else 0.0 for yj in y] for xi in x])
        components.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = truth.sum(), (~truth).sum()
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components

    def cov(u, v, mean_u, mean_v):
        return float(np.sum((u - mean_u) * (v - mean_v)) / (len(u) - 1))

    var_a = cov(v10_a, v10_a, auc_a, auc_a) / m + cov(v01_a, v01_a, auc_a, auc_a) / n
    var_b = cov(v10_b, v10_b, auc_b, auc_b) / m + cov(v01_b, v01_b, auc_b, auc_b) / n
    cov_ab = cov(v10_a, v10_b, auc_a, auc_b) / m + cov(v01_a, v01_b, auc_a, auc_b) / n
    return auc_a, auc_b, var_a, var_b, cov_ab


def test_the_auc_is_scikit_learns_also_with_ties():
    for seed in range(5):
        truth, a, _ = two_models(seed=seed, rounding=1)
        assert delong_auc_variance(truth, a)[0] == pytest.approx(roc_auc_score(truth, a), abs=1e-12)


def test_the_fast_auc_is_scikit_learns_with_ties_and_nan_without_a_class():
    for seed in range(5):
        truth, a, b = two_models(seed=seed, rounding=1)
        assert auc(truth, a) == pytest.approx(roc_auc_score(truth, a), abs=1e-12)
        assert auc(truth, -b) == pytest.approx(roc_auc_score(truth, -b), abs=1e-12)
    truth, scores = hanley_mcneil()
    assert auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert math.isnan(auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_the_hanley_mcneil_ratings_give_the_published_area():
    truth, scores = hanley_mcneil()
    auc, variance = delong_auc_variance(truth, scores)
    assert round(auc, 3) == 0.893
    roc = pauc.ROC(truth, scores, direction="<")
    assert variance == pytest.approx(pauc.var(roc), rel=1e-10)
    assert math.sqrt(variance) == pytest.approx(0.0307, abs=5e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variances_and_covariance_match_delongs_definition(seed):
    truth, a, b = two_models(n=90, seed=seed)
    aucs, covariance = delong_covariance(truth, np.stack([a, b]))
    auc_a, auc_b, var_a, var_b, cov_ab = slow_delong(truth, a, b)
    assert aucs == pytest.approx([auc_a, auc_b], abs=1e-12)
    assert covariance == pytest.approx(np.array([[var_a, cov_ab], [cov_ab, var_b]]), rel=1e-9)


def test_the_interval_is_pauc_delong_interval():
    truth, a, _ = two_models(n=150, seed=3)
    roc = pauc.ROC(truth, a, direction="<")
    auc, low, high = delong_interval(truth, a, level=0.9)
    assert auc == pytest.approx(roc.auc)
    assert (low, high) == pytest.approx(pauc.ci_auc(roc, conf_level=0.9), rel=1e-10)


def test_the_interval_is_clipped_to_one():
    truth = np.r_[np.zeros(8, int), np.ones(8, int)]
    scores = np.r_[np.arange(8), np.arange(7, 15)] / 20.0  # one tie between the classes
    auc, variance = delong_auc_variance(truth, scores)
    assert auc + 1.96 * math.sqrt(variance) > 1
    auc, low, high = delong_interval(truth, scores)
    assert high == 1.0 and low == pytest.approx(auc - stats.norm.ppf(0.975) * math.sqrt(variance))


def test_the_paired_test_is_paucs_paired_delong_test():
    for seed in range(3):
        truth, a, b = two_models(n=100, seed=seed)
        result = paired_delong_test(truth, a, b)
        oracle = pauc.compare(pauc.ROC(truth, a, direction="<"), pauc.ROC(truth, b, direction="<"),
                              method="delong", paired=True)
        assert result.difference == pytest.approx(oracle.estimate, abs=1e-12)
        assert result.z == pytest.approx(oracle.stat, rel=1e-9)
        assert result.p_value == pytest.approx(oracle.p_value, rel=1e-6)
        swapped = paired_delong_test(truth, b, a)
        assert (swapped.z, swapped.p_value) == pytest.approx((-result.z, result.p_value))


def test_pairing_matters_the_unpaired_variance_would_be_much_larger():
    truth, a, b = two_models(n=200, seed=8)
    result = paired_delong_test(truth, a, b)
    _, var_a = delong_auc_variance(truth, a)
    _, var_b = delong_auc_variance(truth, b)
    unpaired_z = result.difference / math.sqrt(var_a + var_b)
    assert abs(result.z) > 1.5 * abs(unpaired_z)


def test_undefined_cases_are_nan_not_errors():
    auc, variance = delong_auc_variance([1, 1, 1], [0.2, 0.5, 0.9])  # one class
    assert math.isnan(auc) and math.isnan(variance)
    auc, variance = delong_auc_variance([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])  # one positive
    assert auc == 1.0 and math.isnan(variance)
    truth, a, _ = two_models(n=40, seed=1)
    same = paired_delong_test(truth, a, a)
    assert same.difference == 0 and math.isnan(same.z) and math.isnan(same.p_value)


def test_a_model_worse_than_chance_is_not_turned_around():
    truth, a, _ = two_models(n=80, seed=2)
    auc, _, high = delong_interval(truth, 1 - a)
    assert auc == pytest.approx(1 - roc_auc_score(truth, a)) and auc < 0.5 and high < 0.5
