"""Intervals of medrepro.statistics: Wilson (Newcombe's published worked examples and
SciPy's independent implementation), the 2x2 rates (scikit-learn's confusion matrix), the
bootstrap over patients (its exact sampling variance), an arm's mean over seeds (the
issue's three runs, the variance parts by hand, and the coverage of a simulation), and
Holm's correction (a worked example and the procedure itself, run at every level)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import confusion_matrix

from medrepro.statistics.arm_interval import arm_mean_interval
from medrepro.statistics.bootstrap import (
    group_classes,
    group_keys,
    grouped_bootstrap_indices,
    grouped_bootstrap_interval,
    percentile_interval,
)
from medrepro.statistics.multiple_testing import holm
from medrepro.statistics.proportions import binary_rates, wilson_interval

# ----------------------------------------------------------------------------- Wilson

# Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score, no
# continuity correction), to the 4 decimals printed there
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)),
            ((0, 20), (0.0000, 0.1611)), ((1, 29), (0.0061, 0.1718))]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE)
def test_wilson_matches_newcombes_worked_examples(counts, published):
    low, high = wilson_interval(*counts)
    assert low == pytest.approx(published[0], abs=5e-5)
    assert high == pytest.approx(published[1], abs=5e-5)


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy_at_every_count(level):
    for trials in (1, 2, 7, 40, 263):
        for successes in range(trials + 1):
            oracle = stats.binomtest(successes, trials).proportion_ci(level, method="wilson")
            assert wilson_interval(successes, trials, level) == pytest.approx(
                (oracle.low, oracle.high), abs=1e-12)


def test_wilson_of_no_trials_is_undefined():
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)


def test_binary_rates_count_the_2x2_table_and_give_each_rate_its_wilson_interval():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 157)
    predicted = np.where(rng.random(157) < 0.75, truth, 1 - truth)
    rates = binary_rates(truth, predicted)
    tn, fp, fn, tp = confusion_matrix(truth, predicted, labels=[0, 1]).ravel()
    assert (rates["tp"], rates["fp"], rates["tn"], rates["fn"]) == (tp, fp, tn, fn)
    expected = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
                "ppv": (tp, tp + fp), "npv": (tn, tn + fn), "accuracy": (tp + tn, len(truth))}
    for name, (successes, trials) in expected.items():
        rate = rates[name]
        oracle = stats.binomtest(int(successes), int(trials)).proportion_ci(method="wilson")
        assert (rate.successes, rate.trials) == (successes, trials), name
        assert rate.value == pytest.approx(successes / trials), name
        assert (rate.low, rate.high) == pytest.approx((oracle.low, oracle.high), abs=1e-12), name


def test_a_rate_without_denominator_is_nan():
    rates = binary_rates([0, 0, 0], [0, 0, 0])  # no positive image, nothing called positive
    for name in ("sensitivity", "ppv"):
        assert math.isnan(rates[name].value) and math.isnan(rates[name].low), name
    assert rates["specificity"].value == 1.0 and rates["specificity"].trials == 3


# ----------------------------------------------------------------------------- bootstrap


def patients(n_patients: int, seed: int = 0):
    """Labels and patient ids: 1 to 4 images per patient, mostly of one class."""
    rng = np.random.default_rng(seed)
    labels, ids = [], []
    for patient in range(n_patients):
        label = int(rng.random() < 0.4)
        for _ in range(rng.integers(1, 5)):
            labels.append(label if rng.random() < 0.9 else 1 - label)
            ids.append(f"p{patient}")
    return np.array(labels), np.array(ids, dtype=object)


def multiplicities(sample: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(sample, minlength=n)


def test_missing_patient_ids_are_groups_of_their_own():
    keys = group_keys(["a", None, "a", float("nan"), "", "b", None])
    assert keys[0] == keys[2]
    assert len({keys[0], keys[1], keys[3], keys[4], keys[5], keys[6]}) == 6


def test_a_patients_class_is_the_most_frequent_label_and_the_first_class_on_a_tie():
    keys = group_keys(["a", "a", "a", "b", "b", "c"])
    classes = group_classes([0, 1, 1, 1, 0, 2], keys)
    assert list(classes) == [1, 0, 2]


def test_resamples_keep_patients_whole_and_each_classs_number_of_patients():
    labels, ids = patients(60)
    ids[[3, 10, 11]] = None  # images without a patient id: patients of their own
    keys = group_keys(ids)
    classes = group_classes(labels, keys)
    first_image = np.array([np.flatnonzero(keys == g)[0] for g in range(keys.max() + 1)])
    for sample in grouped_bootstrap_indices(labels, ids, 200, seed=5):
        counts = multiplicities(sample, len(labels))
        drawn = counts[first_image]  # times each patient was drawn
        assert np.array_equal(counts, drawn[keys]), "a patient's images were split"
        for c in np.unique(classes):
            assert drawn[classes == c].sum() == (classes == c).sum()


def test_resamples_are_seeded():
    labels, ids = patients(30)
    first = grouped_bootstrap_indices(labels, ids, 5, seed=1)
    again = grouped_bootstrap_indices(labels, ids, 5, seed=1)
    other = grouped_bootstrap_indices(labels, ids, 5, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_with_one_image_per_patient_it_is_the_stratified_bootstrap_of_images():
    """Each resample keeps the class counts, and the variance of a resampled mean is the
    stratified bootstrap's exact one, sum over classes of n_c·var_c / N² (var_c with ddof 0)."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    values = rng.normal(labels * 2.0, 1.0 + labels)
    samples = grouped_bootstrap_indices(labels, None, 3000, seed=7)
    assert all(np.array_equal(np.bincount(labels[s], minlength=3), [50, 30, 20])
               for s in samples)
    exact = sum((labels == c).sum() * values[labels == c].var() for c in range(3)) / 100**2
    resampled = np.var([values[s].mean() for s in samples])
    assert resampled == pytest.approx(exact, rel=0.08)


