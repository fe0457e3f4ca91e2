"""The LightningModule: a timm backbone trained with a classification loss, evaluated
with the metrics the papers report."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from medrepro.lightning_modules.backbone import create_backbone
from medrepro.lightning_modules.metrics import ClassificationMetrics

STAGES = ("train", "val", "test")


class ImageClassifier(pl.LightningModule):
    """Images in ``[0, 1]`` -> normalised as the backbone expects -> logits.

    Args:
        name: timm model name (``inception_v3``, ``legacy_xception``, ``vgg16``, ...).
        class_names: classes in label order (for binary tasks label 1 is the positive one).
        in_chans: input channels (1 or 3).
        loss: a loss module from :mod:`medrepro.lightning_modules.losses`; it decides the number of
            logits and the output activation.
        optimizer: ``optimizer(params)`` -> torch optimiser (a Hydra ``_partial_``).
        scheduler: ``scheduler(optimizer)`` -> LR scheduler, or ``None``.
        pretrained, weights, drop_rate: see :func:`medrepro.lightning_modules.backbone.create_backbone`.
        threshold: decision threshold on the positive-class probability (binary tasks).
        mean, std: input normalisation per channel; ``None`` takes the backbone's
            pretrained configuration (averaged over RGB for one-channel inputs).
    """

    def __init__(
        self,
        name: str,
        class_names: list[str],
        in_chans: int,
        loss: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        threshold: float = 0.5,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss", "optimizer", "scheduler"])
        self.class_names = list(class_names)
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone = create_backbone(
            name,
            num_outputs=loss.num_outputs(len(class_names)),
            in_chans=in_chans,
            pretrained=pretrained,
            weights=weights,
            drop_rate=drop_rate,
        ).to(memory_format=torch.channels_last)
        mean, std = input_normalisation(self.backbone, in_chans, mean, std)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.stage_metrics = nn.ModuleDict(
            {f"{s}_metrics": ClassificationMetrics(class_names, threshold) for s in STAGES}
        )
        self.confusion_matrices: dict[str, list[list[int]]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last (NHWC): the layout fast convolution kernels want on GPU and CPU
        images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone((images - self.mean) / self.std)

    def predict_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` class probabilities."""
        return self.loss.probabilities(self(images))

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        probabilities = self.loss.probabilities(logits.detach())
        self.stage_metrics[f"{stage}_metrics"].update(probabilities, batch["label"], loss)
        return loss, probabilities

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # nothing is logged per step: a per-step value in the progress bar costs a host-device
        # synchronisation every step; the epoch's metrics are read once, in on_*_epoch_end
        loss, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """``probabilities`` (``[B, C]``, in ``class_names`` order) and ``predicted``
        (``[B]`` class indices: the decision threshold for binary tasks, else argmax), for
        the callbacks that record test predictions."""
        _, probabilities = self._step(batch, "test")
        predicted = self.stage_metrics["test_metrics"].predicted_labels(probabilities)
        return {"probabilities": probabilities, "predicted": predicted}

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """For ``trainer.predict`` over unlabelled images (batches of
        :func:`~medrepro.datamodules.unlabelled_images.collate_readable`): ``path``,
        ``probabilities`` (``[B, C]``), ``predicted`` (the threshold for binary tasks, else
        argmax) and ``unreadable`` (the batch's files that could not be read)."""
        images = batch["image"]
        if images.numel() == 0:  # every file of the batch was unreadable
            probabilities = torch.empty(0, len(self.class_names))
            predicted = torch.empty(0, dtype=torch.long)
        else:
            probabilities = self.predict_probabilities(images).float()
            predicted = self.stage_metrics["test_metrics"].predicted_labels(probabilities)
        return {"path": list(batch["path"]), "probabilities": probabilities.cpu(),
                "predicted": predicted.cpu(), "unreadable": list(batch.get("unreadable", []))}

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        metrics = self.stage_metrics[f"{stage}_metrics"]
        if not metrics.has_updates():
            return  # e.g. the sanity check ran no batch of this stage
        values, confusion = metrics.compute()
        prog_bar = {"loss", "acc", "auroc"} if stage != "train" else {"loss"}
        for key, value in values.items():
            self.log(f"{stage}/{key}", value, prog_bar=key in prog_bar)
        self.confusion_matrices[stage] = confusion.cpu().tolist()
        metrics.reset()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }


def input_normalisation(backbone, in_chans, mean, std) -> tuple[list[float], list[float]]:
    """The per-channel mean and std the model normalises its [0, 1] input with: the given
    ones, else the backbone's pretrained configuration, averaged over RGB when the input has
    another number of channels."""
    config = getattr(backbone, "pretrained_cfg", {}) or {}
    mean = list(mean) if mean is not None else list(config.get("mean", (0.5, 0.5, 0.5)))
    std = list(std) if std is not None else list(config.get("std", (0.5, 0.5, 0.5)))
    if len(mean) != in_chans:
        mean = [sum(mean) / len(mean)] * in_chans
    if len(std) != in_chans:
        std = [sum(std) / len(std)] * in_chans
    return mean, std
