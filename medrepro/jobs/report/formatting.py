"""How the sweep report writes numbers: rates in %, differences in points, AUROC and
losses as fractions, p-values, whole numbers without ``.0``."""

from __future__ import annotations

import math

import pandas as pd

RATES = ("acc", "precision", "recall", "f1", "specificity", "sensitivity", "ppv", "npv")


def finite(value) -> float | None:
    """``value`` as a float, ``None`` where missing, not a number or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_rate(metric: str) -> bool:
    """Whether ``metric`` (``test/acc``, ``val/recall_normal``, ``ppv``) is shown in %."""
    name = metric.partition("/")[2] or metric
    return name.split("_")[0] in RATES


def show(metric: str, value, signed: bool = False) -> str:
    """``value`` of ``metric`` as the report's tables write it (``–`` when missing)."""
    if missing(value):
        return "–"
    value = float(value)
    if is_rate(metric):
        text = f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    elif metric == "seconds_per_epoch":
        text = f"{value:+.1f}" if signed else f"{value:.1f}"
    else:
        text = f"{value:+.4f}" if signed else f"{value:.4f}"
    return text


def show_interval(metric: str, low, high, separator: str = " to ") -> str:
    """``low to high`` in ``metric``'s unit; empty when either end is missing."""
    if missing(low) or missing(high):
        return ""
    return f"{show(metric, low)}{separator}{show(metric, high)}"


def show_p(p_value) -> str:
    """``p = 0.123`` or ``p < 0.001``; ``p –`` when missing."""
    if missing(p_value):
        return "p –"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def missing(value) -> bool:
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def one_line(text: str) -> str:
    return " ".join(text.split())


def whole_numbers(column: pd.Series) -> pd.Series:
    """``column`` as nullable integers (``0``, not ``0.0``; blank stays blank) when every
    value in it is a whole number; otherwise unchanged."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() != column.notna().sum() or (numbers.dropna() % 1 != 0).any():
        return column
    return numbers.astype("Int64")
