"""``results.json``: what ran and what it gave, readable without anything else."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from medrepro.core.checkpoint_epochs import epochs_ended
from medrepro.core.environment import device_description, package_versions
from medrepro.core.precision import AUTO, choose_precision
from medrepro.core.run_folder import METRICS_CSV, RESULTS_JSON, is_inside, now, write_results


class ResultsJSON(pl.Callback):
    """Resolved config, data facts, final validation and test metrics, confusion
    matrices, seconds per epoch, versions and device, and for a resumed fit the checkpoint
    it resumed from (``resumed_from``: file and epoch). Rewritten after every stage, with
    ``status`` ``running`` until the test stage has ended, then ``completed``.

    ``operating_point`` (the decision threshold, its rule and where it was chosen, with the
    validation sensitivity and specificity at it; ``None`` for a multi-class task) and
    ``calibration`` (method, temperature, ECE, MCE and Brier score before and after it on
    the validation and test sets) are the module's public attributes of the same names,
    recorded once the tested checkpoint is validated and again once it is tested.

    Everything comes from explicit interfaces, never from another callback: the trainer's
    logged metrics and checkpoint callback, the module's ``class_names``,
    ``confusion_matrices``, ``operating_point`` and ``calibration``, the data module, and the run folder's ``metrics.csv`` (read in
    ``on_fit_end``, once every callback's ``on_train_end`` has written it).

    ``batch_size`` records how many images one optimizer step sees: ``per_process`` (the
    data loader's batch, ``trainer.batch_size``) times ``processes`` (DDP: one per device)
    times ``accumulate_grad_batches``. In a multi-process job every process keeps the
    record (the metrics are synchronised across processes) and the first one writes it.
    """

    def __init__(self, output_dir: str, run_config: dict | None = None) -> None:
        self.run_dir = Path(output_dir)
        self.path = self.run_dir / RESULTS_JSON
        self.results: dict = {"status": "running", "run_dir": str(Path(output_dir).resolve())}
        if run_config is not None:
            self.results["config"] = run_config
        self._started = time.perf_counter()
        self._evaluated_checkpoint: dict | None = None  # what validate/test loaded

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in ("validate", "test"):  # setup comes before the stage loads its checkpoint
            self._evaluated_checkpoint = None
        if "started_at" not in self.results:
            self.results["started_at"] = now()
            self.results["versions"] = package_versions()
            accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
            self.results["device"] = device_description(accelerator)
            self.results["resources"] = _job_resources()
            self.results["precision"] = str(trainer.precision)
            self.results["precision_reason"] = _precision_reason(
                trainer, accelerator, self.results.get("config"))
            self.results["batch_size"] = _batch_size(trainer, self.results.get("config"))
            self.results["data"] = _data_facts(trainer.datamodule)
            self.write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results["val_final_epoch"] = _stage_metrics(trainer, "val")
        self.results["epochs_run"] = trainer.current_epoch  # epochs completed
        seconds = _epoch_seconds(self.run_dir / METRICS_CSV)
        if seconds:
            self.results["epoch_seconds"] = seconds
            self.results["seconds_per_epoch"] = round(sum(seconds) / len(seconds), 3)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
            self.results["checkpoint"] = {
                "best": checkpoint.best_model_path,
                "monitor": checkpoint.monitor,
                "best_score": _number(checkpoint.best_model_score),
                "last": getattr(checkpoint, "last_model_path", "") or None,
            }
        self.write(trainer)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        if trainer.state.fn in ("validate", "test"):
            self._evaluated_checkpoint = self._checkpoint_record(trainer.ckpt_path, checkpoint)
        elif trainer.state.fn == "fit":  # a resumed fit (ckpt_path)
            self.results["resumed_from"] = self._resume_record(trainer.ckpt_path, checkpoint)
            self.write(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.results["val"] = _stage_metrics(trainer, "val")
            self._confusion(pl_module, "val")
            self._operating_point(pl_module)
            self.results["tested_checkpoint"] = self._tested_checkpoint(trainer)
            self.write(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results["tested_checkpoint"] = self._tested_checkpoint(trainer)
        self.results["test"] = _stage_metrics(trainer, "test")
        self._confusion(pl_module, "test")
        self._operating_point(pl_module)
        self.results["status"] = "completed"
        self.results["finished_at"] = now()
        self.results["total_seconds"] = round(time.perf_counter() - self._started, 1)
        self.write(trainer)

    def _tested_checkpoint(self, trainer: pl.Trainer) -> dict:
        """``which`` (``test_checkpoint``), ``file`` (in the run folder; ``links_to`` the
        file that holds it, for a link) and ``epoch`` (counted from 1, as in metrics.csv) of
        the checkpoint that was validated and tested; ``file: null`` for the weights in memory
        after the fit (the final epoch's), when no checkpoint was saved."""
        if self._evaluated_checkpoint is not None:
            return self._evaluated_checkpoint
        return {"which": "last", "file": None, "epoch": trainer.current_epoch}

    def _checkpoint_record(self, ckpt_path, checkpoint: dict) -> dict:
        which = (self.results.get("config") or {}).get("test_checkpoint")
        record = {"which": which, "file": None, "epoch": epochs_ended(checkpoint)}
        if ckpt_path:
            path = Path(ckpt_path)
            run_dir = os.path.realpath(self.run_dir)
            named = os.path.join(os.path.realpath(path.parent), path.name)  # the link itself
            record["file"] = os.path.relpath(named, run_dir)
            if path.is_symlink():
                record["links_to"] = os.path.relpath(os.path.realpath(path), run_dir)
        return record

    def _resume_record(self, ckpt_path, checkpoint: dict) -> dict:
        """``file`` (relative to the run folder when inside it) and ``epoch`` (counted from 1,
        as in metrics.csv: the epochs it holds) of the checkpoint a resumed fit started from."""
        path = os.path.abspath(ckpt_path)
        inside = is_inside(path, self.run_dir)
        return {"file": os.path.relpath(path, self.run_dir) if inside else path,
                "epoch": epochs_ended(checkpoint)}

    def _confusion(self, pl_module: pl.LightningModule, stage: str) -> None:
        matrix = getattr(pl_module, "confusion_matrices", {}).get(stage)
        if matrix is not None:
            self.results.setdefault("confusion_matrix", {})[stage] = {
                "classes": list(pl_module.class_names),
                "rows_true_columns_predicted": matrix,
            }

    def _operating_point(self, pl_module: pl.LightningModule) -> None:
        for key in ("operating_point", "calibration"):
            if hasattr(pl_module, key):
                self.results[key] = getattr(pl_module, key)

    def write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            write_results(self.path, self.results)


def _stage_metrics(trainer: pl.Trainer, stage: str) -> dict[str, float]:
    prefix = f"{stage}/"
    return {
        key[len(prefix):]: _number(value)
        for key, value in sorted(trainer.callback_metrics.items())
        if key.startswith(prefix)
    }


def _epoch_seconds(metrics_csv: Path) -> list[float]:
    """The ``epoch_seconds`` column of the run's metrics.csv (empty when there is none)."""
    if not metrics_csv.is_file():
        return []
    history = pd.read_csv(metrics_csv)
    return [float(s) for s in history["epoch_seconds"]] if "epoch_seconds" in history else []


def _precision_reason(trainer: pl.Trainer, accelerator: str, config: dict | None) -> str | None:
    """Why the run has its precision: the configured value, or what ``auto`` chose on this
    hardware (medrepro.core.precision); ``None`` without the run's configuration, or when the
    trainer was built with another precision than ``auto`` chooses here."""
    if config is None:
        return None
    requested = (config.get("trainer") or {}).get("precision") or AUTO
    choice = choose_precision(requested, accelerator)
    if requested == AUTO and str(choice.precision) != str(trainer.precision):
        return None
    return choice.reason


def _batch_size(trainer: pl.Trainer, config: dict | None) -> dict[str, int | None]:
    """Images per data-loader batch in each process, processes, and images per optimizer
    step (``None`` where the batch size is unknown)."""
    per_process = getattr(trainer.datamodule, "batch_size", None)
    if per_process is None:
        per_process = ((config or {}).get("trainer") or {}).get("batch_size")
    accumulate = int(trainer.accumulate_grad_batches)
    return {
        "per_process": per_process,
        "processes": trainer.world_size,
        "accumulate_grad_batches": accumulate,
        "per_optimizer_step": None if per_process is None else per_process * trainer.world_size * accumulate,
    }


def _job_resources() -> dict:
    """What the job runs with: ``gpu``, its ``CUDA_VISIBLE_DEVICES`` (the GPU a parallel
    sweep gave it, see medrepro.jobs.job_resources; ``None``: not narrowed), and
    ``threads``, torch's CPU threads."""
    return {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": torch.get_num_threads()}


def _data_facts(datamodule) -> dict:
    return datamodule.data_facts() if datamodule is not None and hasattr(datamodule, "data_facts") else {}


def _number(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
