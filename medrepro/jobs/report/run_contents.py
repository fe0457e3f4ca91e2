"""What the run report reads from a run folder (a training run, or eval.py's folder), read
once: results.json, split.csv, predictions.csv, val_predictions.csv, metrics.csv, and
the test predictions as arrays with each image's patient."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.core.run_folder import (
    METRICS_CSV,
    PREDICTIONS_CSV,
    SPLIT_CSV,
    VAL_PREDICTIONS_CSV,
    read_results,
)
from medrepro.jobs.report.run_metrics import patient_ids, read_table
from medrepro.jobs.report.statistics import prediction_arrays


@dataclass
class Predictions:
    """One split's predictions as arrays: class indices, predicted indices, ``[N, C]``
    probabilities and each image's patient id (``None`` where unknown)."""

    table: pd.DataFrame
    truth: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    patients: list | None


@dataclass
class RunContents:
    folder: Path
    results: dict
    split: pd.DataFrame | None
    history: pd.DataFrame | None
    test: Predictions | None
    val: Predictions | None

    @property
    def evaluation(self) -> dict | None:
        """eval.py's record (``None`` for a training run)."""
        return self.results.get("evaluation")

    @property
    def config(self) -> dict:
        """The training configuration (an eval folder: the evaluated model's)."""
        evaluation = self.evaluation or {}
        return evaluation.get("training_config") or self.results.get("config") or {}

    @property
    def data(self) -> dict:
        return self.results.get("data") or {}

    @property
    def classes(self) -> list[str]:
        return list(self.data.get("classes") or (self.evaluation or {}).get("classes") or [])

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def tested_epoch(self) -> int | None:
        evaluation = self.evaluation
        epoch = (evaluation or {}).get("epoch") if evaluation else \
            (self.results.get("tested_checkpoint") or {}).get("epoch")
        return None if epoch is None else int(epoch)


def read_run_contents(run_dir: str | Path) -> RunContents | None:
    """The folder's contents; ``None`` without a readable results.json."""
    folder = Path(run_dir)
    results = read_results(folder)
    if results is None:
        return None
    split = read_table(folder / SPLIT_CSV)
    contents = RunContents(folder, results, split, read_table(folder / METRICS_CSV), None, None)
    classes = contents.classes
    contents.test = _predictions(read_table(folder / PREDICTIONS_CSV), classes, split)
    contents.val = _predictions(read_table(folder / VAL_PREDICTIONS_CSV), classes, split)
    return contents


def _predictions(table: pd.DataFrame | None, classes: list[str], split) -> Predictions | None:
    if table is None or not len(table) or not classes:
        return None
    truth, predicted, probabilities = prediction_arrays(table, classes)
    return Predictions(table, truth.astype(int), predicted.astype(int), probabilities,
                       patient_ids(table, split))
