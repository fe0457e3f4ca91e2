"""PNG figures of a run: learning curves, test confusion matrix, test ROC curve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytorch_lightning as pl

from medrepro.callbacks.epoch_history import EpochHistory
from medrepro.callbacks.test_predictions import TestPredictions
from medrepro.core.figures import plot_confusion_matrix, plot_learning_curves, plot_roc_curves


class RunPlots(pl.Callback):
    """``learning_curves.png`` after fitting; ``confusion_matrix.png`` and
    ``roc_curve.png`` after testing."""

    def __init__(self, output_dir: str, subfolder: str = "plots") -> None:
        self.folder = Path(output_dir) / subfolder

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = next((c for c in trainer.callbacks if isinstance(c, EpochHistory)), None)
        if history is not None and history.rows:
            plot_learning_curves(pd.DataFrame(history.rows), self.folder / "learning_curves.png")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names = pl_module.class_names
        matrix = pl_module.confusion_matrices.get("test")
        if matrix is not None:
            plot_confusion_matrix(matrix, names, self.folder / "confusion_matrix.png", "test confusion matrix")
        writer = next((c for c in trainer.callbacks if isinstance(c, TestPredictions)), None)
        if writer is not None and writer.frame is not None:
            plot_roc_curves(writer.frame, names, self.folder / "roc_curve.png", "test ROC curve")
