"""The LightningModule: a timm backbone trained with a classification loss, evaluated
with the metrics the papers report, at an operating point (decision threshold and
calibration temperature) that can be chosen on the validation set and travels with the
tested checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from medrepro.core.distributed import gather_objects
from medrepro.core.errors import ConfigError
from medrepro.core.run_folder import CHECKPOINT_SECTION, OPERATING_POINT_KEY
from medrepro.lightning_modules.backbone import create_backbone
from medrepro.lightning_modules.metrics import ClassificationMetrics
from medrepro.statistics.calibration import calibration_errors
from medrepro.statistics.operating_point import ThresholdRule, parse_threshold_rule

STAGES = ("train", "val", "test")
CALIBRATION_METHODS = ("none", "temperature")
CALIBRATION_BINS = 15  # equal-width bins of the ECE, the MCE and the reliability diagram
# the threshold of a rule (model.threshold=youden, ...) until it is chosen on validation:
# the fit's validation metrics (acc, recall, ...) are read at it
UNCHOSEN_THRESHOLD = 0.5
PRE_SPECIFIED = "pre-specified"
CHOSEN_ON_VALIDATION = "validation"


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
        threshold: decision threshold on the positive-class probability (binary tasks): a
            probability, or a rule that chooses it on the validation set (``youden``,
            ``sensitivity@0.95``, ``specificity@0.95``; see
            :mod:`medrepro.statistics.operating_point`), chosen by
            :class:`~medrepro.callbacks.operating_point.OperatingPointChoice`.
        calibrate: ``none``, or ``temperature``: the logits are divided by a temperature
            fitted on the validation set (see :meth:`set_operating_point`).
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
        threshold: float | str = 0.5,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        calibrate: str = "none",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss", "optimizer", "scheduler"])
        self.class_names = list(class_names)
        self.threshold_rule = _two_class_rule(parse_threshold_rule(threshold), self.class_names)
        self.calibrate = check_calibration_method(calibrate)
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
            {f"{s}_metrics": ClassificationMetrics(class_names, self._configured_threshold())
             for s in STAGES}
        )
        self.confusion_matrices: dict[str, list[list[int]]] = {}
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.reset_operating_point()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last (NHWC): the layout fast convolution kernels want on GPU and CPU
        images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone((images - self.mean) / self.std)

    def predict_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` class probabilities (calibrated when a temperature is set)."""
        return self.probabilities(self(images))

    # ----------------------------------------------------------------- the operating point

    def probabilities(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``[B, C]`` class probabilities of ``logits``: the loss's activation (sigmoid or
        softmax) of ``logits / temperature`` (by default :attr:`temperature`: 1 unless one
        was fitted)."""
        return self.loss.probabilities(logits.float() / (temperature or self.temperature))

    def uncalibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, C]``: the model's own probabilities (temperature 1)."""
        return self.loss.probabilities(logits.float())

    def predicted_labels(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``[B]`` class indices at the operating point: positive-class probability >=
        :attr:`threshold` for a binary task, else the most probable class."""
        return self.stage_metrics["test_metrics"].predicted_labels(probabilities)

    def reset_operating_point(self) -> None:
        """Back to the configured operating point: ``model.threshold`` when it is a number
        (``chosen_on`` pre-specified), else nothing chosen yet (threshold
        :data:`UNCHOSEN_THRESHOLD`); temperature 1; no validation or test records."""
        self.threshold = self._configured_threshold()
        self.temperature = 1.0
        self.fitted_temperature: float | None = None
        self.chosen_on: str | None = PRE_SPECIFIED if self.threshold_rule.fixed else None
        self.validation_rates: dict | None = None
        self.validation_calibration: dict | None = None
        self.test_calibration: dict | None = None
        self.stage_metrics["test_metrics"].set_threshold(self.threshold)

    def set_operating_point(self, threshold: float, temperature: float | None = None, *,
                            chosen_on: str, validation_rates: dict | None = None,
                            validation_calibration: dict | None = None) -> None:
        """Test (and predict) from now on at ``threshold`` on probabilities scaled by
        ``temperature`` (``None``: none fitted, 1). ``chosen_on``: ``pre-specified`` or
        ``validation``; ``validation_rates``: ``{"sensitivity", "specificity"}`` at the
        threshold on the validation set; ``validation_calibration``: ``{"before",
        "after"}`` errors (:func:`~medrepro.statistics.calibration.calibration_errors`).
        The metrics of a stage already under way keep their threshold, except the test's."""
        if not math.isfinite(float(threshold)):
            raise ValueError(f"threshold {threshold!r} is not a number")
        if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature {temperature!r} is not a positive number")
        self.threshold = float(threshold)
        self.fitted_temperature = None if temperature is None else float(temperature)
        self.temperature = self.fitted_temperature or 1.0
        self.chosen_on = chosen_on
        self.validation_rates = validation_rates
        self.validation_calibration = validation_calibration
        self.stage_metrics["test_metrics"].set_threshold(self.threshold)

    @property
    def operating_point(self) -> dict | None:
        """results.json's ``operating_point`` (``None`` for a multi-class task): ``rule``
        (``None`` for a number), ``threshold``, ``chosen_on`` (``pre-specified``,
        ``validation``, or ``None`` while a rule is not applied yet) and ``val``
        (validation sensitivity and specificity at the threshold)."""
        if len(self.class_names) != 2:
            return None
        return {"rule": None if self.threshold_rule.fixed else str(self.threshold_rule),
                "threshold": self.threshold, "chosen_on": self.chosen_on,
                "val": self.validation_rates}

    @property
    def calibration(self) -> dict:
        """results.json's ``calibration``: ``method``, ``temperature`` (``None`` unless
        fitted), ``bins``, and ECE, MCE and Brier score ``before`` (the model's own
        probabilities) and ``after`` (scaled by the temperature; ``None`` without one) on
        ``val`` and ``test`` (``None`` for a stage not run)."""
        return {"method": self.calibrate, "temperature": self.fitted_temperature,
                "bins": CALIBRATION_BINS, "val": self.validation_calibration,
                "test": self.test_calibration}

    def operating_point_record(self) -> dict:
        """What the tested checkpoint keeps (``checkpoint["medrepro"]["operating_point"]``)
        so that eval.py, predict.py and export.py apply the same operating point."""
        return {"rule": None if self.threshold_rule.fixed else str(self.threshold_rule),
                "threshold": self.threshold, "temperature": self.fitted_temperature,
                "chosen_on": self.chosen_on, "val": self.validation_rates,
                "calibration_val": self.validation_calibration}

    def load_operating_point(self, checkpoint: dict) -> bool:
        """Apply the operating point a checkpoint keeps (see :meth:`operating_point_record`);
        ``False`` (nothing changed) when it keeps none."""
        record = (checkpoint.get(CHECKPOINT_SECTION) or {}).get(OPERATING_POINT_KEY)
        if not isinstance(record, dict) or record.get("threshold") is None:
            return False
        self.set_operating_point(record["threshold"], record.get("temperature"),
                                 chosen_on=record.get("chosen_on"),
                                 validation_rates=record.get("val"),
                                 validation_calibration=record.get("calibration_val"))
        return True

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Testing or predicting a checkpoint: its stored operating point. Fitting or
        validating one: the configured operating point (the validation chooses again)."""
        trainer = self._trainer
        if trainer is not None and trainer.state.fn in ("fit", "validate"):
            self.reset_operating_point()
        else:
            self.load_operating_point(checkpoint)

    def _configured_threshold(self) -> float:
        return self.threshold_rule.value if self.threshold_rule.fixed else UNCHOSEN_THRESHOLD

    # ----------------------------------------------------------------------------- steps

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        probabilities = self.probabilities(logits.detach())
        self.stage_metrics[f"{stage}_metrics"].update(probabilities, batch["label"], loss)
        return loss, probabilities, logits.detach()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # nothing is logged per step: a per-step value in the progress bar costs a host-device
        # synchronisation every step; the epoch's metrics are read once, in on_*_epoch_end
        loss, _, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """In ``trainer.validate`` (the tested checkpoint): ``logits`` (``[B, outputs]``)
        and ``probabilities`` (``[B, C]``, before an operating point is chosen), for the
        callbacks that choose the operating point and record the validation predictions;
        nothing during the fit (its validation stays cheap)."""
        _, probabilities, logits = self._step(batch, "val")
        if self._trainer is not None and self._trainer.state.fn == "validate":
            return {"logits": logits, "probabilities": probabilities}
        return None

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """``probabilities`` (``[B, C]``, in ``class_names`` order, calibrated when a
        temperature is set), ``predicted`` (``[B]`` class indices: the operating threshold
        for binary tasks, else argmax) and ``logits``, for the callbacks that record test
        predictions."""
        _, probabilities, logits = self._step(batch, "test")
        self._test_outputs.append((logits, batch["label"]))
        predicted = self.predicted_labels(probabilities)
        return {"probabilities": probabilities, "predicted": predicted, "logits": logits}

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
            predicted = self.predicted_labels(probabilities)
        return {"path": list(batch["path"]), "probabilities": probabilities.cpu(),
                "predicted": predicted.cpu(), "unreadable": list(batch.get("unreadable", []))}

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        self.test_calibration = self._test_calibration()

    def _test_calibration(self) -> dict | None:
        """ECE, MCE and Brier score of every process's test images, ``before`` and
        ``after`` the temperature (``None`` without test images, or with probabilities that
        are not finite: a diverged model)."""
        outputs, self._test_outputs = self._test_outputs, []
        share = ((torch.cat([o[0] for o in outputs]).float().cpu(),
                  torch.cat([o[1] for o in outputs]).long().cpu()) if outputs else None)
        shares = [part for part in gather_objects(share) if part is not None]
        if not shares:
            return None
        logits = torch.cat([part[0] for part in shares])
        truth = torch.cat([part[1] for part in shares]).numpy()
        before = self.uncalibrated_probabilities(logits).numpy()
        if not np.isfinite(before).all():
            return None
        after = None
        if self.fitted_temperature is not None:
            after = calibration_errors(truth, self.probabilities(logits).numpy(), CALIBRATION_BINS)
        return {"before": calibration_errors(truth, before, CALIBRATION_BINS), "after": after}

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


def _two_class_rule(rule: ThresholdRule, class_names: list[str]) -> ThresholdRule:
    """``rule``, after checking that a rule (not a number) meets a two-class task."""
    if not rule.fixed and len(class_names) != 2:
        raise ConfigError(
            f"model.threshold={rule} chooses a decision threshold for two-class tasks only, "
            f"and this task has {len(class_names)} classes ({', '.join(class_names)}): leave "
            "model.threshold at a number such as 0.5 (a multi-class model predicts its most "
            "probable class)."
        )
    return rule


def check_calibration_method(value) -> str:
    """``model.calibrate`` checked: ``none`` (also for null) or ``temperature``; anything
    else stops with a :class:`ConfigError`."""
    value = "none" if value is None else value
    if value not in CALIBRATION_METHODS:
        raise ConfigError(f"model.calibrate must be none or temperature (temperature scaling "
                          f"fitted on the validation set), not {value!r}.")
    return value
