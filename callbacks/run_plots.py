"""PNG figures of a run, drawn from the run folder's own files: learning curves from
``metrics.csv``, the test confusion matrix, ROC curve and reliability diagram from
``predictions.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from medrepro.core.figures import (
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability_diagram,
    plot_roc_curves,
)
from medrepro.core.run_folder import (
    METRICS_CSV,
    PLOTS_FOLDER,
    PREDICTIONS_CSV,
    RELIABILITY_DIAGRAM_PNG,
)
from medrepro.statistics.calibration import logits_from_probabilities, scaled_probabilities


class RunPlots(pl.Callback):
    """``learning_curves.png`` once fitting has ended (``on_fit_end``, after every
    callback's ``on_train_end`` has written ``metrics.csv``); ``confusion_matrix.png`` and
    ``roc_curve.png`` and ``reliability_diagram.png`` once testing has ended
    (``on_test_end``, after every callback's ``on_test_epoch_end`` has written
    ``predictions.csv``). A missing file means no figure. The reliability diagram shows the
    test probabilities, and with a fitted temperature (the module's ``calibration``) also
    the model's own ones before it (the temperature undone).
    """

    def __init__(self, output_dir: str) -> None:
        self.run_dir = Path(output_dir)
        self.folder = self.run_dir / PLOTS_FOLDER

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        history = _read_csv(self.run_dir / METRICS_CSV)
        if history is not None and len(history):
            plot_learning_curves(history, self.folder / "learning_curves.png")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        predictions = _read_csv(self.run_dir / PREDICTIONS_CSV)
        if predictions is None or not len(predictions):
            return
        names = list(pl_module.class_names)
        matrix = confusion_matrix(predictions, len(names))
        plot_confusion_matrix(matrix, names, self.folder / "confusion_matrix.png", "test confusion matrix")
        plot_roc_curves(predictions, names, self.folder / "roc_curve.png", "test ROC curve")
        calibration = getattr(pl_module, "calibration", None) or {}
        plot_reliability_diagram(
            predictions["label_index"].to_numpy(),
            reliability_curves(predictions, names, calibration.get("temperature")), names,
            self.folder / RELIABILITY_DIAGRAM_PNG, calibration.get("bins") or 15,
            "test reliability diagram")


def reliability_curves(predictions: pd.DataFrame, class_names: list[str],
                       temperature: float | None) -> dict[str, np.ndarray]:
    """The test probabilities (``[N, C]``) of a predictions.csv table; with a
    ``temperature``, labelled after it, and the model's own probabilities before it."""
    probabilities = predictions[[f"prob_{name}" for name in class_names]].to_numpy(float)
    if not temperature:
        return {"test": probabilities}
    before = scaled_probabilities(logits_from_probabilities(probabilities) * temperature)
    return {"before calibration": before,
            f"after temperature scaling, T = {temperature:.3g}": probabilities}


def confusion_matrix(predictions: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Counts from a predictions.csv table: rows = true class (``label_index``), columns =
    predicted class (``predicted_index``)."""
    cells = predictions["label_index"].to_numpy() * num_classes + predictions["predicted_index"].to_numpy()
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None
