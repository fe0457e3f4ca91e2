"""Calibration: ECE and MCE on torchmetrics' published examples, the reliability table by
hand, the Brier score against scikit-learn, and temperature scaling recovering the
temperature that generated the labels (its likelihood against torch's own losses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special
from sklearn.metrics import brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error

from medrepro.statistics.calibration import (
    calibration_errors,
    fit_temperature,
    logits_from_probabilities,
    negative_log_likelihood,
    reliability_table,
    scaled_probabilities,
)


def test_binary_errors_match_the_torchmetrics_documented_example():
    errors = calibration_errors([0, 0, 1, 1, 1], [0.25, 0.25, 0.55, 0.75, 0.75], bins=2)
    assert errors["ece"] == pytest.approx(0.2900, abs=5e-5)
    assert errors["mce"] == pytest.approx(0.3167, abs=5e-5)


def test_multiclass_errors_match_the_torchmetrics_documented_example():
    probabilities = [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60],
                     [0.90, 0.05, 0.05]]
    errors = calibration_errors([0, 1, 2, 0], probabilities, bins=3)
    assert errors["ece"] == pytest.approx(0.2000, abs=5e-5)
    assert errors["mce"] == pytest.approx(0.2333, abs=5e-5)


def test_reliability_table_by_hand():
    # bins of 0.25; 0.5 opens the third bin, 1.0 closes the last
    truth = [0, 0, 1, 1, 0, 1, 1]
    probabilities = [0.1, 0.2, 0.5, 0.6, 0.7, 1.0, 0.8]
    table = reliability_table(truth, probabilities, bins=4)
    assert list(table["low"]) == [0, 0.25, 0.5, 0.75]
    assert list(table["count"]) == [2, 0, 3, 2]
    assert table["mean_confidence"].tolist()[::2] == pytest.approx([0.15, 0.6])
    assert table["mean_confidence"][3] == pytest.approx(0.9)
    assert table["observed_frequency"].tolist()[::2] == pytest.approx([0.0, 2 / 3])
    assert table["observed_frequency"][3] == 1.0
    assert math.isnan(table["mean_confidence"][1]) and math.isnan(table["observed_frequency"][1])
    ece = (2 * 0.15 + 3 * abs(2 / 3 - 0.6) + 2 * 0.1) / 7
    assert calibration_errors(truth, probabilities, bins=4)["ece"] == pytest.approx(ece)


def test_multiclass_table_bins_the_top_label_confidence_against_accuracy():
    truth = [0, 1, 2, 2]
    probabilities = [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]
    table = reliability_table(truth, probabilities, bins=4)
    assert list(table["count"]) == [0, 0, 3, 1]  # 0.6, 0.6, 0.7 | 0.8
    assert table["mean_confidence"][2] == pytest.approx((0.7 + 0.6 + 0.6) / 3)
    assert table["observed_frequency"][2] == pytest.approx(2 / 3)  # wrong on the second image


@pytest.mark.parametrize("classes", [2, 4])
def test_the_ece_is_the_count_weighted_gap_of_the_reliability_table(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(0, 3, (500, classes))
    probabilities = special.softmax(logits, axis=1)
    probabilities[:5] = np.eye(classes)[0]  # exactly 0 and 1 as well
    truth = rng.integers(0, classes, 500)
    table = reliability_table(truth, probabilities, bins=10)
    gaps = (table["observed_frequency"] - table["mean_confidence"]).abs()
    errors = calibration_errors(truth, probabilities, bins=10)
    assert errors["ece"] == pytest.approx(float((gaps * table["count"]).sum() / 500), abs=1e-6)
    assert errors["mce"] == pytest.approx(float(gaps.max()), abs=1e-6)


def test_multiclass_errors_are_torchmetrics_multiclass_calibration_error():
    rng = np.random.default_rng(7)
    probabilities = special.softmax(rng.normal(0, 2, (400, 3)), axis=1)
    truth = rng.integers(0, 3, 400)
    errors = calibration_errors(truth, probabilities, bins=15)
    for name, norm in (("ece", "l1"), ("mce", "max")):
        oracle = multiclass_calibration_error(torch.tensor(probabilities), torch.tensor(truth), 3,
                                              n_bins=15, norm=norm)
        assert errors[name] == pytest.approx(float(oracle), abs=1e-6)


def test_brier_score_is_scikit_learns():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    positive = rng.random(200)
    assert calibration_errors(truth, positive)["brier"] == pytest.approx(
        brier_score_loss(truth, positive))
    truth = rng.integers(0, 3, 200)
    probabilities = special.softmax(rng.normal(size=(200, 3)), axis=1)
    assert calibration_errors(truth, probabilities)["brier"] == pytest.approx(
        brier_score_loss(truth, probabilities, labels=[0, 1, 2]))


def test_the_likelihood_is_torchs_cross_entropy():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(0, 2, (50, 3)), rng.integers(0, 3, 50)
    oracle = torch.nn.functional.cross_entropy(torch.tensor(logits / 1.7), torch.tensor(labels))
    assert negative_log_likelihood(logits, labels, 1.7) == pytest.approx(float(oracle))
    single, binary = rng.normal(0, 2, 50), rng.integers(0, 2, 50)
    oracle = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(single / 0.6), torch.tensor(binary, dtype=torch.float64))
    assert negative_log_likelihood(single[:, None], binary, 0.6) == pytest.approx(float(oracle))


@pytest.mark.parametrize(("shape", "temperature"), [((4000, 4), 2.0), ((4000, 4), 0.6),
                                                    ((4000,), 0.5), ((4000,), 2.5)])
def test_temperature_scaling_recovers_the_temperature_that_generated_the_labels(shape,
                                                                                temperature):
    rng = np.random.default_rng(int(temperature * 10))
    logits = rng.normal(0, 3, shape)
    truth = scaled_probabilities(logits, temperature)
    if logits.ndim == 1:
        labels = (rng.random(shape[0]) < truth).astype(int)
    else:
        labels = (rng.random((shape[0], 1)) > truth.cumsum(axis=1)).sum(axis=1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.1)
    before = negative_log_likelihood(logits, labels)
    after = negative_log_likelihood(logits, labels, fitted)
    assert after < before
    for nearby in (fitted * 0.97, fitted * 1.03):  # a minimum
        assert negative_log_likelihood(logits, labels, nearby) > after


def test_temperature_keeps_the_ranking_and_the_predicted_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (300, 3))
    before, after = scaled_probabilities(logits), scaled_probabilities(logits, 2.7)
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    single, binary = rng.normal(size=300), rng.integers(0, 2, 300)
    assert roc_auc_score(binary, scaled_probabilities(single, 0.3)) == pytest.approx(
        roc_auc_score(binary, scaled_probabilities(single)))


def test_probabilities_of_a_predictions_file_give_the_same_temperature_as_the_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (800, 3))
    labels = (rng.random((800, 1)) > scaled_probabilities(logits, 1.8).cumsum(axis=1)).sum(axis=1)
    recovered = logits_from_probabilities(scaled_probabilities(logits))
    assert fit_temperature(recovered, labels) == pytest.approx(fit_temperature(logits, labels),
                                                               rel=1e-4)
    single = rng.normal(0, 2, 800)
    two_columns = np.stack([1 - special.expit(single), special.expit(single)], axis=1)
    assert logits_from_probabilities(two_columns) == pytest.approx(single, abs=1e-6)
