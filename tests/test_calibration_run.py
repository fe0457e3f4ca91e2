"""model.calibrate=temperature in a real run: the temperature fitted on the validation set
minimises its negative log-likelihood, the test set is scored with it, results.json gives
ECE, MCE and Brier score before and after it, the checkpoint keeps it (eval, predict and
the exported model apply it), and the reliability diagram is drawn.

Oracles: scipy's bounded scalar search of the validation NLL, scikit-learn's Brier score,
and a numpy ECE/MCE (equal-width bins: |fraction positive - mean probability| weighted by
the bin's share of the images), over the run's own val_predictions.csv and predictions.csv,
the model's own probabilities recovered by undoing the temperature (p = sigmoid(T logit q)).
One tiny run (test_resnet, 32 px, 2 epochs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from scipy import optimize, special
from sklearn.metrics import brier_score_loss, roc_auc_score
from test_operating_point_run import overlapping_classes

from medrepro.core.run_folder import PREDICTIONS_CSV, RESULTS_JSON, VAL_PREDICTIONS_CSV
from medrepro.jobs.model_export import ProbabilityModel
from medrepro.jobs.trained_model import load_trained_model
from medrepro.jobs.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BINS = 15
RUN = ["data=folder", "data.split.ratios={train: 0.4, val: 0.3, test: 0.3}",
       "model.name=test_resnet", "data.image_size=32", "trainer.batch_size=8",
       "trainer.max_epochs=2", "data.loader.num_workers=0", "trainer.accelerator=cpu",
       "trainer.enable_progress_bar=false", "logger=none", "~callbacks.failure_gallery",
       "model.calibrate=temperature",
       # large enough steps that the logits are not all near 0: an interior temperature
       "optimizer.lr=0.01"]


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory) -> Path:
    images = overlapping_classes(tmp_path_factory.mktemp("images") / "root", per_class=40, seed=7)
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_config([*RUN, f"data.root={images}"], run_dir))
    return run_dir


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS_JSON).read_text())


def temperature_of(run_dir: Path) -> float:
    return results(run_dir)["calibration"]["temperature"]


def probabilities(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, the calibrated positive-class probabilities of the file (float32, as the
    model computed them) and the model's own ones (the temperature undone)."""
    frame = pd.read_csv(run_dir / name)
    after = frame["probability"].to_numpy(np.float32).astype(np.float64)
    before = special.expit(temperature_of(run_dir) * special.logit(after))
    return frame["label_index"].to_numpy(), after, before


def nll(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    p = special.expit(logits / temperature)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))


def numpy_errors(truth: np.ndarray, p: np.ndarray, bins: int = BINS) -> tuple[float, float]:
    """(ECE, MCE) of positive-class probabilities: bins [k/bins, (k+1)/bins), 1 in the last."""
    index = np.minimum((p * bins).astype(int), bins - 1)
    ece, mce = 0.0, 0.0
    for k in np.unique(index):
        inside = index == k
        gap = abs(truth[inside].mean() - p[inside].mean())
        ece += inside.mean() * gap
        mce = max(mce, gap)
    return ece, mce


def test_the_temperature_minimises_the_validation_nll(calibrated_run):
    temperature = temperature_of(calibrated_run)
    assert temperature is not None and temperature != 1.0
    truth, after, _ = probabilities(calibrated_run, VAL_PREDICTIONS_CSV)
    logits = temperature * special.logit(after)  # the model's own validation logits
    search = optimize.minimize_scalar(lambda log_t: nll(logits, truth, math.exp(log_t)),
                                      bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                                      options={"xatol": 1e-8})
    assert math.exp(search.x) == pytest.approx(temperature, rel=2e-3)
    for nearby in (temperature * 0.97, temperature / 0.97):
        if 0.05 <= nearby <= 20:
            assert nll(logits, truth, temperature) < nll(logits, truth, nearby)


def test_calibration_errors_before_and_after_on_both_sets(calibrated_run):
    calibration = results(calibrated_run)["calibration"]
    assert calibration["method"] == "temperature" and calibration["bins"] == BINS
    for stage, name in (("val", VAL_PREDICTIONS_CSV), ("test", PREDICTIONS_CSV)):
        truth, after, before = probabilities(calibrated_run, name)
        for when, p in (("before", before), ("after", after)):
            reported = calibration[stage][when]
            ece, mce = numpy_errors(truth, p)
            assert reported["ece"] == pytest.approx(ece, abs=2e-5), (stage, when)
            assert reported["mce"] == pytest.approx(mce, abs=2e-5), (stage, when)
            assert reported["brier"] == pytest.approx(brier_score_loss(truth, p), abs=1e-6)
        # the temperature changes how confident, never the ranking
        assert roc_auc_score(truth, after) == pytest.approx(roc_auc_score(truth, before))
    assert calibration["val"]["after"]["brier"] != calibration["val"]["before"]["brier"]
    assert (calibrated_run / "plots" / "reliability_diagram.png").stat().st_size > 0


def test_the_checkpoint_and_the_exported_model_apply_the_temperature(calibrated_run):
    temperature = temperature_of(calibrated_run)
    record = results(calibrated_run)["tested_checkpoint"]
    model = load_trained_model(calibrated_run / record["file"])
    assert model.temperature == temperature
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.classifier(images)[:, 0]
        expected = torch.sigmoid(logits / temperature)
        np.testing.assert_allclose(model.classifier.predict_probabilities(images)[:, 1], expected,
                                   rtol=1e-5, atol=1e-6)
        exported = ProbabilityModel(model.classifier).eval()(images)[:, 1]
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(exported, torch.sigmoid(logits), atol=1e-4)
