"""Each training epoch's random streams from ``(seed, epoch)`` alone, so that a resumed run
repeats the epochs of an uninterrupted one."""

from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from medrepro.core.checkpoint_epochs import epochs_ended, saved_at_epoch_end

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 32-bit seed for ``epoch`` (0-based) of a run seeded with ``seed``; ``stream`` tells
    apart generators of one epoch. Distinct ``(seed, epoch)`` pairs give unrelated seeds
    (seed 1's first epoch does not repeat seed 0's second)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(1)[0])


class EpochSeeding(pl.Callback):
    """Re-seed torch, numpy and ``random`` (``seed_everything(..., workers=True)``) for every
    training epoch, and the training data's augmentation pipeline (albumentations keeps its
    own generator), from ``(seed, epoch)``.

    Lightning does not store random states in a checkpoint, and one ``seed_everything`` at
    the start makes an epoch's shuffling, augmentation and dropout depend on every epoch
    before it in the same process. Seeded per epoch, a run resumed from the checkpoint of
    epoch ``e`` draws exactly what the uninterrupted run drew from epoch ``e + 1`` on.

    Each epoch is seeded just before Lightning creates its training DataLoader iterator,
    which draws the shuffling seed and the workers' base seed from the global generator.
    Lightning creates that iterator for the first epoch of a fit (fresh or resumed) before
    ``on_train_epoch_start``, so that epoch is seeded in ``on_fit_start`` (from the epoch
    of the checkpoint being resumed, given to ``on_load_checkpoint``); every later epoch in
    ``on_train_epoch_start``, before its iterator. DataLoader workers are seeded by torch
    from that base seed when they start: with ``persistent_workers`` they start once per fit,
    so their augmentation depends on the epoch the fit started at (the data config turns
    ``persistent_workers`` off with ``trainer.deterministic=true``). A checkpoint saved before
    its epoch ended (validation less often than once per epoch) cannot be resumed exactly:
    Lightning ends that epoch again; a warning says so.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._first_epoch = 0
        self._first_epoch_of_fit = True

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # validate/test load checkpoints too
            return
        self._first_epoch = epochs_ended(checkpoint) or 0  # the 0-based epoch the fit resumes at
        if not saved_at_epoch_end(checkpoint):
            log.warning("The checkpoint resumed was saved before its epoch ended (validation less "
                        "often than every epoch, or within an epoch): this run's random draws will "
                        "differ from those of an uninterrupted run.")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_epoch_of_fit = True
        self._seed_global(self._first_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self._first_epoch_of_fit:
            self._seed_global(epoch)  # before Lightning creates this epoch's iterator
        self._first_epoch_of_fit = False
        self._seed_augmentation(trainer, epoch)

    def _seed_global(self, epoch: int) -> None:
        pl.seed_everything(epoch_seed(self.seed, epoch), workers=True, verbose=False)

    def _seed_augmentation(self, trainer: pl.Trainer, epoch: int) -> None:
        """The augmentation of the training data in this process (without DataLoader
        workers; each worker re-seeds its own copy from its torch seed)."""
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        augment = getattr(dataset, "augment", None)
        if augment is not None and hasattr(augment, "set_random_seed"):
            augment.set_random_seed(epoch_seed(self.seed, epoch, stream=1))
