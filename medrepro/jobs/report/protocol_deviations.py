"""Every setting in which a run differs from its experiment config (the paper's protocol):
``model.pretrained`` false where the paper started from ImageNet weights, a smaller
image, fewer epochs, demo data instead of the paper's, ...

The experiment's own config is composed from the same config tree with Hydra's compose
API: ``experiment=NAME`` alone, plus the job's values of the experiment's swept settings
(its ``hydra.sweeper.params``, e.g. the seed and the arm's learning rate), which are the
protocol's own choices and not deviations, unless the run gives one of them a value the
experiment does not sweep. Both configs are flattened to dotted keys and compared key by
key, leaving out the keys of :data:`NOT_PROTOCOL` (paths and bookkeeping).

Inside a running Hydra job (train.py, eval.py) the job's own Hydra instance composes, with
its search path (so an experiment from ``--config-dir`` or ``hydra.searchpath`` is found);
elsewhere (report code, tests) a Hydra instance is initialised on medrepro's config tree
for the one composition and the previous global state restored (``initialize_config_dir``
does both). Composition is side-effect free: it neither configures logging nor changes the
running job's HydraConfig.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from medrepro.core.config_tree import CONFIG_DIR

log = logging.getLogger(__name__)
EXPERIMENT_GROUP = "experiment"
ROOT_CONFIG = "train"
# Keys (and everything below them) that are never protocol deviations: where files are
# (paths, the data's folder, its cache), the run's bookkeeping (task_name names the output
# folder, hydra configures Hydra, logger the metric log, the progress bar the console,
# ckpt_path resumes), the paper's own numbers (reference), the data loader's worker
# processes (speed, not results), the data source's descriptive text, the machine (accelerator, devices, nodes, strategy), the
# seed (the experiment's runs differ only in it), the metric a search optimises, and the
# run-folder writers among the callbacks (see PROTOCOL_CALLBACKS for those that are kept).
NOT_PROTOCOL = (
    "paths", "hydra", "task_name", "reference", "logger", "ckpt_path", "seed",
    "optimized_metric", "data.root", "data.cache", "data.source.title", "data.source.download_hint", "data.loader.num_workers",
    "data.loader.persistent_workers", "data.loader.pin_memory", "data.loader.prefetch_factor",
    "trainer.enable_progress_bar", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy", "trainer.sync_batchnorm", "callbacks",
    # which fold of a k-fold cross-validation a job is (cv=kfold sweeps it): the folds are
    # one protocol; data.split.mode=kfold and data.split.folds themselves are deviations
    "data.split.fold",
)
# callbacks that change what is trained or tested: their settings are compared
PROTOCOL_CALLBACKS = ("callbacks.model_checkpoint.monitor", "callbacks.model_checkpoint.mode",
                      "callbacks.early_stopping")
# settings the experiment's own config takes from the job whatever their value: what runs of
# one protocol differ in (the seed, and what follows it, e.g. augment.seed)
RUN_TO_RUN = ("seed",)
MISSING = "(not set)"  # a key that only one of the two configs has
# experiment_alone's answers: (experiment, config tree) -> the composed config
_EXPERIMENTS_ALONE: dict[tuple, DictConfig] = {}
# a component's class (Hydra's instantiation key): a component whose class differs is one deviation
TARGET_SUFFIX = "._target_"


def experiment_name() -> str | None:
    """The running job's experiment (``hydra.runtime.choices.experiment``); ``None`` when
    the job has none or no Hydra job is running."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(EXPERIMENT_GROUP)
    return None if choice in (None, "null") else str(choice)


