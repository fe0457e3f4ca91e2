"""Which way round a run reports its results: confusion-matrix rows and columns, the
positive class, and which class each probability column belongs to.

The right answers come from outside the code. The test images are uniform grey squares
in ``train/``, ``val/`` and ``test/`` class folders, and the models are set by hand:

* a "brightness" model (a two-parameter torch module in place of the timm backbone) whose
  positive-class logit is ``10 * (mean pixel / 255) - 5``, so every image's probability,
  and its predicted class at any threshold, follows from its pixel value (written down
  below, with the confusion matrix it must give);
* timm's ``test_resnet`` with a zero head and a biased output, which always predicts a
  known class with a known probability.

Each runs ``trainer.test`` with the real data module, config and run-folder callbacks
(``TestPredictions``, ``ResultsJSON``). The positive class is ``cardiomegaly``, which is
*not* the alphabetically second class (``normal`` would be by default).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from PIL import Image
from sklearn import metrics as skm
from torch import nn

from medrepro.callbacks.results_json import ResultsJSON
from medrepro.callbacks.test_predictions import TestPredictions
from medrepro.jobs.training import build_callbacks, build_model, build_trainer

NEGATIVE, POSITIVE = "normal", "cardiomegaly"
CLASSES = [NEGATIVE, POSITIVE]  # label order: 0, 1
SLOPE, INTERCEPT = 10.0, -5.0  # brightness model: logit = SLOPE * pixel / 255 + INTERCEPT
# test images: one uniform image per pixel value; all values distinct (no ties)
TEST_PIXELS = {
    NEGATIVE: [20, 60, 110, 150, 170, 190],
    POSITIVE: [115, 140, 160, 180, 200, 220, 240],
}
# Worked out by hand. The brightness model says cardiomegaly when p >= threshold:
# threshold 0.5 <=> pixel >= 128; threshold 0.3 <=> pixel >= 106 (logit(0.3) = -0.847).
# normal: 150, 170, 190 are called cardiomegaly at 0.5, and 110 too at 0.3;
# cardiomegaly: 115 is called normal at 0.5 and cardiomegaly at 0.3.
HAND_LABELLED_CONFUSION = {  # rows: true normal, cardiomegaly; columns: predicted
    0.5: [[3, 3], [1, 6]],
    0.3: [[2, 4], [0, 7]],
}
SIZE = 32
# float32: the hand-worked probabilities are exact arithmetic, and bf16-mixed (what
# trainer.precision=auto gives on a CPU with native bfloat16) rounds the logits to 8 bits
# (probabilities off by up to 0.004)
FAST = ["data.image_size=32", "data.loader.num_workers=0", "model.name=test_resnet", "model.mean=[0.0]",
        "model.std=[1.0]", "logger=none", "trainer.enable_progress_bar=false",
        "~callbacks.run_plots", "trainer.precision=32-true"]


# tiny models run fastest on one thread (two threads on a busy 2-core machine spin)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_uniform(path: Path, pixel: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE), pixel, np.uint8)).save(path)


def write_given_split(root: Path, test_pixels: dict[str, list[int]]) -> Path:
    """``root/{train,val,test}/<class>/<class>_<pixel>.png``; train and val get two images
    per class (only the test split matters here), each class its own pixel values: two
    uniform images of one value would be copies under two labels, which the split leaves
    out."""
    for k, (name, pixels) in enumerate(test_pixels.items()):
        train, val = [241 + 4 * k, 242 + 4 * k], [243 + 4 * k, 244 + 4 * k]
        assert not set(train + val) & {p for values in test_pixels.values() for p in values}
        for split, values in (("train", train), ("val", val), ("test", pixels)):
            for pixel in values:
                write_uniform(root / split / name / f"{name}_{pixel:03d}.png", pixel)
    return root


@pytest.fixture(scope="module")
def binary_root(tmp_path_factory) -> Path:
    return write_given_split(tmp_path_factory.mktemp("binary"), TEST_PIXELS)


def oracle_probability(pixel) -> np.ndarray:
    """The brightness model's positive-class probability, computed here in numpy."""
    return 1 / (1 + np.exp(-(SLOPE * np.asarray(pixel, float) / 255 + INTERCEPT)))


