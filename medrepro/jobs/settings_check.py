"""Settings checked before anything expensive runs (data, cache, model): a wrong value
stops the job with one sentence (a :class:`~medrepro.core.errors.ConfigError`) that names
the key and a value it takes.

Checked here: values left at ``???``; ``seed``; ``trainer.max_epochs`` and
``trainer.limit_train_batches`` (a run that would not train at all); the optimizer's numbers
(``optimizer.lr``, ``weight_decay``, ``momentum``, ``eps``, ``alpha``, ``betas``);
``model.threshold`` (a number or a rule), ``model.calibrate``; ``model.name`` (a timm model), ``data.image_size`` (also against the
smallest input the model takes) and that ``model.weights`` exists; ``test_checkpoint``;
a job of several processes (DDP on several devices) in a multirun, outside SLURM tasks;
and keys under their names before the data keys were grouped (``data.num_workers`` is now
``data.loader.num_workers``, see :data:`RENAMED_KEYS`). The data module checks its own
groups (``data.loader``, ``data.cache``, ...) when it is built, which is also before
anything expensive.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from medrepro.core.distributed import processes_per_job
from medrepro.core.errors import ConfigError
from medrepro.core.precision import resolve_precision
from medrepro.jobs.resume import is_multirun
from medrepro.lightning_modules.backbone import check_input_size, check_model_name, weights_file
from medrepro.lightning_modules.image_classifier import check_calibration_method
from medrepro.statistics.operating_point import parse_threshold_rule

TEST_CHECKPOINTS = ("best", "last")
LARGEST_SEED = 2**32 - 1  # numpy's limit, which Lightning's seed_everything enforces

# the data keys' names before the data config was grouped (old name -> new name)
RENAMED_KEYS = {
    "data.batch_size": "trainer.batch_size",
    "data.num_workers": "data.loader.num_workers",
    "data.pin_memory": "data.loader.pin_memory",
    "data.persistent_workers": "data.loader.persistent_workers",
    "data.allow_leakage": "data.checks.allow_leakage",
    "data.skip_unreadable": "data.checks.skip_unreadable",
    "data.cache": "data.cache.enabled",
    "data.cache_dir": "data.cache.dir",
    "data.enhance": "data.preprocess.enhance",
    "data.enh": "data.preprocess.enh",
    "audit.near_duplicate_distance": "data.duplicates.candidate_distance",
}
RENAMED_GROUPS = {"data.enh": "data.preprocess.enh"}  # whose keys moved with them

# the optimizer's numbers: (lower bound, whether the bound itself is allowed, an example)
OPTIMIZER_NUMBERS = {
    "lr": (0.0, False, "0.001"),
    "weight_decay": (0.0, True, "0.0001"),
    "momentum": (0.0, True, "0.9"),
    "eps": (0.0, True, "1e-07"),
    "alpha": (0.0, True, "0.9"),
}


def check_settings(cfg: DictConfig) -> str:
    """Check the job's settings; return ``test_checkpoint`` (``best`` or ``last``)."""
    _check_no_missing_values(cfg)
    _check_no_renamed_keys(cfg)
    _check_seed(cfg.get("seed"))
    _check_training_length(cfg.trainer)
    _check_processes_in_multirun(cfg.trainer)
    _check_optimizer(cfg.optimizer)
    _check_fused_optimizer_clipping(cfg)
    _check_model(cfg.model, cfg.data)
    _check_optimized_metric(cfg.get("optimized_metric"))
    return _test_checkpoint_setting(cfg)


# what ``optimized_metric`` may name: a stage the job returns and a metric every run logs
# (``<stage>/<metric>`` or a per-class ``<stage>/<metric>_<class>``)
OPTIMIZABLE_STAGES = ("val", "test")
OPTIMIZABLE_METRICS = ("acc", "auroc", "f1", "precision", "recall", "specificity", "mse", "loss")


def _check_optimized_metric(name) -> None:
    if name is None:
        return
    stage, _, metric = str(name).partition("/")
    if stage in OPTIMIZABLE_STAGES and metric.split("_")[0] in OPTIMIZABLE_METRICS:
        return
    raise ConfigError(
        f"optimized_metric must name a validation (or test) metric such as val/auroc or "
        f"val/loss, not {name!r}; the metrics are {', '.join(OPTIMIZABLE_METRICS)}."
    )


