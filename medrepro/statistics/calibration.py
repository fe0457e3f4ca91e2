"""Calibration: how far predicted probabilities are from observed frequencies, and
temperature scaling to bring them closer.

* ECE and MCE, expected and maximum calibration error (Naeini, Cooper & Hauskrecht 2015;
  Guo et al. 2017), by torchmetrics over equal-width bins of [0, 1]: ECE is the mean
  |observed frequency - mean confidence| of the bins weighted by their share of the
  images, MCE its largest value over the non-empty bins. What is binned follows
  torchmetrics: for two classes the probability of the positive class against the
  fraction of positive images (the reliability of the probability a threshold is applied
  to); for more classes the top-label confidence (the highest probability) against the
  fraction predicted correctly (``multiclass_calibration_error``'s definition; its binning
  is applied to these in double precision, as the binary function does).
* The Brier score (Brier 1950), as scikit-learn's ``brier_score_loss``: for two classes
  the mean of (p - y)² with p the positive-class probability (0 to 1); for more classes
  the mean over images of the sum over classes of (p_c - y_c)² (Brier's original, 0 to 2).
* Temperature scaling (Guo, Pleiss, Sun & Weinberger 2017, "On calibration of modern
  neural networks", ICML): one number T > 0 divides the logits, T minimising the negative
  log-likelihood of the validation set; the test set is scored with that T. It changes
  neither the ranking (AUROC) nor the most probable class, nor a two-class prediction at
  probability 0.5, only how confident the probabilities are.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy import optimize, special
from torchmetrics.functional.classification import binary_calibration_error

CALIBRATION_METHOD = (
    "ECE and MCE over {bins} equal-width probability bins (torchmetrics; two classes: the "
    "positive-class probability against the fraction positive; more classes: the top-label "
    "confidence against accuracy). Brier score: mean (p - y)² of the positive class for two "
    "classes (0 to 1), the mean over images of the sum over classes for more (0 to 2)."
)
TEMPERATURE_METHOD = (
    "Temperature scaling (Guo et al. 2017): the logits are divided by one temperature T, "
    "fitted by minimising the negative log-likelihood on the validation set (T searched in "
    "[{low:g}, {high:g}]) and applied unchanged to the test set; it leaves the AUROC and "
    "the predicted classes as they are."
)
TEMPERATURE_BOUNDS = (0.05, 20.0)
# a probability of exactly 1 is binned into the top bin (torchmetrics gives it a bin of its own)
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # in float32 too


def calibration_inputs(truth, probabilities) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, probabilities, binned)`` checked: ``probabilities`` is ``[N]`` (positive
    class) or ``[N, C]``; ``binned`` is what calibration bins, per image: the positive-class
    probability for two classes, the top-label confidence for more."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 1 or (probabilities.ndim == 2 and probabilities.shape[1] == 1):
        probabilities = probabilities.ravel()
        probabilities = np.stack([1 - probabilities, probabilities], axis=1)
    if probabilities.ndim != 2 or len(probabilities) != len(truth):
        raise ValueError(f"{len(truth)} labels but probabilities of shape {probabilities.shape}")
    if not np.isfinite(probabilities).all() or probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("probabilities must lie between 0 and 1")
    if truth.size and (truth.min() < 0 or truth.max() >= probabilities.shape[1]):
        raise ValueError(f"labels must be class indices 0 to {probabilities.shape[1] - 1}")
    binned = probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(axis=1)
    return truth, probabilities, binned


def calibration_errors(truth, probabilities, bins: int = 10) -> dict[str, float]:
    """``{"ece", "mce", "brier"}`` of ``probabilities`` (``[N]`` positive-class or
    ``[N, C]``) against ``truth`` (class indices), ECE and MCE over ``bins`` equal-width
    bins (see the module's docstring)."""
    truth, probabilities, binned = calibration_inputs(truth, probabilities)
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        hits = truth
        brier = float(np.mean((probabilities[:, 1] - truth) ** 2))
    else:
        # multiclass_calibration_error's own binning, but without its cast to float32 (which
        # moves a confidence next to a bin edge, or just below 1, into the next bin)
        hits = (probabilities.argmax(axis=1) == truth).astype(np.int64)
        brier = float(np.mean(((probabilities - np.eye(n_classes)[truth]) ** 2).sum(axis=1)))
    confidences = torch.as_tensor(np.minimum(binned, _BELOW_ONE))
    errors = {norm: binary_calibration_error(confidences, torch.as_tensor(hits), n_bins=bins,
                                             norm=norm)
              for norm in ("l1", "max")}
    return {"ece": float(errors["l1"]), "mce": float(errors["max"]), "brier": brier}


def reliability_table(truth, probabilities, bins: int = 10) -> pd.DataFrame:
    """The reliability diagram's numbers: one row per equal-width bin ``[low, high)`` (the
    last bin includes 1) with ``count``, ``mean_confidence`` (the mean binned probability,
    see :func:`calibration_inputs`) and ``observed_frequency`` (the fraction positive for
    two classes, the fraction correct for more); NaN in an empty bin. The ECE is the
    count-weighted mean of |observed_frequency - mean_confidence|."""
    truth, probabilities, binned = calibration_inputs(truth, probabilities)
    if probabilities.shape[1] == 2:
        hits = truth == 1
    else:
        hits = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, np.minimum(binned, _BELOW_ONE), side="right") - 1
    count = np.bincount(index, minlength=bins).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=binned, minlength=bins) / count
        frequency = np.bincount(index, weights=hits.astype(float), minlength=bins) / count
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count,
                         "mean_confidence": confidence, "observed_frequency": frequency})


