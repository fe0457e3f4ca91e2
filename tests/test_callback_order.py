"""The run-folder callbacks do not depend on each other's order: the same training with
``conf/callbacks/default.yaml``'s callbacks reversed writes the same run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_RUN, compose_config
from omegaconf import OmegaConf, open_dict

from medrepro.core.run_folder import (
    METRICS_CSV,
    PLOTS_FOLDER,
    PREDICTIONS_CSV,
    RESULTS_JSON,
    SPLIT_CSV,
)
from medrepro.jobs.training import train

OVERRIDES = ["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet", "trainer.max_epochs=2"]
# what may differ between two runs of the same config: clocks, and where the run folder is
TIMINGS = ("started_at", "finished_at", "total_seconds", "epoch_seconds", "seconds_per_epoch")


def run(run_dir: Path, demo_dir: Path, reverse: bool) -> Path:
    # each run builds its own image cache, so that both read their images the same way
    cfg = compose_config([*OVERRIDES, f"paths.cache_dir={run_dir.parent / (run_dir.name + '_cache')}"],
                         run_dir, demo_dir=demo_dir)
    names = list(cfg.callbacks)
    if reverse:
        callbacks = OmegaConf.to_container(cfg.callbacks)
        with open_dict(cfg):
            cfg.callbacks = {name: callbacks[name] for name in reversed(names)}
    assert list(cfg.callbacks) == (names[::-1] if reverse else names)
    train(cfg)
    return run_dir


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> tuple[Path, Path]:
    demo_dir = tmp_path_factory.mktemp("demo")
    default = run(tmp_path_factory.mktemp("default_order"), demo_dir, reverse=False)
    reversed_ = run(tmp_path_factory.mktemp("reversed_order"), demo_dir, reverse=True)
    return default, reversed_


def files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def comparable_results(run_dir: Path) -> dict:
    """results.json without clocks, with this run folder's path replaced by a placeholder."""
    text = (run_dir / RESULTS_JSON).read_text().replace(str(run_dir.resolve()), "<run>")
    results = json.loads(text.replace(str(run_dir), "<run>"))
    return {key: value for key, value in results.items() if key not in TIMINGS}


def test_both_orders_write_the_same_files(run_folders):
    default, reversed_ = run_folders
    assert files(default) == files(reversed_)
    for name in (RESULTS_JSON, METRICS_CSV, PREDICTIONS_CSV, SPLIT_CSV, "checkpoints/last.ckpt",
                 f"{PLOTS_FOLDER}/learning_curves.png", f"{PLOTS_FOLDER}/confusion_matrix.png",
                 f"{PLOTS_FOLDER}/roc_curve.png"):
        assert (default / name).stat().st_size > 0, name
    assert not (default / "logs").exists()  # logger: none by default, one per-epoch metrics.csv


def test_both_orders_write_the_same_results(run_folders):
    default, reversed_ = run_folders
    first, second = comparable_results(default), comparable_results(reversed_)
    assert first["status"] == "completed" and first["epochs_run"] == 2
    assert first["checkpoint"]["best"].startswith("<run>/checkpoints/best-epoch")
    assert first == second


def test_both_orders_write_the_same_tables(run_folders):
    default, reversed_ = run_folders
    for run_dir in run_folders:
        history = pd.read_csv(run_dir / METRICS_CSV)
        assert list(history["epoch"]) == [1, 2]
        results = json.loads((run_dir / RESULTS_JSON).read_text())
        assert results["epoch_seconds"] == list(history["epoch_seconds"])  # read from metrics.csv
    pd.testing.assert_frame_equal(pd.read_csv(default / METRICS_CSV).drop(columns="epoch_seconds"),
                                  pd.read_csv(reversed_ / METRICS_CSV).drop(columns="epoch_seconds"))
    for name in (PREDICTIONS_CSV, SPLIT_CSV):
        assert (default / name).read_bytes() == (reversed_ / name).read_bytes(), name
