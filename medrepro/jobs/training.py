"""The training job: compose -> data -> model -> fit -> validate and test the best (or
last) checkpoint. ``train.py`` is a thin Hydra entry point around :func:`train`."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from medrepro.core.errors import ConfigError
from medrepro.core.precision import resolve_precision
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.jobs.resume import completed_results
from medrepro.jobs.settings_check import check_settings

log = logging.getLogger(__name__)
TRAINER_KEYS_NOT_FOR_LIGHTNING = ("batch_size", "compile")


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job; return its test metrics (``test/acc``, ``test/auroc``, ...).

    A job whose run folder already holds the completed results of the same resolved
    configuration (a sweep re-run into the same ``hydra.sweep.dir``) is not run again.
    """
    which_checkpoint = check_settings(cfg)
    output_dir = Path(cfg.paths.output_dir)
    previous = completed_results(output_dir, cfg)
    if previous is not None:
        log.info("Skipped: %s already holds the completed results of this configuration.", output_dir)
        return {f"test/{key}": value for key, value in previous["test"].items()}
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    augment = hydra.utils.instantiate(cfg.augment) if cfg.get("augment") else None
    datamodule = hydra.utils.instantiate(cfg.data, augment=augment, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")

    model = build_model(cfg, datamodule.class_names, datamodule.model_channels)
    if cfg.trainer.get("compile", False):
        model.backbone.compile()  # in place: checkpoints keep the plain parameter names
    callbacks = build_callbacks(cfg)
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = build_trainer(cfg, callbacks, logger, output_dir)

    check_before_training(datamodule)  # the quick data audit: stops on leakage or bad files
    trainer.fit(model, datamodule=datamodule)
    if trainer.interrupted:
        raise KeyboardInterrupt
    # divergence: the callbacks' DivergenceGuard has already stopped the fit
    checkpoint = which_checkpoint if _has_checkpoints(trainer) else None  # None: the weights in memory
    trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
    results = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint)[0]
    log.info("Run folder: %s", output_dir.resolve())
    return results


def build_model(cfg: DictConfig, class_names: list[str], channels: int) -> pl.LightningModule:
    loss = hydra.utils.instantiate(cfg.loss)(num_classes=len(class_names))
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    scheduler_cfg = cfg.get("scheduler")
    scheduler = hydra.utils.instantiate(scheduler_cfg) if scheduler_cfg else None
    return hydra.utils.instantiate(
        cfg.model,
        class_names=list(class_names),
        in_chans=channels,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        _recursive_=False,
        _convert_="all",
    )


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Instantiate ``cfg.callbacks`` in order; callbacks that take ``run_config`` get the
    resolved configuration (for results.json)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = []
    for settings in (cfg.get("callbacks") or {}).values():
        if not settings or "_target_" not in settings:
            continue
        target = hydra.utils.get_class(settings._target_)
        if "run_config" in inspect.signature(target).parameters:
            # through a partial, so that the config's own _target_ keys stay data
            callbacks.append(hydra.utils.instantiate(settings, _partial_=True)(run_config=resolved))
        else:
            callbacks.append(hydra.utils.instantiate(settings))
    return callbacks


def build_trainer(cfg: DictConfig, callbacks, logger, output_dir: Path) -> pl.Trainer:
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in TRAINER_KEYS_NOT_FOR_LIGHTNING:
        settings.pop(key, None)
    settings["precision"] = resolve_precision(settings.get("precision"), settings.get("accelerator"))
    if settings.get("benchmark") == "auto":  # cudnn.benchmark unless results must be reproducible
        settings["benchmark"] = not settings.get("deterministic")
    try:
        return pl.Trainer(
            **settings, callbacks=callbacks, logger=logger, default_root_dir=str(output_dir)
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Invalid trainer setting: {error}. Check the trainer.* overrides.") from error


def _has_checkpoints(trainer: pl.Trainer) -> bool:
    """Whether the fit saved checkpoints (a ModelCheckpoint callback that wrote one)."""
    callback = trainer.checkpoint_callback
    return callback is not None and bool(getattr(callback, "best_model_path", ""))
