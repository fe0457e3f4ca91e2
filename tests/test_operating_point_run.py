"""model.threshold in a real run: a rule (youden, sensitivity@X) chooses the threshold on
the tested checkpoint's validation predictions, the test set is scored at it unchanged,
a number stays as it is, and eval.py applies the same threshold to the checkpoint.

Oracles: scikit-learn's ROC curve (Youden's J = TPR - FPR at every distinct threshold, the
highest threshold on a tie, as medrepro.statistics.operating_point documents), its
confusion matrix and recall, and numpy over the run's own val_predictions.csv and
predictions.csv. One tiny run per rule (test_resnet, 32 px, 2 epochs), one eval.py process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, compose_config
from PIL import Image
from sklearn.metrics import confusion_matrix, recall_score, roc_curve

from medrepro.core.run_folder import PREDICTIONS_CSV, RESULTS_JSON, VAL_PREDICTIONS_CSV
from medrepro.jobs.trained_model import load_trained_model
from medrepro.jobs.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 40 images per class, 30 % of them validation, 30 % test: 24 images each, both classes
RUN = ["data=folder", "data.split.ratios={train: 0.4, val: 0.3, test: 0.3}",
       "model.name=test_resnet", "data.image_size=32", "trainer.batch_size=8",
       "trainer.max_epochs=2", "data.loader.num_workers=0", "trainer.accelerator=cpu",
       "trainer.enable_progress_bar=false", "logger=none", "~callbacks.failure_gallery",
       "~callbacks.run_plots"]


def overlapping_classes(root: Path, per_class: int, seed: int) -> Path:
    """``root/a/`` and ``root/b/``: smooth 32 px textures whose brightness is drawn per image
    from two overlapping distributions (``b`` brighter on average), so that no threshold
    separates the classes and the rules' choices differ."""
    rng = np.random.default_rng(seed)
    for label, centre in (("a", 105), ("b", 135)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            level = centre + rng.normal(0, 22)
            coarse = np.clip(rng.normal(level, 25, (4, 4)), 0, 255).astype(np.uint8)
            Image.fromarray(coarse).resize((32, 32), Image.BICUBIC).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return overlapping_classes(tmp_path_factory.mktemp("images") / "root", per_class=40, seed=5)


def trained(tmp_path_factory, images: Path, threshold: str) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_config([*RUN, f"data.root={images}", f"model.threshold={threshold}"], run_dir))
    return run_dir


@pytest.fixture(scope="module")
def youden_run(tmp_path_factory, images) -> Path:
    return trained(tmp_path_factory, images, "youden")


@pytest.fixture(scope="module")
def sensitivity_run(tmp_path_factory, images) -> Path:
    return trained(tmp_path_factory, images, "sensitivity@0.9")


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory, images) -> Path:
    return trained(tmp_path_factory, images, "0.3")


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS_JSON).read_text())


