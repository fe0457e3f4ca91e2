"""Stop a run soon after its training (or validation) loss stops being a finite number."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from medrepro.core.errors import TrainingDiverged


class DivergenceGuard(pl.Callback):
    """Raise :class:`~medrepro.core.errors.TrainingDiverged` once a training batch's loss was
    NaN or infinite, or an epoch's validation loss (``validation_loss``, logged by the
    module) was, instead of training on for the remaining epochs. It is the training job's
    only divergence check; the validation loss catches weights that an epoch's last update
    made NaN although every training loss was finite.

    Every batch's loss is checked on its own device (no host synchronisation); the flag is
    read back every ``check_every_n_batches`` batches and at the epoch's last batch (before
    that epoch's validation and checkpoint), so on a GPU the training step is not stalled
    each batch. ``on_train_epoch_end`` reads any flag still unread, for an epoch that
    ended before its last batch (``max_steps``, a data loader of unknown length). The job
    then records ``status: diverged`` in its results.json; in a multirun the sweep goes on.
    """

    def __init__(self, check_every_n_batches: int = 20, validation_loss: str = "val/loss") -> None:
        self.check_every_n_batches = max(1, int(check_every_n_batches))
        self.validation_loss = validation_loss
        self._not_finite: torch.Tensor | None = None  # the unread flag of the batches since the last read
        self._last_batch = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._not_finite = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._not_finite = bad if self._not_finite is None else self._not_finite | bad
        self._last_batch = batch_idx + 1
        last = batch_idx + 1 >= trainer.num_training_batches
        if (batch_idx + 1) % self.check_every_n_batches == 0 or last:
            self._raise_if_not_finite(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._raise_if_not_finite(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        loss = trainer.callback_metrics.get(self.validation_loss)
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise TrainingDiverged(
                f"Training diverged: the validation loss became NaN or infinite in epoch "
                f"{trainer.current_epoch + 1}; lower optimizer.lr."
            )

    def _raise_if_not_finite(self, trainer) -> None:
        flag, self._not_finite = self._not_finite, None
        if flag is not None and bool(flag):
            raise TrainingDiverged(
                f"Training diverged: the training loss became NaN or infinite by epoch "
                f"{trainer.current_epoch + 1}, batch {self._last_batch}; lower optimizer.lr."
            )
