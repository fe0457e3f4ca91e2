"""Stop a run as soon as its losses or outputs stop being usable numbers: NaN, infinite, or
(for losses) larger than any real classification loss."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from medrepro.core.errors import TrainingDiverged

ADVICE = "lower optimizer.lr"


class DivergenceGuard(pl.Callback):
    """Raise :class:`~medrepro.core.errors.TrainingDiverged` when, in any stage,

    * a training batch's loss is NaN, infinite or larger than ``max_loss``;
    * an epoch's validation loss (``validation_loss``, logged by the module) is, during the
      fit and when the tested checkpoint is validated afterwards: this catches weights that
      an epoch's last update made NaN although every training loss was finite, and NaN
      validation probabilities (a NaN probability makes its batch's loss NaN);
    * a test batch's ``probabilities`` (the test step's output) are NaN or infinite: the
      test stage then stops at its epoch's end, before ``on_test_end``, where the figures
      are drawn and results.json would say ``completed``.

    The job then records ``status: diverged`` with the sentence; in a multirun the sweep goes
    on. ``max_loss`` (default 1e6; ``None``: no limit) is far above any real loss: a
    classifier's cross-entropy starts near ln(classes), below 1.1 for up to three classes, and
    a loss of a million means logits of about a million, that is, exploded weights (a
    learning rate of 1e12 gives finite losses of 1e25 and later NaN outputs).

    Every batch is checked on its own device (no host synchronisation): the worst loss, or
    the test outputs' flag, is read back every ``check_every_n_batches`` batches and at the
    epoch's last batch (before that epoch's validation and checkpoint), so on a GPU the
    training step is not stalled each batch. ``on_train_epoch_end`` reads anything still
    unread, for an epoch that ended before its last batch (``max_steps``, a data loader of
    unknown length).

    In a multi-process (DDP) job each process sees its own batches' losses and test outputs;
    every read takes the worst over all processes, so that they all stop together (a process
    that stopped alone would leave the others waiting for it).
    """

    def __init__(self, check_every_n_batches: int = 20, validation_loss: str = "val/loss",
                 max_loss: float | None = 1e6) -> None:
        self.check_every_n_batches = max(1, int(check_every_n_batches))
        self.validation_loss = validation_loss
        self.max_loss = None if max_loss is None else float(max_loss)
        if self.max_loss is not None and not self.max_loss > 0:
            raise ValueError("callbacks.divergence_guard.max_loss must be positive or null, "
                             f"not {max_loss}.")
        self._worst: torch.Tensor | None = None  # the largest |loss| since the last read (NaN wins)
        self._last_batch = 0
        self._test_not_finite: torch.Tensor | None = None

    # ------------------------------------------------------------------ training losses

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._worst = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        worst = loss.detach().abs().max()  # torch.maximum keeps a NaN
        self._worst = worst if self._worst is None else torch.maximum(self._worst, worst)
        self._last_batch = batch_idx + 1
        last = batch_idx + 1 >= trainer.num_training_batches
        if (batch_idx + 1) % self.check_every_n_batches == 0 or last:
            self._raise_if_diverged(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._raise_if_diverged(trainer)

    def _raise_if_diverged(self, trainer) -> None:
        worst, self._worst = self._worst, None
        if worst is None:
            return
        # NaN as infinity: a reduction's maximum need not keep a NaN; both are reported alike
        worst = torch.nan_to_num(worst.detach().float().clone(), nan=math.inf, posinf=math.inf)
        worst = trainer.strategy.reduce(worst, reduce_op="max")
        where = f" by epoch {trainer.current_epoch + 1}, batch {self._last_batch}"
        self._raise_if_bad(float(worst), "the training loss", where)  # the one read-back

    # ------------------------------------------------------------------ validation loss

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get(self.validation_loss)
        if loss is None:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self._raise_if_bad(float(loss), "the validation loss", f" in epoch {trainer.current_epoch + 1}")
        else:
            self._raise_if_bad(float(loss), "the tested checkpoint's validation loss", "")

    def _raise_if_bad(self, value: float, what: str, where: str) -> None:
        """Raise when ``value`` (``what``, measured ``where``) is not finite or above
        ``max_loss``."""
        if not math.isfinite(value):
            raise TrainingDiverged(f"Training diverged: {what} became NaN or infinite{where}; {ADVICE}.")
        if self._too_large(value):
            raise TrainingDiverged(
                f"Training diverged: {what} reached {value:.3g}{where}, more than "
                f"callbacks.divergence_guard.max_loss={self.max_loss:g}; {ADVICE}."
            )

    # ------------------------------------------------------------------ test outputs

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._test_not_finite = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0) -> None:
        probabilities = outputs.get("probabilities") if isinstance(outputs, dict) else None
        if not isinstance(probabilities, torch.Tensor):
            return
        bad = ~torch.isfinite(probabilities.detach()).all()
        previous = self._test_not_finite
        self._test_not_finite = bad if previous is None else previous | bad

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        flag, self._test_not_finite = self._test_not_finite, None
        flag = torch.tensor(0.0, device=pl_module.device) if flag is None else flag.float()
        if bool(trainer.strategy.reduce(flag, reduce_op="max")):  # in any process
            raise TrainingDiverged(
                "Training diverged: the tested model's test probabilities are NaN or infinite, "
                f"so its weights are not finite numbers; {ADVICE}."
            )

    def _too_large(self, value: float) -> bool:
        return self.max_loss is not None and abs(value) > self.max_loss