def table(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Labels (1 = positive, the second class) and positive-class probabilities as the
    float32 numbers the model computed (the file holds their shortest decimal form)."""
    frame = pd.read_csv(run_dir / name)
    return (frame["label_index"].to_numpy(), frame["probability"].to_numpy(np.float32),
            frame)


def at(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """1 where a float32 probability is >= ``threshold`` (compared exactly)."""
    return (probabilities.astype(np.float64) >= threshold).astype(int)


def checkpoint_file(run_dir: Path) -> Path:
    return run_dir / results(run_dir)["tested_checkpoint"]["file"]


def youden_optimum(run_dir: Path) -> tuple[float, float, float]:
    """(threshold, sensitivity, specificity) of scikit-learn's ROC curve of the run's
    val_predictions.csv where Youden's J = TPR - FPR is largest (the highest threshold of a
    tie: the thresholds fall from +inf, and argmax takes the first maximum)."""
    truth, probability, _ = table(run_dir, VAL_PREDICTIONS_CSV)
    fpr, tpr, thresholds = roc_curve(truth, probability.astype(np.float64), drop_intermediate=False)
    best = 1 + int(np.argmax((tpr - fpr)[1:]))
    return float(thresholds[best]), float(tpr[best]), float(1 - fpr[best])


def test_youden_threshold_is_the_roc_optimum_of_the_validation_predictions(youden_run):
    truth, probability, frame = table(youden_run, VAL_PREDICTIONS_CSV)
    split = pd.read_csv(youden_run / "split.csv")
    assert sorted(frame["path"]) == sorted(split.loc[split["split"] == "val", "path"])
    assert set(truth) == {0, 1}
    optimum, sensitivity, specificity = youden_optimum(youden_run)
    point = results(youden_run)["operating_point"]
    assert point["rule"] == "youden" and point["chosen_on"] == "validation"
    assert point["threshold"] == pytest.approx(optimum, rel=1e-7)
    # the validation rates reported at it, and val_predictions.csv's decisions
    predicted = at(probability, point["threshold"])
    assert point["val"]["sensitivity"] == pytest.approx(sensitivity)
    assert point["val"]["specificity"] == pytest.approx(specificity)
    np.testing.assert_array_equal(frame["predicted_index"], predicted)


def test_the_test_set_is_scored_at_the_validation_threshold(youden_run):
    threshold = results(youden_run)["operating_point"]["threshold"]
    assert threshold != 0.5
    truth, probability, frame = table(youden_run, PREDICTIONS_CSV)
    predicted = at(probability, threshold)
    np.testing.assert_array_equal(frame["predicted_index"], predicted)
    tested = results(youden_run)
    matrix = tested["confusion_matrix"]["test"]["rows_true_columns_predicted"]
    np.testing.assert_array_equal(matrix, confusion_matrix(truth, predicted, labels=[0, 1]))
    assert tested["test"]["recall"] == pytest.approx(recall_score(truth, predicted), abs=1e-6)
    assert tested["test"]["specificity"] == pytest.approx(
        recall_score(truth, predicted, pos_label=0), abs=1e-6)


def test_the_tested_checkpoint_keeps_the_operating_point(youden_run):
    point = results(youden_run)["operating_point"]
    checkpoint = torch.load(checkpoint_file(youden_run), map_location="cpu", weights_only=True)
    stored = checkpoint["medrepro"]["operating_point"]
    assert stored["threshold"] == point["threshold"] and stored["rule"] == "youden"
    assert stored["chosen_on"] == "validation" and stored["temperature"] is None
    assert "config" in checkpoint["medrepro"]  # the run's configuration is kept beside it
    assert load_trained_model(checkpoint_file(youden_run)).threshold == point["threshold"]


def test_sensitivity_rule_reaches_its_target_with_the_highest_threshold(sensitivity_run):
    truth, probability, _ = table(sensitivity_run, VAL_PREDICTIONS_CSV)
    point = results(sensitivity_run)["operating_point"]
    assert point["rule"] == "sensitivity@0.9" and point["chosen_on"] == "validation"
    threshold = point["threshold"]
    sensitivity = recall_score(truth, at(probability, threshold))
    assert sensitivity >= 0.9 and point["val"]["sensitivity"] == pytest.approx(sensitivity)
    # any higher validation probability as the threshold misses the target
    for higher in np.unique(probability[probability.astype(np.float64) > threshold]):
        assert recall_score(truth, at(probability, float(higher))) < 0.9
    _, test_probability, test_frame = table(sensitivity_run, PREDICTIONS_CSV)
    np.testing.assert_array_equal(test_frame["predicted_index"], at(test_probability, threshold))


def test_a_number_is_pre_specified_and_kept(fixed_run):
    point = results(fixed_run)["operating_point"]
    assert point["threshold"] == 0.3 and point["rule"] is None
    assert point["chosen_on"] == "pre-specified"
    truth, probability, _ = table(fixed_run, VAL_PREDICTIONS_CSV)
    assert point["val"]["sensitivity"] == pytest.approx(recall_score(truth, at(probability, 0.3)))
    _, test_probability, test_frame = table(fixed_run, PREDICTIONS_CSV)
    np.testing.assert_array_equal(test_frame["predicted_index"], at(test_probability, 0.3))
    assert results(fixed_run)["calibration"]["method"] == "none"
    assert results(fixed_run)["calibration"]["test"]["after"] is None


def test_eval_scores_the_checkpoint_at_the_threshold_training_chose(youden_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"ckpt_path={checkpoint_file(youden_run)}",
         f"hydra.run.dir={folder}", "trainer.enable_progress_bar=false",
         "trainer.precision=32-true", "~callbacks.failure_gallery"],
        capture_output=True, text=True, cwd=folder.parent, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    trained_point = results(youden_run)["operating_point"]
    evaluated = results(folder)
    threshold = evaluated["evaluation"]["threshold"]
    assert threshold == pytest.approx(youden_optimum(youden_run)[0], rel=1e-7)
    assert evaluated["operating_point"] == trained_point
    truth, probability, frame = table(folder, PREDICTIONS_CSV)
    predicted = at(probability, threshold)
    np.testing.assert_array_equal(frame["predicted_index"], predicted)
    matrix = evaluated["confusion_matrix"]["test"]["rows_true_columns_predicted"]
    np.testing.assert_array_equal(matrix, confusion_matrix(truth, predicted, labels=[0, 1]))
    # the training run's own test images and decisions
    own = pd.read_csv(youden_run / PREDICTIONS_CSV)
    assert frame["path"].tolist() == own["path"].tolist()
    np.testing.assert_array_equal(frame["predicted_index"], own["predicted_index"])
