"""Figures from a run's files: learning curves, confusion matrix, ROC curves.

Plain functions of tables (pandas) and arrays, so the run callbacks and the sweep
report draw the same pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve


def plot_learning_curves(history: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, training against validation (the papers' figures)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, label in ((axes[0], "acc", "accuracy"), (axes[1], "loss", "loss")):
        for stage, style in (("train", "-o"), ("val", "-s")):
            column = f"{stage}/{metric}"
            if column in history:
                axis.plot(history["epoch"], history[column], style, markersize=3, label=stage)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_title(f"{label} per epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.asarray(matrix)
    size = 1.2 + 1.1 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=30, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour)
    axis.set_title(title or "confusion matrix")
    return save_figure(figure, path)


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


def save_figure(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
