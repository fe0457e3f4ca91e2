"""Every checkpoint carries the configuration of the run that wrote it, so that eval.py,
predict.py and export.py rebuild the model and its pre-processing from the file alone
(a checkpoint shared without its run folder still says how to read images for it)."""

from __future__ import annotations

import pytorch_lightning as pl

from medrepro.core.run_folder import CHECKPOINT_SECTION

# checkpoint[CHECKPOINT_KEY] = {"config": the run's resolved configuration (plain data:
# loadable with torch.load(weights_only=True)), "format": 1}; the tested checkpoint also gets
# the operating point chosen on validation (callbacks/operating_point.py)
CHECKPOINT_KEY = CHECKPOINT_SECTION


class TrainingConfigInCheckpoint(pl.Callback):
    """Adds ``checkpoint["medrepro"]["config"]`` (the resolved run configuration) to every
    checkpoint the trainer saves."""

    def __init__(self, run_config: dict | None = None) -> None:
        self.run_config = run_config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint[CHECKPOINT_KEY] = {"config": self.run_config, "format": 1}