def pixel_of(path: str) -> int:
    return int(Path(path).stem.rsplit("_", 1)[1])


def class_of(path: str) -> str:
    return Path(path).parent.name


def run_test_stage(root: Path, out: Path, overrides: list[str], set_weights):
    """Compose the config, build the data module and model as ``train.py`` does, set the
    model's weights by hand, run ``trainer.test`` with the config's callbacks and return
    results.json and predictions.csv."""
    cfg = compose_config(["data=folder", f"data.root={root}", "data.split.mode=given", *FAST,
                          *overrides], out)
    datamodule = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("test")
    model = build_model(cfg, datamodule.class_names, datamodule.model_channels)
    set_weights(model)
    callbacks = build_callbacks(cfg)
    assert any(isinstance(c, TestPredictions) for c in callbacks)
    assert any(isinstance(c, ResultsJSON) for c in callbacks)
    trainer = build_trainer(cfg, callbacks, False, out)
    trainer.test(model, datamodule=datamodule, verbose=False)
    return json.loads((out / "results.json").read_text()), pd.read_csv(out / "predictions.csv")


def brightness_model(model) -> None:
    """Replace the backbone by ``logit = SLOPE * mean pixel + INTERCEPT`` (one logit, the
    positive class's, as the binary head of ``loss=auto`` has)."""
    linear = nn.Linear(1, 1)
    with torch.no_grad():
        linear.weight.fill_(SLOPE)
        linear.bias.fill_(INTERCEPT)
    model.backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


@pytest.fixture(scope="module", params=[0.5, 0.3], ids=["threshold0.5", "threshold0.3"])
def brightness_run(request, binary_root, tmp_path_factory):
    """The brightness model tested with ``data.positive_class=cardiomegaly`` and
    ``model.threshold`` 0.5 or 0.3."""
    threshold = request.param
    out = tmp_path_factory.mktemp(f"brightness_{threshold}")
    results, predictions = run_test_stage(
        binary_root, out, [f"data.positive_class={POSITIVE}", f"model.threshold={threshold}"],
        brightness_model,
    )
    return threshold, results, predictions


def test_results_json_records_the_chosen_positive_class(brightness_run):
    """``data.positive_class=cardiomegaly`` makes cardiomegaly label 1, and results.json
    says so, although the default (the second class, sorted) would be normal."""
    _, results, predictions = brightness_run
    assert results["data"]["classes"] == CLASSES
    assert results["data"]["positive_class"] == POSITIVE
    assert results["confusion_matrix"]["test"]["classes"] == CLASSES
    assert (predictions["label_index"] == predictions["label"].map(CLASSES.index)).all()


def test_confusion_matrix_rows_are_the_true_class(brightness_run):
    """results.json's ``rows_true_columns_predicted`` is exactly the hand-labelled,
    asymmetric confusion matrix, and scikit-learn's ``confusion_matrix(label, predicted)``
    of predictions.csv (a transposed matrix differs from both)."""
    threshold, results, predictions = brightness_run
    matrix = results["confusion_matrix"]["test"]["rows_true_columns_predicted"]
    expected = HAND_LABELLED_CONFUSION[threshold]
    assert expected != np.transpose(expected).tolist()  # the case can tell the two apart
    assert matrix == expected
    from_csv = skm.confusion_matrix(predictions["label"], predictions["predicted"], labels=CLASSES)
    assert matrix == from_csv.tolist()
    # and predictions.csv's true labels are the folders the images came from
    assert (predictions["label"] == predictions["path"].map(class_of)).all()


