"""Proportions of a 2x2 table and their Wilson score intervals.

The Wilson (1927) score interval is method 3 of Newcombe (1998), "Two-sided confidence
intervals for the single proportion: comparison of seven methods", Statistics in Medicine
17:857-872. Unlike the Wald interval p ± z·sqrt(p(1-p)/n) it stays inside [0, 1], is not
empty at 0 or n successes, and keeps close to its nominal coverage for small n, which is
why it is the usual choice for sensitivity, specificity and predictive values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

WILSON_METHOD = ("Sensitivity, specificity, PPV, NPV and accuracy: {level:.0%} Wilson score "
                 "intervals (Wilson 1927; Newcombe 1998, method 3) from the counts of the "
                 "2x2 table.")


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``trials`` at confidence ``level``.

    With p = successes / trials and z the standard normal quantile at (1 + level) / 2::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)

    Returns ``(low, high)``, clipped to [0, 1] against rounding; ``(nan, nan)`` for 0 trials.
    Newcombe (1998, Table I) gives 81/263 -> 0.2553 to 0.3662 and 0/20 -> 0 to 0.1611.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level!r}")
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials is not a proportion")
    if trials == 0:
        return (math.nan, math.nan)
    z = stats.norm.ppf((1 + level) / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``trials`` as a fraction (NaN for 0 trials) and its interval."""

    successes: int
    trials: int
    value: float
    low: float
    high: float


def proportion(successes: int, trials: int, level: float = 0.95) -> Proportion:
    """``successes / trials`` with its Wilson interval (all NaN for 0 trials)."""
    low, high = wilson_interval(successes, trials, level)
    value = successes / trials if trials else math.nan
    return Proportion(int(successes), int(trials), value, low, high)


def binary_rates(truth, predicted, level: float = 0.95) -> dict:
    """The 2x2 table of binary ``truth`` against ``predicted`` (1 or True: positive) and the
    rates read from it, each a :class:`Proportion` with its Wilson interval::

        tp, fp, tn, fn              counts (int)
        sensitivity = tp / (tp + fn)    specificity = tn / (tn + fp)
        ppv = tp / (tp + fp)            npv = tn / (tn + fn)
        accuracy = (tp + tn) / n

    A rate with an empty denominator (no positive images, nothing predicted positive) is
    NaN with a NaN interval. For one class of a multi-class task, pass
    ``truth == c, predicted == c`` (one against the rest).
    """
    truth = _binary(truth, "truth")
    predicted = _binary(predicted, "predicted")
    if truth.shape != predicted.shape:
        raise ValueError(f"truth has {truth.size} values but predicted has {predicted.size}")
    tp = int(np.sum(truth & predicted))
    fp = int(np.sum(~truth & predicted))
    tn = int(np.sum(~truth & ~predicted))
    fn = int(np.sum(truth & ~predicted))
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": proportion(tp, tp + fn, level),
        "specificity": proportion(tn, tn + fp, level),
        "ppv": proportion(tp, tp + fp, level),
        "npv": proportion(tn, tn + fn, level),
        "accuracy": proportion(tp + tn, tp + fp + tn + fn, level),
    }


def _binary(values, name: str) -> np.ndarray:
    array = np.asarray(values).ravel()
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 or True/False only")
        array = array.astype(bool)
    return array