def _check_processes_in_multirun(trainer: DictConfig) -> None:
    """A multi-process (DDP) job in a multirun: Lightning starts a job's other processes by
    re-running the command line (``-m`` included), which would start the whole sweep again in
    each of them. Allowed where the processes are started from outside, as the tasks of a
    SLURM job (``hydra/launcher=slurm``, submitit; Lightning's SLURMEnvironment then creates
    none)."""
    processes = processes_per_job(trainer)
    if processes <= 1 or not is_multirun() or _slurm_tasks() > 1:
        return
    nodes = int(trainer.get("num_nodes") or 1)
    per_node = max(1, processes // nodes)
    on_nodes = f" on trainer.num_nodes={nodes} nodes" if nodes > 1 else ""
    slurm_nodes = f" hydra.launcher.nodes={nodes}" if nodes > 1 else ""
    raise ConfigError(
        f"trainer.devices={_text(trainer.get('devices'))}{on_nodes} runs {processes} processes "
        "per job, which a multirun (-m) cannot start (Lightning starts them by re-running the "
        "command, which would start the sweep again): run such jobs as SLURM tasks, one per "
        f"GPU, with hydra/launcher=slurm hydra.launcher.gpus_per_node={per_node}{slurm_nodes} "
        "(submitit_slurm), or single-device jobs side by side with hydra/launcher=joblib "
        "trainer.devices=1."
    )


def _slurm_tasks() -> int:
    """The number of tasks of the SLURM job this process belongs to (1 outside SLURM)."""
    value = os.environ.get("SLURM_NTASKS", "")
    return int(value) if value.isdigit() else 1


def renamed_key_sentence(key: str, value: str) -> str | None:
    """The sentence for an override ``key=value`` that uses a data key's old name, else
    ``None``."""
    group, _, parameter = key.rpartition(".")
    new = RENAMED_KEYS.get(key) or (
        f"{RENAMED_GROUPS[group]}.{parameter}" if group in RENAMED_GROUPS else None
    )
    if new is None:
        return None
    return f"{key} is now called {new}: write {new}={value} instead."


def _check_no_missing_values(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " For example: python train.py data=folder data.root=/path/to/images" if "data.root" in missing else ""
        raise ConfigError(f"Set {', '.join(missing)} on the command line (required, no default).{hint}")


def _check_no_renamed_keys(cfg: DictConfig) -> None:
    """An old data key added with ``+`` (as Hydra's own error suggests), set in a config
    file, or ``data.cache=false`` (which replaces the ``data.cache`` group)."""
    for key in RENAMED_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None or (key == "data.cache" and isinstance(value, Mapping)):
            continue  # absent, or the data.cache group that replaced the old switch
        raise ConfigError(renamed_key_sentence(key, _text(value)))


def _check_seed(seed) -> None:
    if not _is_whole(seed) or not 0 <= seed <= LARGEST_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {LARGEST_SEED}, such as 0, not {seed!r}.")


def _check_training_length(trainer: DictConfig) -> None:
    """A run that would end ``completed`` without a single training step."""
    epochs = trainer.get("max_epochs")
    if not _is_whole(epochs) or epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs must be a whole number of epochs, 1 or more, such as 10, not {epochs!r}."
        )
    batches = trainer.get("limit_train_batches", 1.0)
    if batches is not None and (not _is_number(batches) or batches <= 0):
        raise ConfigError(
            "trainer.limit_train_batches must be a fraction of the training batches above 0 "
            f"(1.0: all of them) or a number of batches, 1 or more, not {batches!r}."
        )


def _check_optimizer(optimizer: DictConfig) -> None:
    for key, (bound, bound_allowed, example) in OPTIMIZER_NUMBERS.items():
        if key not in optimizer:
            continue
        value = optimizer[key]
        if _is_number(value) and (value > bound or (bound_allowed and value == bound)):
            continue
        wanted = "a number above 0" if not bound_allowed else "a number, 0 or more"
        raise ConfigError(f"optimizer.{key} must be {wanted}, such as {example}, not {value!r}.")
    betas = optimizer.get("betas")
    if betas is not None and not (
        OmegaConf.is_list(betas) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(
            f"optimizer.betas must be two numbers from 0 to below 1, such as [0.9,0.999], not {_text(betas)}."
        )


def _check_fused_optimizer_clipping(cfg: DictConfig) -> None:
    """Lightning refuses gradient clipping with a fused optimizer under float16 loss scaling
    (``16-mixed``, older GPUs); said before the data are read rather than at the first step."""
    trainer = cfg.trainer
    if not (trainer.get("gradient_clip_val") and cfg.optimizer.get("fused")):
        return
    if resolve_precision(trainer.get("precision"), trainer.get("accelerator")) in ("16-mixed", 16, "16"):
        raise ConfigError(
            "trainer.gradient_clip_val cannot be used with a fused optimizer under 16-mixed "
            "precision: add optimizer.fused=false (or trainer.precision=bf16-mixed or 32-true)."
        )


def _check_model(model: DictConfig, data: DictConfig) -> None:
    """``model.threshold``, ``data.image_size``, ``model.name`` and ``model.weights``; the
    name and the input size before any data is read or any model is built."""
    threshold = model.get("threshold", 0.5)
    # a number in (0, 1), or a rule (youden, sensitivity@X, specificity@X); a rule on a
    # multi-class task stops when the model is built (the classes are known then)
    parse_threshold_rule(threshold if isinstance(threshold, str) or _is_number(threshold)
                         else _text(threshold))
    check_calibration_method(model.get("calibrate", "none"))
    size = data.get("image_size")
    if not _is_whole(size) or size < 1:
        raise ConfigError(
            "data.image_size must be a whole number of pixels (the side of the square images "
            f"the model sees), such as 224, not {size!r}."
        )
    check_model_name(model.name)
    check_input_size(model.name, size)
    if model.get("weights"):
        weights_file(model.weights)


def _test_checkpoint_setting(cfg: DictConfig) -> str:
    """``test_checkpoint``, checked before fitting: ``best`` or ``last`` (Lightning's
    ``ckpt_path`` names for the best checkpoint by the monitored metric and the newest
    ``last.ckpt``)."""
    which = str(cfg.get("test_checkpoint", "best"))
    if which not in TEST_CHECKPOINTS:
        raise ConfigError(f"test_checkpoint must be best or last, not {which!r}.")
    return which


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """An int or a finite float (not a bool, not a string such as ``abc``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value) -> str:
    """A config value as it would be written on the command line."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value).replace(" ", "") if isinstance(value, list | dict) else str(value)
