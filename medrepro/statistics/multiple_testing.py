"""Holm's step-down correction of several p-values (Holm 1979, "A simple sequentially
rejective multiple test procedure", Scandinavian Journal of Statistics 6:65-70).

It controls the family-wise error rate (the chance of any false "the arms differ") at the
chosen level under any dependence between the tests, like Bonferroni, but rejects at least
as often.
"""

from __future__ import annotations

import math

import numpy as np


def holm_method(comparisons: int) -> str:
    """The sentence a report prints beside Holm-adjusted p-values."""
    return (f"p-values adjusted for {comparisons} comparisons by Holm's step-down method "
            "(Holm 1979), which keeps the chance of any false finding among them at the "
            "stated level.")


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values, in the order given.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i)
    is ``max over j <= i of min(1, (m - j + 1) p_(j))``: monotone in p, never below the raw
    value, capped at 1. Rejecting every hypothesis whose adjusted p-value is at most alpha
    is Holm's procedure at level alpha. NaN p-values (comparisons that could not be made)
    stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie between 0 and 1")
    adjusted = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if not m:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted
