"""Read the run folders of a sweep: results.json, metrics.csv, predictions.csv, overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from medrepro.core.errors import UserError
from medrepro.core.run_folder import METRICS_CSV, PREDICTIONS_CSV, RESULTS_JSON


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

    @property
    def seed(self):
        return self.config.get("seed", self.overrides.get("seed"))

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def metric(self, key: str) -> float | None:
        """``train/x`` (last epoch of metrics.csv), ``val/x`` (the tested checkpoint),
        ``test/x`` or a top-level number such as ``seconds_per_epoch``."""
        stage, _, name = key.partition("/")
        if not name:
            value = self.results.get(key)
        elif stage == "train":
            column = f"train/{name}"
            value = None
            if self.history is not None and column in self.history and len(self.history):
                value = self.history[column].iloc[-1]
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
    predictions = _read_csv(folder / PREDICTIONS_CSV) if status == "completed" else None
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
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
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
