"""Per-epoch history of a fit: ``metrics.csv`` with one row per epoch."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl

from medrepro.core.run_folder import METRICS_CSV

FIRST_COLUMNS = ["epoch", "epoch_seconds", "train/loss", "train/acc", "val/loss", "val/acc"]


class EpochHistory(pl.Callback):
    """Record every ``train/*`` and ``val/*`` epoch metric and the wall-clock seconds of
    each epoch (training plus validation, as Keras reports it) into ``metrics.csv``
    (epochs counted from 1).

    The LightningModule computes its epoch metrics in its own ``on_train_epoch_end``,
    which Lightning calls after the callbacks' one, so a row is completed when the next
    epoch starts or training ends. The file is complete by ``on_fit_end``, where the
    callbacks that read it (results.json, the plots) read it.
    """

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / METRICS_CSV
        self._rows: list[dict] = []
        self._epoch_start: float | None = None
        self._pending: dict | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - (self._epoch_start or time.perf_counter())
        self._pending = {"epoch": trainer.current_epoch + 1, "epoch_seconds": round(seconds, 3)}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or trainer.sanity_checking:
            return
        row = dict(self._pending)
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train/", "val/")):
                row[key] = float(value)
        self._pending = None
        self._rows.append(row)
        frame = pd.DataFrame(self._rows)
        ordered = [c for c in FIRST_COLUMNS if c in frame] + sorted(set(frame) - set(FIRST_COLUMNS))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame[ordered].to_csv(self.path, index=False)
