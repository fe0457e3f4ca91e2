"""Read the run folders of a sweep: results.json, metrics.csv, predictions.csv (test),
val_predictions.csv (validation; the out-of-fold predictions of a k-fold run), split.csv
(the patient ids) and the Hydra overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from medrepro.core.errors import UserError
from medrepro.core.run_folder import METRICS_CSV, PREDICTIONS_CSV, RESULTS_JSON, SPLIT_CSV

VAL_PREDICTIONS_CSV = "val_predictions.csv"


@dataclass
class Run:
    """One job of a sweep, as its run folder holds it."""

    folder: Path
    job: int
    status: str
    error: str | None
    config: dict
    overrides: dict[str, str]
    results: dict
    history: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    arm: str = field(default="")
    failed_at: str | None = None  # the job step it stopped in (see medrepro.jobs.job_steps)
    val_predictions: pd.DataFrame | None = None
    split: pd.DataFrame | None = None  # split.csv: path, label, patient_id, split

    @property
    def data(self) -> dict:
        return self.results.get("data") or {}

    @property
    def split_mode(self) -> str | None:
        return self.data.get("split_mode")

    @property
    def kfold(self) -> bool:
        return self.split_mode == "kfold"

    @property
    def fold(self) -> int | None:
        """The 0-based fold of a k-fold run (``None`` otherwise)."""
        fold = self.data.get("fold") if self.kfold else None
        return None if fold is None else int(fold)

    @property
    def folds(self) -> int | None:
        folds = self.data.get("folds") if self.kfold else None
        return None if folds is None else int(folds)

    @property
    def tested_epoch(self) -> int | None:
        """The epoch (counted from 1, as in metrics.csv) of the checkpoint that was
        validated and tested (results.json ``tested_checkpoint``); ``None`` if unrecorded."""
        epoch = (self.results.get("tested_checkpoint") or {}).get("epoch")
        return None if epoch is None else int(epoch)

    @property
    def final_epoch(self) -> int | None:
        if self.history is not None and "epoch" in self.history and len(self.history):
            return int(self.history["epoch"].iloc[-1])
        epochs = self.results.get("epochs_run")
        return None if epochs is None else int(epochs)

    def train_epoch(self) -> int | None:
        """The metrics.csv epoch that ``train/*`` values are read at: the tested epoch when
        metrics.csv holds it, else the final epoch."""
        if self.history is None or "epoch" not in self.history or not len(self.history):
            return None
        epochs = self.history["epoch"].astype(int).tolist()
        return self.tested_epoch if self.tested_epoch in epochs else epochs[-1]

    def metric_epoch(self, key: str) -> int | None:
        """The epoch a row of ``key`` comes from (``None`` where no single epoch applies)."""
        stage = key.partition("/")[0]
        if stage == "train":
            return self.train_epoch()
        if stage in ("val", "test"):
            return self.tested_epoch
        return None

    def patient_ids(self, frame: pd.DataFrame | None) -> list | None:
        """The patient id of each row of ``frame`` (a predictions table) from split.csv,
        matched by path; ``None`` for an image split.csv does not name or gives no id."""
        if frame is None or self.split is None or "patient_id" not in self.split:
            return None
        ids = dict(zip(self.split["path"], self.split["patient_id"]))
        return [ids.get(path) for path in frame["path"]]

    @property
    def seed(self):
        return self.config.get("seed", self.overrides.get("seed"))

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def metric(self, key: str) -> float | None:
        """``train/x`` (metrics.csv at the tested checkpoint's epoch, or at the final epoch
        when the run does not record it), ``val/x`` and ``test/x`` (the tested checkpoint),
        or a top-level number such as ``seconds_per_epoch``."""
        stage, _, name = key.partition("/")
        if not name:
            value = self.results.get(key)
        elif stage == "train":
            column = f"train/{name}"
            value = None
            epoch = self.train_epoch()
            if epoch is not None and column in self.history:
                rows = self.history[self.history["epoch"].astype(int) == epoch]
                value = rows[column].iloc[-1] if len(rows) else None
        else:
            value = (self.results.get(stage) or {}).get(name)
            if value is None and stage == "val":
                value = (self.results.get("val_final_epoch") or {}).get(name)
        return None if value is None or pd.isna(value) else float(value)

    def select(self, dotted: str):
        """A value of the run's configuration by dotted path (``None`` if absent)."""
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every job folder (a numbered sub-folder with results.json or a Hydra config) of
    ``sweep_dir``, ordered by job number."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"Sweep folder not found at {sweep_dir}; pass the folder of a multirun.")
    folders = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()
         and ((p / RESULTS_JSON).is_file() or (p / ".hydra").is_dir())),
        key=lambda p: int(p.name),
    )
    if not folders:
        raise UserError(
            f"{sweep_dir} holds no run folders (numbered sub-folders with results.json); "
            "pass the folder of a multirun, e.g. outputs/<task>/multiruns/<time>."
        )
    return [_load_run(folder) for folder in folders]


def _load_run(folder: Path) -> Run:
    results = _read_json(folder / RESULTS_JSON)
    config = results.get("config") or _hydra_config(folder)
    status = results.get("status") or "not started"
    if status == "running":
        status = "unfinished"
    history = _read_csv(folder / METRICS_CSV)
    completed = status == "completed"
    predictions = _read_csv(folder / PREDICTIONS_CSV) if completed else None
    val_predictions = _read_csv(folder / VAL_PREDICTIONS_CSV) if completed else None
    split = _read_csv(folder / SPLIT_CSV, dtype={"patient_id": str}) if completed else None
    return Run(
        folder=folder,
        job=int(folder.name),
        status=status,
        error=results.get("error"),
        config=config,
        overrides=_overrides(folder),
        results=results,
        history=history,
        predictions=predictions,
        failed_at=results.get("failed_at"),
        val_predictions=val_predictions,
        split=split,
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_csv(path: Path, **options) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError):
        return None


def _hydra_config(folder: Path) -> dict:
    path = folder / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    pairs = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)):
        key, _, value = str(item).partition("=")
        pairs[key.lstrip("+~")] = value
    return pairs