def test_the_variance_of_a_resampled_total_is_that_of_drawing_whole_patients_per_class():
    """A resample's sum of x is a sum of patients' totals, G_c of them drawn with
    replacement from class c: its exact variance is sum over classes of G_c·var_c(totals)."""
    labels, ids = patients(80, seed=1)
    rng = np.random.default_rng(1)
    keys = group_keys(ids)
    patient_effect = rng.normal(0, 2, keys.max() + 1)
    values = patient_effect[keys] + rng.normal(0, 0.5, len(labels)) + 3 * labels
    totals = np.bincount(keys, weights=values)
    classes = group_classes(labels, keys)
    exact = sum((classes == c).sum() * totals[classes == c].var() for c in np.unique(classes))
    resampled = np.var([values[s].sum() for s in grouped_bootstrap_indices(labels, ids, 3000, 3)])
    assert resampled == pytest.approx(exact, rel=0.08)


def test_an_interval_over_patients_is_wider_than_over_images_when_a_patients_images_agree():
    rng = np.random.default_rng(2)
    n_patients, per_patient = 50, 4
    ids = np.repeat(np.arange(n_patients), per_patient).astype(object)
    labels = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    correct = np.repeat(rng.random(n_patients) < 0.7, per_patient)  # right or wrong together
    flip = rng.random(len(correct)) < 0.05
    correct = correct ^ flip
    accuracy = lambda i: correct[i].mean()
    estimate, low, high = grouped_bootstrap_interval(accuracy, labels, ids, 1000, seed=0)
    _, image_low, image_high = grouped_bootstrap_interval(accuracy, labels, None, 1000, seed=0)
    assert estimate == pytest.approx(correct.mean())
    assert low < estimate < high
    assert (high - low) > 1.6 * (image_high - image_low)


def test_percentile_interval_reads_numpys_quantiles_and_ignores_nan():
    values = np.r_[np.arange(101.0), np.nan, np.inf]
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in percentile_interval([np.nan, np.nan]))


# ----------------------------------------------------------------------------- an arm's mean


def shared_draws(correct: np.ndarray, labels: np.ndarray, resamples: int, seed: int):
    """Each run's accuracy on the same resamples of the test set ([k, B])."""
    samples = np.stack(grouped_bootstrap_indices(labels, None, resamples, seed))
    return correct[:, samples].mean(axis=2)


def issue_runs():
    """The issue's arm: three runs on one test set of 40 brain MRI images, 57.5 %, 80.0 % and
    60.0 % correct, with much of their errors in common."""
    labels = np.array([0, 1] * 20)
    correct = np.zeros((3, 40))
    correct[0, :23] = 1
    correct[1, :32] = 1
    correct[2, list(range(20)) + [32, 33, 34, 35]] = 1
    return labels, correct


def test_the_issues_arm_gets_an_interval_that_holds_its_runs_and_is_wider_than_before():
    labels, correct = issue_runs()
    values = correct.mean(axis=1)
    assert list(values) == [0.575, 0.8, 0.6]
    draws = shared_draws(correct, labels, 2000, seed=0)
    result = arm_mean_interval(values, draws, bounds=(0, 1))
    # before: each run's test set resampled independently, the percentile interval of the mean
    rng = np.random.default_rng(0)
    independent = np.mean([run[rng.integers(0, 40, (2000, 40))].mean(axis=1)
                           for run in correct], axis=0)
    before_low, before_high = percentile_interval(independent)
    assert result.mean == pytest.approx(values.mean())
    assert result.low < 0.575 and result.high > 0.8
    assert result.high - result.low > before_high - before_low
    assert (result.high - result.low) / 2 > values.std(ddof=1) / math.sqrt(3)
    assert "Welch-Satterthwaite" in result.method and "3 runs" in result.method


