"""Lightning's progress bar with epochs counted from 1, as metrics.csv, checkpoint names,
log messages and plots count them."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf


class EpochProgressBar(TQDMProgressBar):
    """``Epoch 3/10`` for the third of ten epochs (Lightning's bar says ``Epoch 2``)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        # Lightning's own hook, with the description set before the bar is first drawn
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        description = f"Epoch {trainer.current_epoch + 1}{of}"
        self.train_progress_bar.set_description(description, refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0
