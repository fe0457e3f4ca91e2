"""``split.csv``: the manifest (path, label, patient_id, split) of the run's data split."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from medrepro.core.run_folder import SPLIT_CSV


class SplitManifest(pl.Callback):
    """Write the data module's manifest into the run folder when fitting or testing starts
    (in a multi-process job, by the first process only)."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / SPLIT_CSV

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        manifest = getattr(trainer.datamodule, "manifest", None)
        if manifest is None or not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        manifest.to_csv(self.path, index=False)
