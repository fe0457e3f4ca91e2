"""Figures from a run's files: learning curves, confusion matrix, ROC curves, reliability
diagram.

Plain functions of tables (pandas) and arrays, so the run callbacks and the sweep
report draw the same pictures. ``draw_*`` returns the matplotlib figure, ``plot_*``
saves it as a PNG and returns the file's path.

Readability rules, shared by every figure that draws them:

- Epochs on an x axis are whole numbers (counted from 1, as metrics.csv counts them).
- A loss axis is logarithmic when one point would flatten the others: when the largest
  plotted loss is more than ``OUTLIER_RATIO`` (20) times the median of the other plotted
  losses. The y label says "log scale" and the x label names the point and the ratio. When
  some plotted loss is zero or negative (no log axis possible) the axis is clipped instead,
  and the x label says where and which point is off the scale.
- Each count of a confusion matrix is written in black or white, whichever contrasts more
  with the cell's own colour (WCAG 2 contrast ratio; the better of the two is always at
  least 4.58 : 1, above the 4.5 : 1 that WCAG asks of normal text).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from medrepro.statistics.calibration import calibration_errors, reliability_table

OUTLIER_RATIO = 20.0  # largest loss / median of the other losses above which the axis turns log
NOTE_WIDTH = 64  # characters a line of the note under a loss axis
MAX_CLASSES_WITH_PERCENT = 6  # confusion matrices up to this size also show the row percentage


# --------------------------------------------------------------------------- learning curves


def draw_learning_curves(history: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy and loss per epoch, training against validation (the papers' figures)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    losses = {}
    for axis, metric, label in ((axes[0], "acc", "accuracy"), (axes[1], "loss", "loss")):
        for stage, style in (("train", "-o"), ("val", "-s")):
            column = f"{stage}/{metric}"
            if column in history:
                axis.plot(history["epoch"], history[column], style, markersize=3, label=stage)
                if metric == "loss":
                    losses[f"{stage} loss"] = pd.Series(history[column].to_numpy(), index=history["epoch"])
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_title(f"{label} per epoch")
        axis.grid(alpha=0.3)
        axis.legend()
        integer_epochs(axis)
    scale_loss_axis(axes[1], losses)
    if title:
        figure.suptitle(title)
    return figure


def plot_learning_curves(history: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    return save_figure(draw_learning_curves(history, title), path)


def integer_epochs(axis) -> None:
    """Ticks of the x axis (epochs) at whole numbers only (also for a single epoch)."""
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


@dataclass(frozen=True)
class LossOutlier:
    """The largest plotted loss and how far it stands above the median of the others."""

    curve: str
    epoch: int
    value: float
    median_of_others: float

    @property
    def ratio(self) -> float:
        return self.value / self.median_of_others


def loss_outlier(curves: Mapping[str, pd.Series]) -> LossOutlier | None:
    """The largest point of ``curves`` (name -> loss by epoch) if it is more than
    OUTLIER_RATIO times the median of every other finite point; else None."""
    points = [(float(value), name, epoch) for name, curve in curves.items()
              for epoch, value in curve.items() if np.isfinite(value)]
    if len(points) < 2:
        return None
    points.sort()
    value, name, epoch = points[-1]
    median = float(np.median([p[0] for p in points[:-1]]))
    if median <= 0 or value <= OUTLIER_RATIO * median:
        return None
    return LossOutlier(name, int(epoch), value, median)


def scale_loss_axis(axis, curves: Mapping[str, pd.Series]) -> LossOutlier | None:
    """Make a loss axis readable when one point would flatten the others (see the module's
    rules): logarithmic if every plotted loss is positive, else clipped; the labels say so."""
    outlier = loss_outlier(curves)
    if outlier is None:
        return None
    finite = np.concatenate([c.to_numpy(float) for c in curves.values()])
    finite = finite[np.isfinite(finite)]
    point = (f"the {outlier.curve} at epoch {outlier.epoch} ({_loss_text(outlier.value)}) is "
             f"{outlier.ratio:,.0f}× the median of the others "
             f"({_loss_text(outlier.median_of_others)})")
    if finite.min() > 0:
        axis.set_yscale("log")
        axis.set_ylim(finite.min() / 1.5, finite.max() * 1.5)
        axis.set_ylabel(f"{axis.get_ylabel()} (log scale)")
        note = f"log scale: {point}"
    else:
        kept = finite[finite <= OUTLIER_RATIO * outlier.median_of_others]
        top = float(kept.max()) * 1.1 if len(kept) else OUTLIER_RATIO * outlier.median_of_others
        axis.set_ylim(min(float(finite.min()), 0.0), top)
        axis.set_ylabel(f"{axis.get_ylabel()} (clipped at {top:.3g})")
        note = f"axis clipped at {top:.3g}: {point}"
    axis.set_xlabel(f"{axis.get_xlabel()}\n{textwrap.fill(note, NOTE_WIDTH)}", fontsize=8)
    return outlier


def _loss_text(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


# --------------------------------------------------------------------------- confusion matrix


def draw_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> Figure:
    """Counts, rows = true class, columns = predicted class; up to MAX_CLASSES_WITH_PERCENT
    classes each count also as a percentage of its row (of the true class)."""
    matrix = np.asarray(matrix)
    if matrix.size and np.all(matrix == np.round(matrix)):
        matrix = matrix.astype(int)
    size = 1.2 + 1.1 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    top = max(float(matrix.max()), 1.0) if matrix.size else 1.0
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=top)
    colorbar = figure.colorbar(image, ax=axis, fraction=0.046)
    colorbar.locator = MaxNLocator(integer=True)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=30, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    row_totals = matrix.sum(axis=1) if matrix.ndim == 2 else []
    with_percent = len(class_names) <= MAX_CLASSES_WITH_PERCENT
    for (row, column), count in np.ndenumerate(matrix):
        text = f"{count}"
        if with_percent and row_totals[row]:
            text += f"\n{100 * count / row_totals[row]:.1f}%"
        colour = readable_text_colour(image.cmap(image.norm(count)))
        axis.text(column, row, text, ha="center", va="center", color=colour)
    axis.set_title(title or "confusion matrix")
    return figure


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    return save_figure(draw_confusion_matrix(matrix, class_names, title), path)


def readable_text_colour(background) -> str:
    """"black" or "white", whichever has the higher WCAG contrast ratio with ``background``
    (an RGB(A) tuple of floats in [0, 1])."""
    on_black = contrast_ratio(relative_luminance(background), 0.0)
    on_white = contrast_ratio(relative_luminance(background), 1.0)
    return "black" if on_black >= on_white else "white"


def relative_luminance(colour) -> float:
    """WCAG 2 relative luminance of an sRGB colour (floats in [0, 1])."""
    channels = np.asarray(colour, float)[:3]
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def contrast_ratio(first: float, second: float) -> float:
    """WCAG 2 contrast ratio of two relative luminances (1 to 21)."""
    light, dark = max(first, second), min(first, second)
    return (light + 0.05) / (dark + 0.05)


# --------------------------------------------------------------------------- ROC curves


def plot_roc_curves(predictions: pd.DataFrame, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """ROC curve of the positive class (binary) or one-vs-rest per class, with AUC."""
    figure, axis = plt.subplots(figsize=(5, 5))
    curves = class_names[1:] if len(class_names) == 2 else class_names
    for name in curves:
        truth = (predictions["label"] == name).astype(int)
        if truth.nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(truth, predictions[f"prob_{name}"])
        axis.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set_xlabel("false positive rate (1 - specificity)")
    axis.set_ylabel("true positive rate (sensitivity)")
    axis.set_title(title or "ROC curve")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


# --------------------------------------------------------------------------- reliability diagram


def draw_reliability_diagram(truth, curves: Mapping[str, np.ndarray], class_names: Sequence[str],
                             bins: int = 15, title: str = "") -> Figure:
    """Observed frequency against mean predicted probability in ``bins`` equal-width bins
    (:func:`~medrepro.statistics.calibration.reliability_table`), one line per entry of
    ``curves`` (label -> probabilities ``[N]`` of the positive class or ``[N, C]``, e.g.
    before and after temperature scaling), each labelled with its ECE; the diagonal is
    perfect calibration. Under it, the images per bin (whole numbers). Two classes: the
    positive class's probability against the fraction positive; more: the top-label
    confidence against the fraction correct."""
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    width = 1.0 / bins / max(len(curves), 1)
    for index, (label, probabilities) in enumerate(curves.items()):
        table = reliability_table(truth, probabilities, bins)
        ece = calibration_errors(truth, probabilities, bins)["ece"]
        filled = table[table["count"] > 0]
        line, = axis.plot(filled["mean_confidence"], filled["observed_frequency"], "-o",
                          markersize=4, label=f"{label} (ECE {ece:.3f})")
        counts.bar(table["low"] + (index + 0.5) * width, table["count"], width=width,
                   color=line.get_color(), label=label)
    binary = len(class_names) == 2
    axis.set_ylabel(f"observed fraction {class_names[1]}" if binary else "fraction correct")
    counts.set_xlabel(f"predicted probability of {class_names[1]}" if binary
                      else "confidence (highest class probability)")
    counts.set_ylabel("images")
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(0, 1)
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title or f"reliability diagram ({bins} bins)")
    axis.legend(loc="lower right", fontsize="small")  # overconfident and wrong: rarely drawn
    axis.grid(alpha=0.3)
    counts.grid(alpha=0.3)
    return figure


def plot_reliability_diagram(truth, curves: Mapping[str, np.ndarray], class_names: Sequence[str],
                             path: str | Path, bins: int = 15, title: str = "") -> Path:
    return save_figure(draw_reliability_diagram(truth, curves, class_names, bins, title), path)


def save_figure(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
