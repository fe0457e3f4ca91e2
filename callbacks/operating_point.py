"""The operating point of the tested checkpoint, chosen on the validation set: the
temperature (``model.calibrate=temperature``) and the decision threshold
(``model.threshold``: a number, or a rule such as ``youden``), applied unchanged to the
test set and kept in the checkpoint file for eval.py, predict.py and export.py."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytorch_lightning as pl
import torch

from medrepro.callbacks.checkpointing import AtomicCheckpointIO
from medrepro.core.distributed import gather_objects
from medrepro.core.errors import ConfigError
from medrepro.core.run_folder import CHECKPOINT_SECTION, OPERATING_POINT_KEY
from medrepro.lightning_modules.image_classifier import (
    CALIBRATION_BINS,
    CHOSEN_ON_VALIDATION,
    PRE_SPECIFIED,
)
from medrepro.statistics.calibration import calibration_errors, fit_temperature
from medrepro.statistics.operating_point import choose_threshold

log = logging.getLogger(__name__)


class OperatingPointChoice(pl.Callback):
    """During ``trainer.validate`` (the tested checkpoint; not the validation inside the
    fit): gathers the validation logits of every process, fits the temperature on them
    (``model.calibrate=temperature``: :func:`~medrepro.statistics.calibration.
    fit_temperature`), chooses the threshold by ``model.threshold``'s rule on the
    (calibrated) validation probabilities (:func:`~medrepro.statistics.operating_point.
    choose_threshold`; a number is kept as it is, ``chosen_on: pre-specified``), and gives
    both to the module (:meth:`ImageClassifier.set_operating_point`), with the validation
    sensitivity, specificity and calibration errors. The module then tests with them.

    The checkpoint that was validated is rewritten (atomically; the file a link points to)
    with ``checkpoint["medrepro"]["operating_point"]``, which the module applies when it is
    tested or loaded later; weights validated from memory (no checkpoint saved) keep it in
    the module only. Done in ``on_validation_epoch_end``, so that every callback's
    ``on_validation_end`` sees the chosen operating point.
    """

    def __init__(self) -> None:
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        if trainer.state.fn != "validate" or not outputs:
            return
        self._batches.append((outputs["logits"].float().cpu(), batch["label"].long().cpu()))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "validate":
            return
        batches, self._batches = self._batches, []
        share = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])) if batches else None
        shares = [part for part in gather_objects(share) if part is not None]
        logits = torch.cat([part[0] for part in shares]) if shares else torch.empty(0)
        truth = torch.cat([part[1] for part in shares]).numpy() if shares else np.empty(0, int)
        description = choose_operating_point(pl_module, logits, truth)
        if trainer.is_global_zero:
            log.info("Operating point: %s", description)
        if trainer.ckpt_path:
            store_operating_point(trainer, str(trainer.ckpt_path), pl_module.operating_point_record())


def choose_operating_point(module: pl.LightningModule, logits: torch.Tensor, truth: np.ndarray) -> str:
    """Fit the temperature and choose the threshold on the validation ``logits`` and labels
    ``truth``; apply them to ``module``; return a sentence saying what was chosen."""
    rule, method = module.threshold_rule, module.calibrate
    if not len(truth):
        if not rule.fixed or method != "none":
            chooses = f"model.threshold={rule}" if not rule.fixed else f"model.calibrate={method}"
            raise ConfigError(f"{chooses} is chosen on the validation set, but the validation "
                              "stage saw no images: give the run validation images (data.split, "
                              "trainer.limit_val_batches), or set model.threshold to a number "
                              "and model.calibrate=none.")
        module.set_operating_point(rule.value, None, chosen_on=PRE_SPECIFIED)
        return f"{rule.value:g} (fixed by model.threshold; no validation images)"
    before = module.uncalibrated_probabilities(logits)
    temperature = fit_temperature(logits.numpy(), truth) if method == "temperature" else None
    calibrated = module.probabilities(logits, temperature) if temperature else before
    rates = None
    if len(module.class_names) == 2:
        threshold, description = choose_threshold(rule, truth, calibrated.numpy())
        module.set_operating_point(threshold, temperature, chosen_on=PRE_SPECIFIED)
        predicted = module.predicted_labels(calibrated).numpy()  # as the test will decide
        rates = {"sensitivity": _rate(predicted[truth == 1] == 1),
                 "specificity": _rate(predicted[truth == 0] == 0)}
    else:
        threshold, description = module.threshold, "the most probable class (multi-class)"
    errors = {"before": calibration_errors(truth, before.numpy(), CALIBRATION_BINS),
              "after": (calibration_errors(truth, calibrated.numpy(), CALIBRATION_BINS)
                        if temperature else None)}
    module.set_operating_point(threshold, temperature,
                               chosen_on=PRE_SPECIFIED if rule.fixed else CHOSEN_ON_VALIDATION,
                               validation_rates=rates, validation_calibration=errors)
    if temperature:
        description += f"; temperature {temperature:.4g} fitted on the validation set"
    return description


def store_operating_point(trainer: pl.Trainer, path: str, record: dict) -> None:
    """Rewrite the checkpoint ``path`` (the file a link points to) with ``record`` in
    ``checkpoint["medrepro"]["operating_point"]``, atomically, by the first process."""
    if trainer.is_global_zero:
        target = os.path.realpath(path)
        if os.path.isfile(target):
            checkpoint = torch.load(target, map_location="cpu", weights_only=True)
            section = checkpoint.get(CHECKPOINT_SECTION)
            checkpoint[CHECKPOINT_SECTION] = {**(section if isinstance(section, dict) else {}),
                                              OPERATING_POINT_KEY: record}
            AtomicCheckpointIO().save_checkpoint(checkpoint, target)
        else:
            log.warning("The operating point is not stored in %s (not a local file); "
                        "eval.py and predict.py will not apply it.", path)
    trainer.strategy.barrier()


def _rate(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None
