"""The training job: compose -> data -> model -> fit -> validate and test the best (or
last) checkpoint. ``train.py`` is a thin Hydra entry point around :func:`train`."""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment

from medrepro.callbacks.checkpointing import AtomicCheckpointIO
from medrepro.callbacks.progress_bar import EpochProgressBar
from medrepro.core.distributed import is_first_process, uses_gpus
from medrepro.core.errors import ConfigError
from medrepro.core.precision import choose_precision
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.jobs.job_steps import FIRST_STEP, enter_step
from medrepro.jobs.loggers import with_loggers
from medrepro.jobs.model_card import write_model_card
from medrepro.jobs.resume import check_checkpoint_fits, prepare_run_folder
from medrepro.jobs.run_record import finish_training_folder, record_allowed, record_protocol
from medrepro.jobs.settings_check import check_settings

log = logging.getLogger(__name__)
TRAINER_KEYS_NOT_FOR_LIGHTNING = ("batch_size", "compile")


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job; return its validation and test metrics (``val/auroc``, ``test/acc``,
    ... : the tested checkpoint's).

    The run folder is prepared first (:func:`~medrepro.jobs.resume.prepare_run_folder`): a
    job whose configuration already completed is not run again, ``ckpt_path`` (or an
    interrupted job of a sweep re-run) resumes the fit from a checkpoint, and an earlier
    attempt's files are moved aside before a fresh start.
    """
    enter_step(FIRST_STEP)
    which_checkpoint = check_settings(cfg)
    output_dir = Path(cfg.paths.output_dir)
    start = prepare_run_folder(cfg)
    if start.completed is not None:
        return {f"{stage}/{key}": value for stage in ("val", "test")
                for key, value in (start.completed.get(stage) or {}).items()}
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    enter_step("data_loading")
    augment = hydra.utils.instantiate(cfg.augment) if cfg.get("augment") else None
    datamodule = hydra.utils.instantiate(cfg.data, augment=augment, _convert_="all")
    datamodule.prepare_data()
    class_names = datamodule.find_classes()  # file names only: the model's mistakes first

    enter_step("model_building")
    model = build_model(cfg, class_names, datamodule.model_channels)
    if cfg.trainer.get("compile", False):
        model.backbone.compile()  # in place: checkpoints keep the plain parameter names
    if start.checkpoint is not None:
        check_checkpoint_fits(model, start.checkpoint)
    callbacks = build_callbacks(cfg)
    record_protocol(callbacks, cfg)  # results.json: experiment and the deviations from it
    logger, callbacks = with_loggers(cfg, callbacks)  # and, with a logger, the LR monitor
    trainer = build_trainer(cfg, callbacks, logger, output_dir)

    enter_step("data_loading")
    datamodule.setup("fit")  # every file inspected once, copies grouped, then the split

    enter_step("data_check")
    check_before_training(datamodule)  # the quick data audit: stops on leakage or bad files
    record_allowed(callbacks, cfg, datamodule)  # results.json: what the checks let through
    enter_step("training")
    trainer.fit(model, datamodule=datamodule, ckpt_path=start.checkpoint, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt
    # divergence: the callbacks' DivergenceGuard has already stopped the fit
    checkpoint = checkpoint_to_test(trainer, which_checkpoint)  # None: the weights in memory
    enter_step("validation")
    validated = trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint,
                                 verbose=False, weights_only=True)[0]
    enter_step("testing")
    tested = trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)[0]
    if is_first_process():  # once, not once per process of a DDP job
        write_model_card(output_dir)
        finish_training_folder(output_dir)  # report.md
        log.info("Run folder: %s", output_dir.resolve())
    return {**validated, **tested}


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
    choice = choose_precision(settings.get("precision"), settings.get("accelerator"))
    settings["precision"] = choice.precision
    if is_first_process():
        log.info("Precision %s (%s)", choice.precision, choice.reason)
    if settings.get("benchmark") == "auto":  # cudnn.benchmark unless results must be reproducible
        settings["benchmark"] = not settings.get("deterministic")
    bar_given = any(isinstance(c, ProgressBar) for c in callbacks)
    if settings.get("enable_progress_bar", True) and not bar_given:
        callbacks = [*callbacks, EpochProgressBar()]  # "Epoch 1/10", as metrics.csv counts
    if settings.get("sync_batchnorm") and not uses_gpus(settings.get("accelerator", "auto")):
        if is_first_process():  # once, not once per process
            log.warning("trainer.sync_batchnorm=true is ignored on the CPU (SyncBatchNorm runs on "
                        "GPUs only): each process normalises with its own batch statistics.")
        settings["sync_batchnorm"] = False
    # checkpoints written through a temporary file and a rename: a full disk never truncates one
    plugins = [*(settings.pop("plugins", None) or []), AtomicCheckpointIO()]
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        # a job submitted by submitit (hydra/launcher=submitit_slurm): submitit requeues it
        # on preemption or timeout with its own signal handler, so Lightning must not requeue
        # it too (its SLURMEnvironment would by default); the tasks of the job are the DDP
        # processes, which Lightning then does not start itself
        plugins.append(SLURMEnvironment(auto_requeue=False))
    try:
        return pl.Trainer(
            **settings, callbacks=callbacks, logger=logger, plugins=plugins,
            default_root_dir=str(output_dir),
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Invalid trainer setting: {error}. Check the trainer.* overrides.") from error


def checkpoint_to_test(trainer: pl.Trainer, which: str) -> str | None:
    """The checkpoint file ``test_checkpoint`` names after the fit: ``best``, the best by the
    monitored metric, or ``last``, the weights after the final epoch (``last.ckpt``, or the
    best checkpoint it links to). ``None`` when the fit saved none: the weights in memory,
    which are the final epoch's, are tested."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, f"{which}_model_path", "") if callback is not None else ""
    if not path:
        log.warning("No %s checkpoint was saved; validating and testing the final weights.", which)
    return path or None
