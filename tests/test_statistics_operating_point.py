"""model.threshold: a number or a rule chosen on the validation set. The rules' thresholds
are checked against scikit-learn's ROC curve and against counting, threshold by threshold,
what each candidate does to the validation images."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medrepro.core.errors import ConfigError
from medrepro.statistics.operating_point import (
    ThresholdRule,
    choose_threshold,
    parse_threshold_rule,
    predict,
)


@pytest.mark.parametrize(("value", "rule"), [
    (0.5, ThresholdRule("fixed", 0.5)),
    (np.float32(0.25), ThresholdRule("fixed", 0.25)),
    ("0.3", ThresholdRule("fixed", 0.3)),
    ("youden", ThresholdRule("youden")),
    (" Youden ", ThresholdRule("youden")),
    ("sensitivity@0.95", ThresholdRule("sensitivity", 0.95)),
    ("specificity@0.9", ThresholdRule("specificity", 0.9)),
])
def test_accepted_thresholds(value, rule):
    assert parse_threshold_rule(value) == rule
    assert parse_threshold_rule(str(rule)) == rule  # what a report prints reads back


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, True, None, "nan", "inf", "0", "abc",
                                   "youden@0.5", "sensitivity@1", "sensitivity@0",
                                   "sensitivity@", "sens@0.9", "specificity@0.95x", [0.5]])
def test_anything_else_is_one_sentence_naming_the_accepted_forms(value):
    with pytest.raises(ConfigError) as error:
        parse_threshold_rule(value)
    message = str(error.value)
    assert message.startswith("model.threshold must be") and message.count(". ") == 0
    for form in ("0.5", "youden", "sensitivity@0.95", "specificity@0.95"):
        assert form in message


def validation_set(n=300, seed=0, rounding=2):
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.35).astype(int)
    probabilities = np.round(1 / (1 + np.exp(-(2.0 * truth - 1 + rng.normal(0, 1.3, n)))),
                             rounding)
    return truth, probabilities


def rates_at(truth, probabilities, threshold):
    predicted = probabilities >= threshold
    return (predicted & (truth == 1)).sum() / truth.sum(), (~predicted & (truth == 0)).sum() / (
        truth == 0).sum()


@pytest.mark.parametrize("seed", range(4))
def test_youden_is_the_roc_point_furthest_above_the_diagonal(seed):
    truth, probabilities = validation_set(seed=seed)
    fpr, tpr, thresholds = roc_curve(truth, probabilities, drop_intermediate=False)
    best = 1 + np.argmax((tpr - fpr)[1:])  # [0] is sklearn's "nothing positive" point
    threshold, description = choose_threshold("youden", truth, probabilities)
    assert threshold == thresholds[best]
    sensitivity, specificity = rates_at(truth, probabilities, threshold)
    assert (sensitivity, specificity) == pytest.approx((tpr[best], 1 - fpr[best]))
    assert "youden" in description and f"{sensitivity:.3f}" in description


def test_youden_takes_the_highest_of_equally_good_thresholds():
    truth = np.array([1, 1, 0, 0])
    probabilities = np.array([0.9, 0.6, 0.7, 0.2])  # J = 0.5 at 0.9 and at 0.6
    threshold, _ = choose_threshold("youden", truth, probabilities)
    assert threshold == 0.9


@pytest.mark.parametrize("target", [0.8, 0.95, 0.99])
def test_sensitivity_rule_is_the_highest_threshold_that_reaches_it(target):
    truth, probabilities = validation_set(seed=1)
    threshold, _ = choose_threshold(f"sensitivity@{target}", truth, probabilities)
    reaching = [t for t in np.unique(probabilities)
                if rates_at(truth, probabilities, t)[0] >= target]
    assert threshold == max(reaching)
    best_specificity = max(rates_at(truth, probabilities, t)[1] for t in reaching)
    assert rates_at(truth, probabilities, threshold)[1] == best_specificity


@pytest.mark.parametrize("target", [0.8, 0.95, 0.99])
def test_specificity_rule_is_the_lowest_threshold_that_reaches_it(target):
    truth, probabilities = validation_set(seed=2)
    threshold, _ = choose_threshold(f"specificity@{target}", truth, probabilities)
    fpr, _, thresholds = roc_curve(truth, probabilities, drop_intermediate=False)
    assert threshold == thresholds[np.flatnonzero(1 - fpr >= target)[-1]]
    reaching = [t for t in np.unique(probabilities)
                if rates_at(truth, probabilities, t)[1] >= target]
    assert threshold == min(reaching)


def test_a_rate_reached_exactly_counts():
    truth = np.r_[np.ones(20, int), np.zeros(20, int)]
    probabilities = np.r_[np.linspace(0.55, 0.99, 19), 0.2, np.linspace(0.01, 0.5, 20)]
    threshold, _ = choose_threshold("sensitivity@0.95", truth, probabilities)
    assert threshold == pytest.approx(0.55)  # 19 of 20 positives: exactly 0.95
    assert rates_at(truth, probabilities, threshold) == (0.95, 1.0)


def test_when_only_calling_everything_negative_reaches_the_specificity_it_says_so():
    truth = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([0.9, 0.9, 0.9, 0.9, 0.1])
    threshold, description = choose_threshold("specificity@0.9", truth, probabilities)
    assert threshold > 0.9 and predict(probabilities, threshold).sum() == 0
    assert "every image negative" in description


def test_the_chosen_threshold_is_applied_unchanged_to_the_test_set():
    truth, probabilities = validation_set(seed=3)
    threshold, _ = choose_threshold("youden", truth, probabilities)
    _, test_probabilities = validation_set(seed=4, rounding=4)
    two_columns = np.stack([1 - test_probabilities, test_probabilities], axis=1)
    assert np.array_equal(predict(two_columns, threshold),
                          (test_probabilities >= threshold).astype(int))


def test_a_fixed_threshold_needs_no_validation_set():
    assert choose_threshold(0.3, None, None) == (0.3, "0.3 (fixed by model.threshold)")


def test_a_rule_needs_both_classes_in_the_validation_set():
    with pytest.raises(ConfigError, match=r"model.threshold=youden .* negative images only"):
        choose_threshold("youden", [0, 0, 0], [0.1, 0.4, 0.3])


def test_a_rule_needs_a_two_class_task():
    with pytest.raises(ConfigError, match="two-class tasks only"):
        choose_threshold("youden", [0, 1, 2], np.full((3, 3), 1 / 3))
