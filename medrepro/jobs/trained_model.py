"""A trained model as eval.py, predict.py and export.py use it: its checkpoint loaded as
plain data (``weights_only=True``: a shared file never runs code), the LightningModule
rebuilt from the training run's own configuration, and the pre-processing that training
used (image size, channels, crop, ENH, normalisation), so that it cannot drift.

The operating point (decision threshold and calibration temperature) that the training
chose on its validation set travels inside the tested checkpoint (``checkpoint["medrepro"]
["operating_point"]``) and is applied to the loaded model.

The configuration travels inside every checkpoint medrepro writes (``checkpoint["medrepro"]
["config"]``, by :class:`~medrepro.callbacks.checkpoint_config.TrainingConfigInCheckpoint`);
for a checkpoint written before that, it is read from its training run folder's
results.json (``<run>/checkpoints/<file>.ckpt``).
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from medrepro.callbacks.checkpoint_config import CHECKPOINT_KEY
from medrepro.core.checkpoint_epochs import epochs_ended
from medrepro.core.errors import ConfigError, UserError
from medrepro.core.run_folder import CHECKPOINTS_FOLDER, read_results
from medrepro.datamodules.data_settings import PreprocessSettings, settings_from

log = logging.getLogger(__name__)
# the data settings that decide what the model sees: taken from the training run, never
# from the data set a trained model is applied to
PREPROCESSING_KEYS = ("channels", "image_size", "preprocess")


@dataclass
class TrainedModel:
    """``classifier``: the LightningModule in eval mode with the checkpoint's weights;
    ``config``: the training run's resolved configuration; ``checkpoint``: the file;
    ``epoch``: epochs it had trained (counted from 1, as metrics.csv); ``run_dir``: the
    training run folder (``None`` when unknown)."""

    classifier: torch.nn.Module
    config: dict
    checkpoint: Path
    epoch: int | None
    run_dir: Path | None

    @property
    def class_names(self) -> list[str]:
        return list(self.classifier.class_names)

    @property
    def threshold(self) -> float:
        """The operating threshold: the one the training run chose on its validation set
        (kept in the checkpoint), else ``model.threshold``."""
        return float(self.classifier.threshold)

    @property
    def temperature(self) -> float:
        """The calibration temperature the logits are divided by (1: none fitted)."""
        return float(self.classifier.temperature)

    @property
    def operating_point(self) -> dict | None:
        """``rule``, ``threshold``, ``chosen_on`` and ``val`` (see
        :attr:`ImageClassifier.operating_point`); ``None`` for a multi-class model."""
        return self.classifier.operating_point

    @property
    def data_config(self) -> dict:
        return dict(self.config.get("data") or {})

    @property
    def channels(self) -> int:
        """Channels the files are read with (1 for the ENH input, which computes 3)."""
        return int(self.data_config.get("channels", 1))

    @property
    def model_channels(self) -> int:
        return int(self.classifier.hparams.in_chans)

    @property
    def image_size(self) -> int:
        return int(self.data_config.get("image_size"))

    def preprocessing(self) -> dict:
        """The training's ``data.channels``, ``data.image_size`` and ``data.preprocess``
        (resolved), to put in place of a data set's own."""
        return {key: self.data_config[key] for key in PREPROCESSING_KEYS if key in self.data_config}

    def pipeline(self):
        """The training's deterministic pre-processing as one transform (or ``None``)."""
        settings = hydra.utils.instantiate(self.data_config.get("preprocess") or {}, _convert_="all")
        return settings_from(PreprocessSettings, settings, "data.preprocess").pipeline(self.channels)

    def describe(self) -> dict:
        """What results.json and the model card record of the model evaluated."""
        model = self.config.get("model") or {}
        return {
            "checkpoint": str(self.checkpoint.resolve()),
            "epoch": self.epoch,
            "training_run": str(self.run_dir) if self.run_dir else None,
            "model": model.get("name"),
            "classes": self.class_names,
            "threshold": self.threshold,
            "operating_point": self.operating_point,
            "temperature": self.classifier.fitted_temperature,
            "image_size": self.image_size,
            "channels": self.channels,
            "model_channels": self.model_channels,
            "enhance": (self.data_config.get("preprocess") or {}).get("enhance", "none"),
            "trained_on": (self.config.get("data") or {}).get("name"),
        }


