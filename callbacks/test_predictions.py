"""``predictions.csv``: every test image with its true label and predicted probabilities."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch


class TestPredictions(pl.Callback):
    """Columns: ``path``, ``label`` (true class name), ``label_index``, ``probability``
    (binary: of the positive class; multi-class: of the predicted class), one
    ``prob_<class>`` column per class, ``predicted`` (class name) and ``predicted_index``.
    The predicted class applies the model's decision threshold (binary) or argmax."""

    __test__ = False  # not a pytest test class

    def __init__(self, output_dir: str, filename: str = "predictions.csv") -> None:
        self.path = Path(output_dir) / filename
        self._batches: list[tuple[list[str], torch.Tensor, torch.Tensor]] = []
        self.frame: pd.DataFrame | None = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        probabilities = outputs["probabilities"].float().cpu()
        self._batches.append((list(batch["path"]), batch["label"].cpu(), probabilities))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._batches or trainer.sanity_checking:
            return
        names = pl_module.class_names
        metrics = pl_module.stage_metrics["test_metrics"]
        paths = [p for batch in self._batches for p in batch[0]]
        labels = torch.cat([b[1] for b in self._batches]).long()
        probabilities = torch.cat([b[2] for b in self._batches])
        predicted = metrics.predicted_labels(probabilities)
        frame = pd.DataFrame({"path": paths, "label": [names[i] for i in labels], "label_index": labels.numpy()})
        frame["probability"] = (
            probabilities[:, 1] if metrics.binary else probabilities.gather(1, predicted[:, None])[:, 0]
        ).numpy()
        for index, name in enumerate(names):
            frame[f"prob_{name}"] = probabilities[:, index].numpy()
        frame["predicted"] = [names[i] for i in predicted]
        frame["predicted_index"] = predicted.numpy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.path, index=False)
        self.frame = frame