def scaled_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of ``logits / temperature``: ``[N]`` (or ``[N, 1]``) logits of a
    one-output model -> ``[N]`` positive-class probabilities by the sigmoid; ``[N, C]`` ->
    ``[N, C]`` by the softmax."""
    logits = _logits(logits)
    if logits.ndim == 1:
        return special.expit(logits / temperature)
    return special.softmax(logits / temperature, axis=1)


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """The mean negative log-likelihood (cross-entropy, natural log) of ``labels`` under
    ``logits / temperature`` (sigmoid for one logit per image, softmax for several)."""
    logits = _logits(logits) / temperature
    labels = np.asarray(labels).ravel().astype(np.int64)
    if len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} logits")
    if logits.ndim == 1:  # -log sigmoid(z) for class 1, -log(1 - sigmoid(z)) for class 0
        return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))
    return float(np.mean(special.logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T that minimises :func:`negative_log_likelihood` of the validation
    ``logits`` and ``labels`` (Guo et al. 2017), by a bounded scalar search
    (``scipy.optimize.minimize_scalar``) over log T in ``[log low, log high]``. T > 1 makes
    the probabilities less confident, T < 1 more."""
    logits = _logits(logits)
    labels = np.asarray(labels).ravel().astype(np.int64)
    low, high = bounds
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def logits_from_probabilities(probabilities, floor: float = 1e-7) -> np.ndarray:
    """Logits that give back ``probabilities`` (for a predictions.csv, which keeps
    probabilities only): ``[N]`` or ``[N, 2]`` -> ``[N]`` log-odds of the positive class;
    ``[N, C]`` -> log-probabilities (softmax undoes them up to a constant per image, which
    temperature scaling keeps). Probabilities are clipped to ``[floor, 1 - floor]``."""
    probabilities = np.clip(np.asarray(probabilities, dtype=float), floor, 1 - floor)
    if probabilities.ndim == 2 and probabilities.shape[1] == 2:
        return np.log(probabilities[:, 1]) - np.log(probabilities[:, 0])
    if probabilities.ndim == 1:
        return special.logit(probabilities)
    return np.log(probabilities)


def _logits(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=float)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits.ravel()
    if logits.ndim not in (1, 2) or not np.isfinite(logits).all():
        raise ValueError("logits must be a finite [N] or [N, C] array")
    return logits
