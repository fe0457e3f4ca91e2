"""``predictions.csv``: every test image with its true label and predicted probabilities."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from medrepro.core.run_folder import PREDICTIONS_CSV


class TestPredictions(pl.Callback):
    """Columns: ``path``, ``label`` (true class name), ``label_index``, ``probability``
    (binary: of the positive class; multi-class: of the predicted class), one
    ``prob_<class>`` column per class, ``predicted`` (class name) and ``predicted_index``.

    Reads only the batches (``path``, ``label``) and the test step's outputs
    (``probabilities`` and ``predicted``, the model's decision: threshold or argmax), and
    the module's ``class_names``. Written at the end of the test epoch, so every callback
    can read the file in ``on_test_end``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / PREDICTIONS_CSV
        self._batches: list[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batches.append((
            list(batch["path"]),
            batch["label"].cpu(),
            outputs["probabilities"].float().cpu(),
            outputs["predicted"].long().cpu(),
        ))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._batches or trainer.sanity_checking:
            return
        names = list(pl_module.class_names)
        paths = [p for batch in self._batches for p in batch[0]]
        labels = torch.cat([b[1] for b in self._batches]).long()
        probabilities = torch.cat([b[2] for b in self._batches])
        predicted = torch.cat([b[3] for b in self._batches])
        self._batches = []
        frame = pd.DataFrame({"path": paths, "label": [names[i] for i in labels], "label_index": labels.numpy()})
        binary = len(names) == 2
        frame["probability"] = (
            probabilities[:, 1] if binary else probabilities.gather(1, predicted[:, None])[:, 0]
        ).numpy()
        for index, name in enumerate(names):
            frame[f"prob_{name}"] = probabilities[:, index].numpy()
        frame["predicted"] = [names[i] for i in predicted]
        frame["predicted_index"] = predicted.numpy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.path, index=False)