def test_each_probability_column_belongs_to_its_class(brightness_run):
    """predictions.csv: ``probability`` and ``prob_cardiomegaly`` are the positive class's
    probability, ``prob_normal`` the other one's, and ``predicted`` applies the model's
    threshold to the positive class's probability."""
    threshold, _, predictions = brightness_run
    expected = oracle_probability(predictions["path"].map(pixel_of))
    np.testing.assert_allclose(predictions["probability"], expected, atol=1e-6)
    np.testing.assert_allclose(predictions[f"prob_{POSITIVE}"], expected, atol=1e-6)
    np.testing.assert_allclose(predictions[f"prob_{NEGATIVE}"], 1 - expected, atol=1e-6)
    called_positive = np.where(expected >= threshold, POSITIVE, NEGATIVE)
    assert predictions["predicted"].tolist() == called_positive.tolist()
    assert (predictions["predicted_index"] == predictions["predicted"].map(CLASSES.index)).all()


def test_binary_metrics_match_scikit_learn_at_the_models_threshold(brightness_run):
    """Every binary test metric in results.json scores the positive class at
    ``model.threshold``, as scikit-learn computes it from predictions.csv's true labels and
    positive-class probabilities, and from the hand-set model's probabilities."""
    threshold, results, predictions = brightness_run
    truth = (predictions["label"] == POSITIVE).astype(int).to_numpy()
    oracle = oracle_probability(predictions["path"].map(pixel_of))
    np.testing.assert_allclose(predictions["probability"], oracle, atol=1e-6)
    for score in (predictions["probability"].to_numpy(), oracle):
        called = (score >= threshold).astype(int)
        expected = {
            "acc": skm.accuracy_score(truth, called),
            "precision": skm.precision_score(truth, called),
            "recall": skm.recall_score(truth, called),  # sensitivity
            "specificity": skm.recall_score(truth, called, pos_label=0),
            "f1": skm.f1_score(truth, called),
            "auroc": skm.roc_auc_score(truth, score),
            "mse": skm.mean_squared_error(truth, score),
            "loss": skm.log_loss(truth, score),
            f"precision_{POSITIVE}": skm.precision_score(truth, called),
            f"recall_{POSITIVE}": skm.recall_score(truth, called),
            f"f1_{POSITIVE}": skm.f1_score(truth, called),
            f"precision_{NEGATIVE}": skm.precision_score(truth, called, pos_label=0),
            f"recall_{NEGATIVE}": skm.recall_score(truth, called, pos_label=0),
            f"f1_{NEGATIVE}": skm.f1_score(truth, called, pos_label=0),
        }
        for key, value in expected.items():
            assert results["test"][key] == pytest.approx(value, abs=1e-5), key
    # hand check of the numbers at this threshold: [[TN, FP], [FN, TP]]
    (tn, fp), (fn, tp) = HAND_LABELLED_CONFUSION[threshold]
    assert results["test"]["recall"] == pytest.approx(tp / (tp + fn))
    assert results["test"]["specificity"] == pytest.approx(tn / (tn + fp))
    assert results["test"]["precision"] == pytest.approx(tp / (tp + fp))


def constant_head(bias: list[float]):
    """Zero the timm head's weights and set its bias: every image gets the same logits."""

    def set_weights(model) -> None:
        head = model.backbone.get_classifier()
        assert head.out_features == len(bias)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias))

    return set_weights


CONSTANT_MODELS = {  # loss, head bias -> the class always predicted, its probability
    "bce_favours_positive": ("auto", [3.0], POSITIVE, 1 / (1 + np.exp(-3.0))),
    "bce_favours_negative": ("auto", [-3.0], NEGATIVE, 1 / (1 + np.exp(-3.0))),
    "ce_favours_positive": ("ce", [-1.0, 2.0], POSITIVE, 1 / (1 + np.exp(-3.0))),
    "ce_favours_negative": ("ce", [1.5, -1.5], NEGATIVE, 1 / (1 + np.exp(-3.0))),
}


