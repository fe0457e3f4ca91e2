"""``predictions.csv``: every test image with its true label and predicted probabilities;
``val_predictions.csv``: the same for the validation images, predicted by the tested
checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from medrepro.core.distributed import gather_objects
from medrepro.core.run_folder import PREDICTIONS_CSV, VAL_PREDICTIONS_CSV

STAGE_FILES = {"test": PREDICTIONS_CSV, "val": VAL_PREDICTIONS_CSV}


class TestPredictions(pl.Callback):
    """Columns: ``path``, ``label`` (true class name), ``label_index``, ``probability``
    (binary: of the positive class; multi-class: of the predicted class), one
    ``prob_<class>`` column per class, ``predicted`` (class name) and ``predicted_index``.

    Reads only the batches (``path``, ``label``) and the test step's outputs
    (``probabilities`` and ``predicted``, the model's decision: threshold or argmax), and
    the module's ``class_names``. Written at the end of the test epoch, so every callback
    can read the file in ``on_test_end``.

    ``stage="val"`` writes ``val_predictions.csv`` during ``trainer.validate`` (the tested
    checkpoint; not the validation inside the fit) from the validation step's ``logits``,
    in ``on_validation_end``: the probabilities and decisions of the module's operating
    point (:meth:`ImageClassifier.probabilities` and ``predicted_labels``), chosen on these
    very images in ``on_validation_epoch_end``, as the test stage then applies it.

    In a multi-process (DDP) job each process tests its share of the images; the shares
    are gathered and the first process writes every image once, in the order of the data
    module's split (``manifest``) when it has one.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, output_dir: str, stage: str = "test") -> None:
        if stage not in STAGE_FILES:
            raise ValueError(f"stage must be one of {', '.join(STAGE_FILES)}, not {stage!r}")
        self.stage = stage
        self.path = Path(output_dir) / STAGE_FILES[stage]
        self._batches: list[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.stage != "test":
            return
        self._batches.append((
            list(batch["path"]),
            batch["label"].cpu(),
            outputs["probabilities"].float().cpu(),
            outputs["predicted"].long().cpu(),
        ))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.stage != "test":
            return
        batches, self._batches = self._batches, []
        self._write(trainer, pl_module, batches)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if self.stage != "val" or trainer.state.fn != "validate" or not outputs:
            return
        # the logits: the operating point is chosen only once the epoch has ended
        self._batches.append((list(batch["path"]), batch["label"].cpu(),
                              outputs["logits"].float().cpu(), None))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage != "val" or trainer.state.fn != "validate":
            return
        batches, self._batches = self._batches, []
        decided = []
        for paths, labels, logits, _ in batches:
            probabilities = pl_module.probabilities(logits).float().cpu()
            decided.append((paths, labels, probabilities,
                            pl_module.predicted_labels(probabilities).long().cpu()))
        self._write(trainer, pl_module, decided)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list) -> None:
        share = _columns(batches)
        shares = gather_objects(share)  # every process, even one without a batch
        if not trainer.is_global_zero:
            return
        shares = [part for part in shares if part[0]]
        if not shares:
            return
        paths = [p for part in shares for p in part[0]]
        labels = torch.cat([part[1] for part in shares]).long()
        probabilities = torch.cat([part[2] for part in shares])
        predicted = torch.cat([part[3] for part in shares])
        names = list(pl_module.class_names)
        frame = pd.DataFrame({"path": paths, "label": [names[i] for i in labels], "label_index": labels.numpy()})
        binary = len(names) == 2
        frame["probability"] = (
            probabilities[:, 1] if binary else probabilities.gather(1, predicted[:, None])[:, 0]
        ).numpy()
        for index, name in enumerate(names):
            frame[f"prob_{name}"] = probabilities[:, index].numpy()
        frame["predicted"] = [names[i] for i in predicted]
        frame["predicted_index"] = predicted.numpy()
        if len(shares) > 1:
            # a distributed sampler repeats images to give every process as many
            frame = frame.drop_duplicates("path").reset_index(drop=True)
            frame = _in_split_order(frame, getattr(trainer.datamodule, "manifest", None),
                                    self.stage)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.path, index=False)


def _columns(batches: list) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """One process's batches as (paths, labels, probabilities, predicted)."""
    if not batches:
        return [], torch.empty(0), torch.empty(0), torch.empty(0)
    return ([p for batch in batches for p in batch[0]],
            torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches]),
            torch.cat([b[3] for b in batches]))


def _in_split_order(frame: pd.DataFrame, manifest: pd.DataFrame | None, split: str) -> pd.DataFrame:
    """The rows gathered from the processes in the order of ``split`` (as a single-process
    job writes them); paths the manifest lacks go last."""
    if manifest is None or "path" not in manifest:
        return frame
    test = manifest[manifest["split"] == split] if "split" in manifest else manifest
    position = {path: i for i, path in enumerate(test["path"])}
    order = frame["path"].map(position).fillna(len(position))
    return frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)
