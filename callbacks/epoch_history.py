"""Per-epoch history of a fit: ``metrics.csv`` with one row per epoch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from medrepro.core.checkpoint_epochs import epochs_ended
from medrepro.core.run_folder import CHECKPOINTS_FOLDER, METRICS_CSV, write_atomic

log = logging.getLogger(__name__)

FIRST_COLUMNS = ["epoch", "epoch_seconds", "train/loss", "train/acc", "val/loss", "val/acc"]


class EpochHistory(pl.Callback):
    """Record every ``train/*`` and ``val/*`` epoch metric and the wall-clock seconds of
    each epoch (training plus validation, as Keras reports it) into ``metrics.csv``
    (epochs counted from 1).

    The LightningModule computes its epoch metrics in its own ``on_train_epoch_end``,
    which Lightning calls after the callbacks' one, so a row is completed when the next
    epoch starts or training ends. The file is complete by ``on_fit_end``, where the
    callbacks that read it (results.json, the plots) read it.

    A checkpoint is saved after the module's ``on_train_epoch_end``, so the row of the
    epoch it holds is written (atomically) before the checkpoint file. A fit resumed from a
    checkpoint (``ckpt_path``) keeps the rows of the epochs the checkpoint holds, from the
    metrics.csv of the checkpoint's run folder, drops the rows of a killed attempt after
    them, and goes on from there.

    In a multi-process (DDP) job every process keeps the rows (the epoch metrics are
    synchronised across processes) and the first process writes the file.
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

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        self._flush(trainer)  # the epoch's row is complete once a checkpoint of it is saved

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate/test load checkpoints too
            return
        epochs = epochs_ended(checkpoint) or 0
        source = _run_folder_of(Path(trainer.ckpt_path)) / METRICS_CSV if trainer.ckpt_path else None
        rows = _rows_up_to(source, epochs) if source is not None else []
        if len(rows) < epochs:
            log.warning("%s holds %d of the %d epochs of the checkpoint resumed; metrics.csv "
                        "goes on without the others.", source, len(rows), epochs)
        self._rows, self._pending = rows, None
        self._write(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or trainer.sanity_checking:
            return
        row, self._pending = dict(self._pending), None
        if any(kept["epoch"] == row["epoch"] for kept in self._rows):
            # Lightning ends an epoch again when resuming from a checkpoint that validation
            # saved before the epoch's end: the epoch's row is already there, complete
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train/", "val/")):
                row[key] = float(value)
        self._rows.append(row)
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        frame = pd.DataFrame(self._rows, columns=None if self._rows else ["epoch"])
        ordered = [c for c in FIRST_COLUMNS if c in frame] + sorted(set(frame) - set(FIRST_COLUMNS))
        write_atomic(self.path, frame[ordered].to_csv(index=False))


def _run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (the folder above ``checkpoints/``)."""
    folder = checkpoint.absolute().parent
    return folder.parent if folder.name == CHECKPOINTS_FOLDER else folder


def _rows_up_to(metrics_csv: Path, epochs: int) -> list[dict]:
    """The rows of ``metrics_csv`` for epochs 1 to ``epochs`` (none when it is unreadable)."""
    try:
        history = pd.read_csv(metrics_csv, float_precision="round_trip")  # the values as written
    except (OSError, ValueError):
        return []
    if "epoch" not in history:
        return []
    kept = history[history["epoch"] <= epochs].dropna(axis="columns", how="all")
    return [{key: value for key, value in row.items() if pd.notna(value)}
            for row in kept.to_dict("records")]