def test_the_arm_interval_adds_the_runs_spread_to_the_test_set_sampling_they_share():
    labels, correct = issue_runs()
    values = correct.mean(axis=1)
    draws = shared_draws(correct, labels, 500, seed=4)
    result = arm_mean_interval(values, draws, level=0.9)
    pairs = [np.cov(draws[i], draws[j])[0, 1] for i in range(3) for j in range(3) if i != j]
    shared = max(0.0, float(np.mean(pairs)))
    between = values.var(ddof=1) / 3
    df = (shared + between) ** 2 * 2 / between**2
    half = stats.t.ppf(0.95, df) * math.sqrt(shared + between)
    assert result.test_set_variance == pytest.approx(shared)
    assert result.run_to_run_variance == pytest.approx(between)
    assert result.degrees_of_freedom == pytest.approx(df)
    assert (result.low, result.high) == pytest.approx((values.mean() - half, values.mean() + half))


def test_runs_on_different_test_sets_get_the_t_interval_of_their_values():
    values = [0.81, 0.86, 0.78, 0.84]
    result = arm_mean_interval(values)
    oracle = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (result.low, result.high) == pytest.approx(oracle)


def test_one_run_gets_its_test_set_interval_and_says_so():
    draws = np.random.default_rng(0).normal(0.7, 0.05, (1, 4000))
    result = arm_mean_interval([0.7], draws)
    assert (result.low, result.high) == pytest.approx((0.7 - 1.96 * 0.05, 0.7 + 1.96 * 0.05),
                                                      abs=0.005)
    assert "run-to-run variation is unknown" in result.method


def test_the_arm_interval_covers_the_expected_metric_over_seeds_and_test_sets():
    """Simulation of the random-effects model: a seed shifts a run's accuracy, patients are
    hard or easy for every run. Over 300 arms of 3 runs on 40 new test images, the interval
    holds the expected accuracy about 95 % of the time; the interval of test images only
    does not."""
    rng = np.random.default_rng(11)
    c0, tau, rho, n, k = 0.6, 0.3, 0.5, 40, 3
    expected = stats.norm.cdf(c0 / math.sqrt(1 + tau**2))
    covered = covered_before = 0
    for arm in range(300):
        cut = c0 + tau * rng.standard_normal(k)
        latent = (math.sqrt(rho) * rng.standard_normal(n)
                  + math.sqrt(1 - rho) * rng.standard_normal((k, n)))
        correct = (latent < cut[:, None]).astype(float)
        labels = rng.integers(0, 2, n)
        draws = shared_draws(correct, labels, 300, seed=arm)
        result = arm_mean_interval(correct.mean(axis=1), draws)
        covered += result.low <= expected <= result.high
        low, high = percentile_interval(draws.mean(axis=0))
        covered_before += low <= expected <= high
    assert covered / 300 >= 0.88
    assert covered_before / 300 <= 0.80


# ----------------------------------------------------------------------------- Holm


def test_holm_matches_the_worked_example():
    # four hypotheses at alpha 0.05: Holm rejects the first and the fourth only
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted <= 0.05) == [True, False, False, True]


def holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's procedure as published: test the smallest p-value at alpha/m, the next at
    alpha/(m-1), ..., and stop at the first that is not rejected."""
    rejected = np.zeros(len(p), dtype=bool)
    for step, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (len(p) - step) * (1 + 1e-12):
            break
        rejected[i] = True
    return rejected


def test_holm_adjusted_p_is_the_smallest_level_at_which_holms_procedure_rejects():
    rng = np.random.default_rng(5)
    for _ in range(200):
        m = int(rng.integers(1, 8))
        p = np.round(rng.random(m) ** 3, 3)  # small values, ties
        m_sorted = np.sort(p)
        levels = [lv for lv in (m - np.arange(m)) * m_sorted if lv <= 1] + [1.0]
        oracle = [min([lv for lv in levels if holm_rejects(p, lv)[i]], default=1.0)
                  for i in range(m)]
        assert holm(p) == pytest.approx(oracle, abs=1e-12), p


def test_holm_leaves_missing_p_values_out_and_caps_at_one():
    adjusted = holm([0.02, np.nan, 0.6, 0.55, 0.01])  # m = 4: 0.04, 0.06, 1.1 -> 1, 0.6
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2, 3, 4]] == pytest.approx([0.06, 1.0, 1.0, 0.04])
