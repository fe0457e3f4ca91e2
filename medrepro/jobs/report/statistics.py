"""Run-to-run statistics, the test metrics of bootstrap resamples (by multiplicity
weights, so resamples of whole patients may differ in length), and the Welch t-test that
says whether two arms differ by more than run-to-run noise."""

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
    (index arrays into the images, as many as wanted, of any lengths: a ``[B, N]`` array or
    a list of 1-D arrays, e.g. the resamples of a bootstrap over patients; ``None``: the
    data as is). Returns name -> ``[B]`` array."""
    n = len(truth)
    if samples is None:
        weights = np.ones((1, n))
    else:
        weights = np.stack([np.bincount(np.asarray(s, dtype=np.int64), minlength=n)
                            for s in samples]).astype(float) if len(samples) else np.zeros((0, n))
    return metrics_from_weights(truth, predicted, probabilities, class_keys, weights)


def metrics_from_weights(truth, predicted, probabilities, class_keys, weights) -> dict:
    """:func:`metrics_from_predictions` with each resample given as ``weights`` ``[B, N]``:
    how many times each image is in it (a resample's multiset of images; the metrics of a
    resample depend on nothing else). Returns name -> ``[B]`` array."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    probabilities = np.asarray(probabilities, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_classes = probabilities.shape[1]
    pairs = np.zeros((len(truth), n_classes * n_classes))
    pairs[np.arange(len(truth)), truth * n_classes + predicted] = 1
    confusion = (weights @ pairs).reshape(len(weights), n_classes, n_classes)
    total = weights.sum(1)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    fp, fn = confusion.sum(1) - tp, confusion.sum(2) - tp
    tn = total[:, None] - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    specificity = _ratio(tn, tn + fp)
    values = {"acc": _ratio(tp.sum(1), total)}
    if n_classes == 2:
        values.update(precision=precision[:, 1], recall=recall[:, 1], f1=f1[:, 1],
                      specificity=specificity[:, 1])
    else:
        values.update(precision=precision.mean(1), recall=recall.mean(1), f1=f1.mean(1),
                      specificity=specificity.mean(1))
    one_hot = np.eye(n_classes)[truth]
    squared_error = ((probabilities - one_hot) ** 2).mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values["mse"] = weights @ squared_error / total
    values["auroc"] = _auroc(truth, probabilities, weights)
    for i, key in enumerate(class_keys):
        values[f"precision_{key}"], values[f"recall_{key}"], values[f"f1_{key}"] = (
            precision[:, i], recall[:, i], f1[:, i]
        )
    return values


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
    """Welch's two-sample t-test (unequal variances, two-sided) of two arms' run values."""
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


def _auroc(truth: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each resample (a row of ``weights``: how often each image is in it) by the
    Mann-Whitney statistic, ties counting one half (as scikit-learn): binary tasks score
    class 1; multi-class tasks average the one-vs-rest AUROC of every class
    (scikit-learn's ``multi_class="ovr", average="macro"``). NaN where a class is absent."""
    n_classes = probabilities.shape[1]
    classes = [1] if n_classes == 2 else range(n_classes)
    per_class = []
    for c in classes:
        order = np.argsort(probabilities[:, c], kind="stable")
        scores = probabilities[order, c]
        starts = np.flatnonzero(np.concatenate([[True], scores[1:] != scores[:-1]]))
        positive = (truth[order] == c).astype(float)
        if not len(scores):
            per_class.append(np.full(len(weights), np.nan))
            continue
        # per distinct score: the weight of positive and of negative images with it
        pos = np.add.reduceat(weights[:, order] * positive, starts, axis=1)
        neg = np.add.reduceat(weights[:, order] * (1 - positive), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives with a lower score
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (pos * (below + neg / 2)).sum(1) / (n_pos * n_neg)
        per_class.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
    return np.mean(per_class, axis=0)
