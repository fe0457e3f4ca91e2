"""The operating point of a two-class model: ``model.threshold`` is a probability, or a
rule that chooses the threshold on the validation set; the chosen number is then applied
unchanged to the test set (choosing it on the test set would flatter the test results).

An image is predicted positive when its probability of the positive class is at least the
threshold (``probability >= threshold``), as in the LightningModule's metrics.

Rules (each over the thresholds at which the validation ROC curve changes, i.e. the
distinct validation probabilities):

* ``youden``: the threshold that maximises Youden's J = sensitivity + specificity - 1
  (Youden 1950, "Index for rating diagnostic tests", Cancer 3:32-35); on a tie the
  highest such threshold;
* ``sensitivity@X``: the highest threshold whose validation sensitivity is at least X,
  which among those reaching X gives the highest specificity;
* ``specificity@X``: the lowest threshold whose validation specificity is at least X,
  which among those reaching X gives the highest sensitivity (if only calling every image
  negative reaches X, the threshold lies just above the highest validation probability).

A rule needs validation images of both classes: with one class, sensitivity or specificity
is undefined and :func:`choose_threshold` stops with a :class:`ConfigError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from medrepro.core.errors import ConfigError

_TARGET_RULE = re.compile(r"^(sensitivity|specificity)@(.+)$")
# a rate reached exactly (19/20 against 0.95) must count despite rounding
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ThresholdRule:
    """``model.threshold`` read: a fixed probability, or a rule with its target."""

    kind: str  # "fixed", "youden", "sensitivity" or "specificity"
    value: float | None = None  # the fixed probability, or the rule's target rate

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.value:g}"
        return self.kind if self.value is None else f"{self.kind}@{self.value:g}"

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"


def _accepted(value) -> ConfigError:
    return ConfigError(
        "model.threshold must be a probability between 0 and 1 (both excluded), such as 0.5, "
        "or a rule that chooses it on the validation set: youden, sensitivity@0.95 or "
        f"specificity@0.95 (any target between 0 and 1), not {value!r}."
    )


def parse_threshold_rule(value) -> ThresholdRule:
    """Read ``model.threshold``: a number in (0, 1), or ``youden``, ``sensitivity@X`` or
    ``specificity@X`` with X in (0, 1) (case and spaces around the text ignored). Anything
    else stops with a :class:`ConfigError` naming the accepted forms."""
    if isinstance(value, (int, float, np.integer, np.floating)):  # True and False: 1 and 0
        number = float(value)
        if not 0 < number < 1:
            raise _accepted(value)
        return ThresholdRule("fixed", number)
    if not isinstance(value, str):
        raise _accepted(value)
    text = value.strip().lower()
    if text == "youden":
        return ThresholdRule("youden")
    match = _TARGET_RULE.match(text)
    number = _number(match.group(2) if match else text)
    if number is None or not 0 < number < 1:
        raise _accepted(value)
    return ThresholdRule(match.group(1), number) if match else ThresholdRule("fixed", number)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def positive_probabilities(probabilities) -> np.ndarray:
    """The positive-class probability: ``[N]`` as is, or column 1 of ``[N, 2]``."""
    array = np.asarray(probabilities, dtype=float)
    if array.ndim == 2 and array.shape[1] == 2:
        array = array[:, 1]
    if array.ndim != 1:
        raise ConfigError(
            "model.threshold chooses a threshold for two-class tasks only; this task has "
            f"{array.shape[1] if array.ndim == 2 else 'no'} classes: set model.threshold to a "
            "number (a multi-class model predicts its most probable class)."
        )
    return array


def predict(probabilities, threshold: float) -> np.ndarray:
    """1 where the positive-class probability is at least ``threshold``, else 0."""
    return (positive_probabilities(probabilities) >= threshold).astype(int)


def choose_threshold(rule: ThresholdRule | str | float, truth, probabilities
                     ) -> tuple[float, str]:
    """``(threshold, description)``: the threshold that ``rule`` picks on the validation
    set (``truth`` 1/0, ``probabilities`` of the positive class, ``[N]`` or ``[N, 2]``) and a
    sentence saying how, with the validation sensitivity and specificity at it. A fixed
    threshold is returned as it is. See the module's docstring for the rules."""
    rule = rule if isinstance(rule, ThresholdRule) else parse_threshold_rule(rule)
    if rule.fixed:
        return rule.value, f"{rule.value:g} (fixed by model.threshold)"
    scores = positive_probabilities(probabilities)
    truth = np.asarray(truth).ravel().astype(int)
    if truth.shape != scores.shape or not np.isin(truth, (0, 1)).all():
        raise ValueError("truth must hold one 0/1 label per probability")
    if not np.isfinite(scores).all():
        raise ValueError("the validation probabilities hold NaN or infinite values")
    positives, negatives = int(truth.sum()), int((1 - truth).sum())
    if not positives or not negatives:
        present = "positive" if positives else "negative"
        raise ConfigError(
            f"model.threshold={rule} chooses the threshold on the validation set, but the "
            f"validation set has {present} images only: give it images of both classes, or "
            "set model.threshold to a number such as 0.5."
        )
    # candidate thresholds, highest first: just above the highest score (nothing positive),
    # then each distinct score (everything at or above it positive)
    distinct = np.unique(scores)[::-1]
    candidates = np.concatenate([[np.nextafter(distinct[0], math.inf)], distinct])
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_truth = scores[order], truth[order]
    # images with a score >= each candidate: the end of its run of ties in the ranking
    above = np.searchsorted(-ranked_scores, -candidates, side="right")
    true_positives = np.concatenate([[0], np.cumsum(ranked_truth)])[above]
    false_positives = above - true_positives
    sensitivity = true_positives / positives
    specificity = 1 - false_positives / negatives
    if rule.kind == "youden":
        index = 1 + int(np.argmax((sensitivity + specificity - 1)[1:]))
    elif rule.kind == "sensitivity":
        index = int(np.flatnonzero(sensitivity >= rule.value - _TOLERANCE)[0])
    else:
        index = int(np.flatnonzero(specificity >= rule.value - _TOLERANCE)[-1])
    threshold = float(candidates[index])
    note = " (only calling every image negative reaches it)" if index == 0 else ""
    return threshold, (
        f"{threshold:.4g}, chosen on the validation set by {rule}{note}: sensitivity "
        f"{sensitivity[index]:.3f} and specificity {specificity[index]:.3f} there "
        f"({positives} positive, {negatives} negative images)"
    )
