"""Stop a run soon after its training loss stops being a finite number."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from medrepro.core.errors import TrainingDiverged


class DivergenceGuard(pl.Callback):
    """Raise :class:`~medrepro.core.errors.TrainingDiverged` once a training batch's loss was
    NaN or infinite, instead of training on for the remaining epochs.

    Every batch's loss is checked on its own device (no host synchronisation); the flag is
    read back every ``check_every_n_batches`` batches and at the end of each epoch, so on
    a GPU the training step is not stalled each batch. The job then records
    ``status: diverged`` in its results.json; in a multirun the sweep goes on.
    """

    def __init__(self, check_every_n_batches: int = 20) -> None:
        self.check_every_n_batches = max(1, int(check_every_n_batches))
        self._not_finite: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._not_finite = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._not_finite = bad if self._not_finite is None else self._not_finite | bad
        last = batch_idx + 1 >= trainer.num_training_batches
        if (batch_idx + 1) % self.check_every_n_batches and not last:
            return
        if bool(self._not_finite):
            raise TrainingDiverged(
                f"Training diverged: the training loss became NaN or infinite by epoch "
                f"{trainer.current_epoch + 1}, batch {batch_idx + 1}; lower optimizer.lr."
            )