@pytest.mark.parametrize("case", CONSTANT_MODELS)
def test_a_model_that_always_predicts_one_class(case, binary_root, tmp_path):
    """A real timm model that always favours one class, with one logit (sigmoid) or two
    (softmax): every image is predicted as that class, ``probability`` is the positive
    class's probability, the ``prob_<class>`` columns carry the right classes' values, and
    the confusion matrix has the known counts in that class's column."""
    loss, bias, favoured, favoured_probability = CONSTANT_MODELS[case]
    results, predictions = run_test_stage(
        binary_root, tmp_path, [f"data.positive_class={POSITIVE}", f"loss={loss}"],
        constant_head(bias),
    )
    other = NEGATIVE if favoured == POSITIVE else POSITIVE
    positive_probability = (
        favoured_probability if favoured == POSITIVE else 1 - favoured_probability
    )
    assert (predictions["predicted"] == favoured).all()
    np.testing.assert_allclose(predictions[f"prob_{favoured}"], favoured_probability, atol=1e-6)
    np.testing.assert_allclose(predictions[f"prob_{other}"], 1 - favoured_probability, atol=1e-6)
    np.testing.assert_allclose(predictions["probability"], positive_probability, atol=1e-6)
    counts = [len(TEST_PIXELS[name]) for name in CLASSES]  # true images per class
    column = CLASSES.index(favoured)
    expected = [[count if j == column else 0 for j in range(2)] for count in counts]
    assert results["confusion_matrix"]["test"]["rows_true_columns_predicted"] == expected
    test = results["test"]
    expected_rates = (1.0, 0.0) if favoured == POSITIVE else (0.0, 1.0)
    assert (test["recall"], test["specificity"]) == expected_rates
    assert test["acc"] == pytest.approx(counts[column] / sum(counts))
    truth = (predictions["label"] == POSITIVE).astype(int)
    assert test["mse"] == pytest.approx(((truth - positive_probability) ** 2).mean(), abs=1e-6)


MULTI_CLASSES = ["normal", "pneumonia", "COVID-19"]  # not sorted: COVID-19 would come first
MULTI_TEST_PIXELS = {"normal": [10, 20, 30, 40], "pneumonia": [50, 60], "COVID-19": [70, 80, 90]}


def test_multi_class_columns_follow_the_given_class_order(tmp_path):
    """With ``data.class_names=[normal,pneumonia,COVID-19]`` label 1 is pneumonia: a model
    whose softmax favours output 1 predicts pneumonia for every image, ``prob_pneumonia``
    holds that probability, and the confusion matrix's pneumonia column holds every
    class's count (rows true, in the given order)."""
    root = write_given_split(tmp_path / "images", MULTI_TEST_PIXELS)
    bias = [0.0, 2.0, -1.0]
    softmax = np.exp(bias) / np.exp(bias).sum()
    results, predictions = run_test_stage(
        root, tmp_path / "run", ["data.class_names=[normal,pneumonia,COVID-19]"],
        constant_head(bias),
    )
    assert results["data"]["classes"] == MULTI_CLASSES
    assert results["data"]["positive_class"] is None
    assert (predictions["predicted"] == "pneumonia").all()
    assert (predictions["label"] == predictions["path"].map(class_of)).all()
    for name, probability in zip(MULTI_CLASSES, softmax):
        np.testing.assert_allclose(predictions[f"prob_{name}"], probability, atol=1e-6)
    np.testing.assert_allclose(predictions["probability"], softmax[1], atol=1e-6)  # predicted class
    matrix = results["confusion_matrix"]["test"]["rows_true_columns_predicted"]
    assert matrix == [[0, len(MULTI_TEST_PIXELS[name]), 0] for name in MULTI_CLASSES]
    assert matrix == skm.confusion_matrix(
        predictions["label"], predictions["predicted"], labels=MULTI_CLASSES
    ).tolist()
