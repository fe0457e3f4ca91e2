"""Run-to-run statistics, bootstrap confidence intervals over test images, and the
Welch t-test that says whether two arms differ by more than run-to-run noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# metrics recomputable from predictions.csv (the loss needs the logits' loss function)
BOOTSTRAP_METRICS = ("acc", "precision", "recall", "f1", "specificity", "auroc", "mse")
SIGNIFICANCE = 0.05


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; ``None`` for fewer than 2 values)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), sd


def prediction_arrays(predictions: pd.DataFrame, classes: list[str]):
    """True labels, predicted labels and the ``[N, C]`` probabilities of a predictions.csv."""
    index = {name: i for i, name in enumerate(classes)}
    truth = predictions["label"].map(index).to_numpy()
    predicted = predictions["predicted"].map(index).to_numpy()
    probabilities = predictions[[f"prob_{name}" for name in classes]].to_numpy(float)
    return truth, predicted, probabilities


def metrics_from_predictions(truth, predicted, probabilities, class_keys, samples=None) -> dict:
    """The test metrics as the training computes them (torchmetrics conventions: binary
    tasks score class 1; multi-class tasks macro-average, accuracy is the fraction
    correct; a metric with an empty denominator is 0), for each resample in ``samples``
    (``[B, N]`` indices; ``None``: the data as is). Returns name -> ``[B]`` array."""
    n_classes = probabilities.shape[1]
    samples = np.arange(len(truth))[None, :] if samples is None else samples
    t, p = truth[samples], predicted[samples]
    confusion = np.zeros((len(samples), n_classes, n_classes))
    for true_class in range(n_classes):
        for predicted_class in range(n_classes):
            confusion[:, true_class, predicted_class] = ((t == true_class) & (p == predicted_class)).sum(1)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    fp, fn = confusion.sum(1) - tp, confusion.sum(2) - tp
    tn = confusion.sum((1, 2))[:, None] - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    specificity = _ratio(tn, tn + fp)
    values = {"acc": tp.sum(1) / samples.shape[1]}
    if n_classes == 2:
        values.update(precision=precision[:, 1], recall=recall[:, 1], f1=f1[:, 1],
                      specificity=specificity[:, 1])
    else:
        values.update(precision=precision.mean(1), recall=recall.mean(1), f1=f1.mean(1),
                      specificity=specificity.mean(1))
    one_hot = np.eye(n_classes)[t]
    values["mse"] = ((probabilities[samples] - one_hot) ** 2).mean((1, 2))
    values["auroc"] = _auroc(t, probabilities[samples])
    for i, key in enumerate(class_keys):
        values[f"precision_{key}"], values[f"recall_{key}"], values[f"f1_{key}"] = (
            precision[:, i], recall[:, i], f1[:, i]
        )
    return values


def bootstrap_samples(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``[resamples, n]`` indices drawn with replacement (seeded: the same report twice)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@dataclass
class Comparison:
    """Welch's t-test between the runs of two arms on one metric."""

    first: str
    second: str
    difference: float  # mean(first) - mean(second)
    p_value: float | None
    n_first: int
    n_second: int

    @property
    def distinguishable(self) -> bool | None:
        return None if self.p_value is None else self.p_value < SIGNIFICANCE


def welch(first: str, a: list[float], second: str, b: list[float]) -> Comparison:
    a = [v for v in a if v is not None and math.isfinite(v)]
    b = [v for v in b if v is not None and math.isfinite(v)]
    difference = float(np.mean(a) - np.mean(b)) if a and b else math.nan
    p_value = None
    if len(a) >= 2 and len(b) >= 2 and (np.std(a) > 0 or np.std(b) > 0):
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(first, second, difference, p_value, len(a), len(b))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float),
                     where=denominator > 0)


def _auroc(truth: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``truth`` ``[B, N]`` and ``probabilities`` ``[B, N, C]`` by the
    Mann-Whitney rank statistic (ties get average ranks, as in scikit-learn): binary
    tasks score class 1; multi-class tasks average the one-vs-rest AUROC of every class
    (scikit-learn's ``multi_class="ovr", average="macro"``). NaN where a class is absent."""
    n_classes = probabilities.shape[2]
    classes = [1] if n_classes == 2 else range(n_classes)
    per_class = []
    for c in classes:
        positive = truth == c
        n_positive = positive.sum(1)
        n_negative = truth.shape[1] - n_positive
        ranks = stats.rankdata(probabilities[:, :, c], axis=1)
        u = (ranks * positive).sum(1) - n_positive * (n_positive + 1) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class.append(np.where((n_positive > 0) & (n_negative > 0),
                                      u / (n_positive * n_negative), np.nan))
    return np.mean(per_class, axis=0)