def load_trained_model(path: str | Path | None, setting: str = "ckpt_path") -> TrainedModel:
    """The trained model in checkpoint ``path`` (``setting`` names the option in the
    sentence a missing, unsafe or foreign file stops with)."""
    if not path:
        raise ConfigError(f"{setting} is required: pass {setting}=RUN/checkpoints/best-epochNNN.ckpt "
                          "(a checkpoint that medrepro's training wrote).")
    checkpoint_path = Path(str(path)).expanduser()
    if not checkpoint_path.is_file():
        raise ConfigError(f"{setting}={path}: no such file; pass a checkpoint that medrepro's "
                          "training wrote (RUN/checkpoints/best-epochNNN.ckpt or last.ckpt).")
    checkpoint = _load_as_data(checkpoint_path, setting)
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) or not any(str(k).startswith("backbone.") for k in state):
        raise UserError(f"{setting}={path} holds no medrepro model weights; pass a checkpoint "
                        "that medrepro's training wrote.")
    run_dir = _training_run_folder(checkpoint_path)
    config = _training_config(checkpoint, run_dir, checkpoint_path, setting)
    classifier = _rebuild(config, checkpoint, checkpoint_path, setting)
    return TrainedModel(classifier=classifier, config=config, checkpoint=checkpoint_path,
                        epoch=epochs_ended(checkpoint), run_dir=run_dir)


def _load_as_data(path: Path, setting: str) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True,
                                    mmap=zipfile.is_zipfile(path))
    except Exception as error:  # noqa: BLE001  (text, pickled code, a truncated file, ...)
        damaged = "zip archive" in str(error) or isinstance(error, EOFError)
        reason = "the file is truncated or damaged" if damaged else type(error).__name__
        raise UserError(f"{setting}={path} is not a checkpoint that loads safely as plain data "
                        f"({reason}); pass a checkpoint that medrepro's training wrote.") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{setting}={path} is not a medrepro checkpoint; pass a checkpoint that "
                        "medrepro's training wrote.")
    return checkpoint


def _training_run_folder(path: Path) -> Path | None:
    """``RUN`` for ``RUN/checkpoints/<file>`` (the layout training writes), else ``None``."""
    parent = path.resolve().parent if not path.is_symlink() else path.absolute().parent
    return parent.parent if parent.name == CHECKPOINTS_FOLDER else None


def _training_config(checkpoint: dict, run_dir: Path | None, path: Path, setting: str) -> dict:
    stored = checkpoint.get(CHECKPOINT_KEY)
    if isinstance(stored, Mapping) and isinstance(stored.get("config"), Mapping):
        return dict(stored["config"])
    results = read_results(run_dir) if run_dir is not None else None
    if results and isinstance(results.get("config"), Mapping):
        return dict(results["config"])
    raise UserError(f"{setting}={path} does not say how its model was trained (no training "
                    "configuration inside it, and no results.json in its run folder); use a "
                    "checkpoint in the checkpoints/ folder of the run that wrote it.")


def _rebuild(config: dict, checkpoint: dict, path: Path, setting: str) -> torch.nn.Module:
    """The LightningModule as the training built it (without downloading or reading any
    other weights), with the checkpoint's weights."""
    hyper = checkpoint.get("hyper_parameters") or {}
    cfg = OmegaConf.create(config)
    class_names = list(hyper.get("class_names") or [])
    if len(class_names) < 2:
        raise UserError(f"{setting}={path} does not name its model's classes; pass a checkpoint "
                        "that medrepro's training wrote.")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.update(pretrained=False, weights=None)
    for key in ("name", "threshold", "mean", "std", "drop_rate", "calibrate"):
        if key in hyper:
            model_cfg[key] = hyper[key]
    loss = hydra.utils.instantiate(cfg.loss)(num_classes=len(class_names))
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    classifier = hydra.utils.instantiate(
        model_cfg, class_names=class_names, in_chans=int(hyper.get("in_chans", 1)), loss=loss,
        optimizer=optimizer, scheduler=None, _recursive_=False, _convert_="all",
    )
    try:
        classifier.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise UserError(f"{setting}={path}: its weights do not fit the model its configuration "
                        f"describes ({first[1].strip() if len(first) > 1 else first[0]}).") from None
    if not classifier.load_operating_point(checkpoint) and not classifier.threshold_rule.fixed:
        log.warning("%s=%s was not validated after training, so model.threshold=%s was never "
                    "chosen: its threshold is %g.", setting, path, classifier.threshold_rule,
                    classifier.threshold)
    return classifier.eval()
