"""The Lightning loggers that the ``logger`` config group names, and the callbacks that go
with them.

Each logger config (conf/logger/) is a mapping *name -> logger settings*, so that several
compose: ``logger=many`` (CSV, TensorBoard and MLflow) or any choice, e.g.
``logger=[csv,tensorboard]``; ``logger.NAME=null`` leaves one out. With at least one
logger, three callbacks are added:

* Lightning's ``LearningRateMonitor``: the learning rate at the start of every epoch
  (``lr-Adam``, ...; it refuses a Trainer without a logger, hence only with one);
* :class:`ConfigAsHyperparameters`: the resolved configuration as hyper-parameters (MLflow
  parameters, TensorBoard's HPARAMS), flattened to ``group/key``;
* :class:`ResultsArtifact`: the run folder's results.json as an artifact of the MLflow run.

Lightning's loggers write on the first process (global rank 0) only; the others get a
dummy experiment.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlparse

import hydra
import pytorch_lightning as pl
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import Logger, MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from medrepro.core.errors import ConfigError
from medrepro.core.run_folder import RESULTS_JSON

# the characters MLflow allows in a parameter name; any other becomes "_"
NOT_IN_PARAMETER_NAMES = re.compile(r"[^\w\-. /]")


def with_loggers(cfg: DictConfig, callbacks: list[pl.Callback]) -> tuple[list[Logger] | bool,
                                                                          list[pl.Callback]]:
    """The Trainer's ``logger`` argument (the loggers, or ``False`` for none) and
    ``callbacks`` with the logging callbacks added when there is a logger."""
    loggers = build_loggers(cfg)
    if not loggers:
        return False, callbacks
    return loggers, [*callbacks, *logging_callbacks(cfg)]


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate the loggers of ``cfg.logger``, in order (empty for ``logger=none``)."""
    settings = cfg.get("logger") or {}
    if "_target_" in settings:  # a single logger's settings, as before loggers composed
        settings = {"logger": settings}
    loggers = []
    for name, one in settings.items():
        if not one:
            continue
        if not isinstance(one, DictConfig) or "_target_" not in one:
            raise ConfigError(f"logger.{name} is not a logger's settings (a mapping with "
                              "_target_); see conf/logger/.")
        loggers.append(hydra.utils.instantiate(one, _convert_="all"))
    return loggers


def logging_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [
        LearningRateMonitor(logging_interval="epoch"),
        ConfigAsHyperparameters(OmegaConf.to_container(cfg, resolve=True)),
        ResultsArtifact(Path(cfg.paths.output_dir) / RESULTS_JSON),
    ]


def flat_parameters(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"model": {"name": "x"}}`` -> ``{"model/name": "x"}``; lists stay values; names
    keep only the characters MLflow allows (a class name used as a key may have others)."""
    flat = {}
    for key, value in config.items():
        name = NOT_IN_PARAMETER_NAMES.sub("_", f"{prefix}{key}")
        if isinstance(value, dict) and value:
            flat.update(flat_parameters(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


class ConfigAsHyperparameters(pl.Callback):
    """Logs the resolved configuration to every logger once, when the fit starts (besides
    the model's own hyper-parameters, which Lightning logs)."""

    def __init__(self, config: dict) -> None:
        self.parameters = flat_parameters(config)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            for logger in trainer.loggers:
                logger.log_hyperparams(self.parameters)  # rank zero only (Lightning's decorator)


class ResultsArtifact(pl.Callback):
    """Uploads results.json to the MLflow run when the test stage ends (after the
    run-folder callbacks have written it: this callback comes after them)."""

    def __init__(self, results_file: Path) -> None:
        self.results_file = Path(results_file)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.results_file.is_file():
            return
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(self.results_file))


class MLflowRunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the run named after its run folder, and a SQLite store
    that the parallel jobs of a sweep can share.

    Args:
        experiment_name: the MLflow experiment (the config gives ``task_name``).
        run_folder: the job's run folder; the MLflow run is named after it, relative to the
            folder the command was started in (else its full path), and tagged ``run_dir``.
        tracking_uri: ``sqlite:///ABSOLUTE/PATH.db`` (created on first use, under a file
            lock beside it) or a tracking server's address.
        artifact_location: where a new experiment keeps its artifacts; ``None``: the
            folder ``mlartifacts`` beside a SQLite store, a server's own choice otherwise.
        settings: the rest of MLFlowLogger's arguments (``log_model``, ``tags``, ...).
    """

    def __init__(self, experiment_name: str, run_folder: str, tracking_uri: str,
                 artifact_location: str | None = None, **settings) -> None:
        folder = Path(run_folder).resolve()
        database = sqlite_file(tracking_uri)
        self.store_lock_file = None if database is None else f"{database}.lock"
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            if artifact_location is None:
                artifact_location = (database.parent / "mlartifacts").as_uri()
        tags = {"run_dir": str(folder), **(settings.pop("tags", None) or {})}
        with self._store_lock():  # MLflow's client opens (and first creates) the store here
            super().__init__(experiment_name=experiment_name, run_name=run_name_of(folder),
                             tracking_uri=tracking_uri, tags=tags,
                             artifact_location=artifact_location, **settings)

    @property
    @rank_zero_experiment
    def experiment(self):
        # the first use looks the experiment up, creates it if missing, then the run: two
        # jobs doing so at once would both create the experiment, and one would fail
        with nullcontext() if self._initialized else self._store_lock():
            return super().experiment

    def _store_lock(self):
        # a FileLock made when needed: the logger stays picklable (spawned DDP processes)
        if self.store_lock_file is None:
            return nullcontext()
        return FileLock(self.store_lock_file, timeout=600)


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` tracking URI, else ``None`` (SQLAlchemy's
    form: ``sqlite:///relative.db``, ``sqlite:////absolute.db``)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite" or parsed.path in ("", "/", "/:memory:"):
        return None
    return Path(parsed.path[1:])


def run_name_of(folder: Path) -> str:
    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)
