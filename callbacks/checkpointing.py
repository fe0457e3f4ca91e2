"""How a run's checkpoints are written: ``last.ckpt`` after every epoch, the best checkpoint
by the monitored metric, epochs counted from 1 in their names, an identical last and best
stored once, and every file written atomically.

Lightning's ``ModelCheckpoint`` (2.6) rewrites ``last.ckpt`` only in an epoch that also
saved a top-k checkpoint: ``on_validation_end`` calls ``_save_last_checkpoint`` only when
``_last_global_step_saved == trainer.global_step`` (or, with ``save_last="link"``, links
``last.ckpt`` to the newest top-k file, which is the best one, not the last epoch), and
``on_train_end`` saves it only when nothing was saved at all. With ``save_top_k: 1`` a run
whose best epoch is not its last therefore tests an old epoch as ``last``.
:class:`BestAndLastCheckpoint` fixes that; :class:`AtomicCheckpointIO` writes the files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO

from medrepro.core.run_folder import atomic_file


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the weights after the latest
    epoch, and whose file names count epochs from 1, as ``metrics.csv`` does
    (``best-epoch003.ckpt`` is metrics.csv's epoch 3).

    - After every epoch that considers the top-k (every ``every_n_epochs``), and when
      training ends after an epoch that did not, ``last.ckpt`` is written.
    - ``save_last: link``: when that epoch also saved a top-k checkpoint (the same
      weights), ``last.ckpt`` is a relative symbolic link to it, so it is stored once and
      the run folder can be moved; otherwise it is a file of its own. ``save_last: true``
      always writes a file.
    - A link is replaced atomically, and re-pointed before the file it links to is
      removed, so ``last.ckpt`` never dangles; files are written by the trainer's
      checkpoint IO (:class:`AtomicCheckpointIO` in medrepro's trainer).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last_written_at_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # the weights of a resumed run's first step are already in its checkpoint
        self._last_written_at_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not trainer.fast_dev_run:  # e.g. a last epoch without validation: write it now
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def format_checkpoint_name(self, metrics: dict, filename: str | None = None,
                               ver: int | None = None, prefix: str | None = None) -> str:
        """Lightning's name, with ``{epoch}`` counted from 1 (the epoch being trained)."""
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        # every time, not only after a new best
        self._save_last_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if not self.save_last or self._last_written_at_step == trainer.global_step:
            return
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        # set before saving: the path is part of the saved state
        previous, self.last_model_path = self.last_model_path, filepath
        same_weights = self._saved_this_step(trainer)
        if self.save_last == "link" and same_weights and same_weights != filepath:
            self._link_checkpoint(trainer, same_weights, filepath)
        else:
            self._save_checkpoint(trainer, filepath)
        self._last_written_at_step = trainer.global_step
        if previous and previous != filepath and self._should_remove_checkpoint(
                trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        last = self.last_model_path
        links_here = bool(last) and _links_to(Path(last), Path(filepath))
        if trainer.strategy.broadcast(links_here) and self._saved_this_step(trainer):
            # a new best replaces the one last.ckpt links to: link last.ckpt to the new one first
            self._link_checkpoint(trainer, self._last_checkpoint_saved, last)
            self._last_written_at_step = trainer.global_step
        super()._remove_checkpoint(trainer, filepath)

    def _saved_this_step(self, trainer: pl.Trainer) -> str:
        """The checkpoint file saved at the current step, if any (it holds the current weights)."""
        if self._last_global_step_saved == trainer.global_step:
            return self._last_checkpoint_saved
        return ""

    @staticmethod
    def _link_checkpoint(trainer: pl.Trainer, filepath: str, linkpath: str) -> None:
        """Make ``linkpath`` a relative symbolic link to ``filepath`` in one rename."""
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link = Path(linkpath)
            temporary = link.with_name(f".{link.name}.{os.getpid()}.link.tmp")
            temporary.unlink(missing_ok=True)
            try:
                os.symlink(os.path.relpath(filepath, link.parent), temporary)
            except OSError:  # no symbolic links here (Windows without the right): a copy
                shutil.copyfile(filepath, temporary)
            os.replace(temporary, link)
        trainer.strategy.barrier()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint IO, written through a temporary file in the
    checkpoint's own folder and a rename, so that a crash or a full disk never replaces a
    good checkpoint with a truncated one. (Lightning's own writer stages the file in the
    system's temporary folder; when that is another file system the final move is a copy
    into the target, which a full disk truncates, and which writes through a symbolic
    ``last.ckpt`` into the checkpoint it links to.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path,
                        storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_file(path, "wb") as stream:
            torch.save(checkpoint, stream)


def _links_to(link: Path, target: Path) -> bool:
    """Whether ``link`` is a symbolic link that leads to ``target``."""
    return link.is_symlink() and link.resolve() == target.resolve()