def job_overrides() -> list[str]:
    """The running job's overrides (the command line's and, in a sweep, the job's swept
    values); empty outside a Hydra job."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def protocol_record(cfg: DictConfig) -> dict:
    """results.json's ``experiment`` and ``deviations`` for the running job with config
    ``cfg`` (``deviations`` ``None`` without an experiment)."""
    name = experiment_name()
    if name is None:
        return {"experiment": None, "deviations": None}
    return {"experiment": name, "deviations": deviations(cfg, name, job_overrides())}


def deviations(run_config: DictConfig | dict, experiment: str, overrides: list[str]) -> list[dict]:
    """``[{"key", "experiment", "run"}]`` for each protocol setting (dotted key) whose
    value in ``run_config`` differs from the experiment's own config, in key order;
    ``overrides`` are the job's (they give the swept settings' values). Both configs are
    walked together: a setting that is a group of settings in one and a single value in
    the other (``data.split.paper``: counts vs null) is one deviation, not one per count,
    and so is a component of another class (:func:`replaced_components`)."""
    reference = experiment_config(experiment, overrides)
    found = []
    for key, theirs, mine in differing_settings(resolved_settings(reference),
                                                resolved_settings(run_config)):
        if is_protocol_key(key):
            found.append({"key": key, "experiment": theirs, "run": mine})
    return sorted(replaced_components(found), key=lambda d: d["key"])


def replaced_components(found: list[dict]) -> list[dict]:
    """``found`` with the deviations below a component whose class (``_target_``) differs
    made one: ``{"key": the component, "experiment": ..., "run": ...}``, each side the
    component's settings that differ (its class first). The settings of two different
    classes (the paper's data source and the demo data's, say) are not one setting changed
    each, so they are not listed key by key."""
    components = [d["key"][: -len(TARGET_SUFFIX)] for d in found if d["key"].endswith(TARGET_SUFFIX)]
    kept = [d for d in found if not any(_under(d["key"], c) for c in components)]
    for component in components:
        below = sorted((d for d in found if _under(d["key"], component)),
                       key=lambda d: (not d["key"].endswith(TARGET_SUFFIX), d["key"]))
        sides = {side: {d["key"][len(component) + 1:]: d[side] for d in below
                        if d[side] != MISSING} for side in ("experiment", "run")}
        kept.append({"key": component, **sides})
    return kept


def differing_settings(first, second, prefix: str = ""):
    """``(dotted key, first's value, second's value)`` wherever two nested settings differ
    (:data:`MISSING` for a key only one of them has)."""
    if isinstance(first, dict) and isinstance(second, dict):
        for key in list(first) + [k for k in second if k not in first]:
            yield from differing_settings(first.get(key, MISSING), second.get(key, MISSING),
                                          f"{prefix}.{key}" if prefix else str(key))
    elif not same_value(first, second):
        yield prefix, first, second


def experiment_config(experiment: str, overrides: list[str]) -> DictConfig:
    """The experiment's own config: ``experiment=NAME`` plus those of ``overrides`` that set
    one of the experiment's swept settings to one of the values it sweeps, or a setting of
    :data:`RUN_TO_RUN` (the seed) to any value.

    The experiment alone is composed once per process (:func:`experiment_alone`); when every
    kept override sets a value (not a config group, not ``+key``), the values are set on a
    copy of it as Hydra's compose sets them (merged, before any interpolation is resolved);
    otherwise (a group choice: the loss of study 5's arms) Hydra composes."""
    base = [f"{EXPERIMENT_GROUP}={experiment}"]
    alone = experiment_alone(experiment)
    swept = sweep_values(alone.hydra.sweeper.get("params") or {})
    parser = OverridesParser.create()
    kept = []
    for text in overrides:
        override = parser.parse_override(text)
        if override.is_delete() or override.is_sweep_override():
            continue
        key = override.key_or_group
        if key in RUN_TO_RUN or (key in swept and (swept[key] is None or any(
                same_value(override.value(), v) for v in swept[key]))):
            kept.append((text.lstrip("+"), override))
    groups = set(alone.hydra.runtime.choices)
    if any(o.key_or_group.replace(".", "/") in groups or o.package or o.is_add() or o.is_force_add()
           for _, o in kept):
        return compose_config(base + [text for text, _ in kept])
    config = copy.deepcopy(alone)
    with open_dict(config):
        for _, override in kept:
            OmegaConf.update(config, override.key_or_group, override.value(), merge=True)  # as Hydra
    return config


def experiment_alone(experiment: str) -> DictConfig:
    """``experiment=NAME`` composed (:func:`compose_config`), once per config tree in a
    process: every job of a sweep asks for the same experiment's. Not to be changed."""
    key = (experiment, _config_tree())
    if key not in _EXPERIMENTS_ALONE:
        _EXPERIMENTS_ALONE[key] = compose_config([f"{EXPERIMENT_GROUP}={experiment}"])
    return _EXPERIMENTS_ALONE[key]


def _config_tree() -> tuple[str, ...]:
    """Where :func:`compose_config` finds configs: the running Hydra's search path, or
    medrepro's config tree."""
    if GlobalHydra.instance().is_initialized():
        search_path = GlobalHydra.instance().config_loader().get_search_path()
        return tuple(f"{e.provider}:{e.path}" for e in search_path.get_path())
    return (str(CONFIG_DIR),)


def sweep_values(params) -> dict[str, list | None]:
    """Swept key -> the values it takes (``None`` when they cannot be listed, e.g. an
    interpolated range: any value is then the protocol's)."""
    parser = OverridesParser.create()
    values = {}
    for key, spec in dict(params).items():
        try:
            override = parser.parse_override(f"{key}={spec}")
            values[key] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001  (an interpolation Hydra resolves only at sweep time)
            values[key] = None
    return values


def compose_config(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, the hydra node included: with the running
    job's Hydra instance, or a temporary one on medrepro's config tree."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=ROOT_CONFIG, overrides=overrides, return_hydra_config=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR), job_name=ROOT_CONFIG):
        return compose(config_name=ROOT_CONFIG, overrides=overrides, return_hydra_config=True)


def resolved_settings(config: DictConfig | dict):
    """``config`` as plain dicts and lists with its interpolations resolved where they can
    be (one that cannot, e.g. ``${hydra:...}`` outside a job, stays as written)."""
    if not isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.create(config)
    with contextlib.suppress(Exception):  # else: resolve what resolves, node by node
        return OmegaConf.to_container(config, resolve=True)
    raw = OmegaConf.to_container(config, resolve=False)
    keys = list(config.keys()) if isinstance(config, DictConfig) else range(len(config))
    resolved = {} if isinstance(config, DictConfig) else []
    for key in keys:
        try:
            value = config[key]
            value = resolved_settings(value) if isinstance(value, (DictConfig, ListConfig)) else value
        except Exception:  # noqa: BLE001  (kept as written)
            value = raw[key]
        if isinstance(resolved, dict):
            resolved[key] = value
        else:
            resolved.append(value)
    return resolved


def is_protocol_key(key: str) -> bool:
    """Whether ``key`` is compared (not under :data:`NOT_PROTOCOL`, or a callback setting
    of :data:`PROTOCOL_CALLBACKS`)."""
    if any(_under(key, kept) for kept in PROTOCOL_CALLBACKS):
        return True
    return not any(_under(key, excluded) for excluded in NOT_PROTOCOL)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def same_value(first, second) -> bool:
    """Equal as configured values: numbers by value (1 == 1.0, booleans only with
    booleans), anything else by equality."""
    if isinstance(first, bool) or isinstance(second, bool):
        return isinstance(first, bool) and isinstance(second, bool) and first == second
    if isinstance(first, (int, float)) and isinstance(second, (int, float)):
        return float(first) == float(second)
    return first == second


def run_folder_deviations(run_dir: str | Path, run_config: dict) -> dict:
    """``experiment`` and ``deviations`` of a finished run folder that did not record them
    (runs made before they were recorded): the experiment and the job's overrides from the
    folder's ``.hydra/`` files. ``deviations`` ``None`` without an experiment or ``.hydra/``."""
    hydra_dir = Path(run_dir) / ".hydra"
    try:
        hydra_yaml = OmegaConf.load(hydra_dir / "hydra.yaml")
        overrides = list(OmegaConf.load(hydra_dir / "overrides.yaml"))
    except (OSError, ValueError):
        return {"experiment": None, "deviations": None}
    choice = OmegaConf.select(hydra_yaml, "hydra.runtime.choices.experiment")
    if choice in (None, "null"):
        return {"experiment": None, "deviations": None}
    return {"experiment": str(choice), "deviations": deviations(run_config, str(choice), overrides)}
