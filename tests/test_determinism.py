"""The same seed gives the same numbers: with ``trainer.deterministic=true`` on a CPU, the run
that builds the image cache and a later run that reads it write byte-identical
predictions.csv and the same metrics, and so do two runs without the cache; and nothing the
data module does outside training (demo generation, splitting, the checks before training,
the cache build, the audit) draws from the global torch, numpy or Python random state.
About 25 s."""

from __future__ import annotations

import json
import random
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import TINY_DEMO, compose_config, two_class_folder

from medrepro.datamodules.audit.data_audit import audit_data
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.jobs.job_runner import run_job

RUN = ["data=folder", "model.name=test_resnet", "data.loader.num_workers=0",
       "trainer.accelerator=cpu", "trainer.deterministic=true", "seed=7", "augment=basic",
       "data.image_size=32", "trainer.batch_size=4", "trainer.max_epochs=2",
       "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false", "logger=none"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """``a/`` and ``b/``, 12 distinct 32-pixel images each (b brighter, so the model learns
    something and its probabilities differ between images)."""
    return two_class_folder(tmp_path_factory.mktemp("images"), per_class=12, seed=11)


@pytest.fixture
def restore_torch_flags():
    """``trainer.deterministic=true`` switches torch's deterministic algorithms on for the
    whole process; switch them back for the other tests."""
    enabled = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = benchmark


def run(run_dir: Path, root: Path, *overrides: str) -> tuple[bytes, dict]:
    """One run through the real job entry: its predictions.csv (bytes) and results.json."""
    cfg = compose_config([*RUN, f"data.root={root}", *overrides], run_dir)
    run_dir.mkdir()  # Hydra makes the run folder before the job starts
    run_job(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    return (run_dir / "predictions.csv").read_bytes(), results


def test_the_run_that_builds_the_cache_and_the_run_that_reads_it_give_the_same_numbers(
        tmp_path, image_folder, one_torch_thread, restore_torch_flags):
    cache = f"data.cache.dir={tmp_path / 'cache'}"
    built_predictions, built = run(tmp_path / "builds", image_folder, cache)
    [array_file] = (tmp_path / "cache").glob("*.npy")
    written = array_file.stat().st_mtime_ns
    read_predictions, read = run(tmp_path / "reads", image_folder, cache)
    assert array_file.stat().st_mtime_ns == written  # the second run only read the cache
    assert built_predictions == read_predictions
    assert built["test"] == read["test"] and built["val"] == read["val"]
    assert len(built_predictions.splitlines()) == 1 + 4  # a header and the 4 test images


def test_two_runs_without_the_cache_give_the_same_numbers(
        tmp_path, image_folder, one_torch_thread, restore_torch_flags):
    off = ["data.cache.enabled=false", f"data.cache.dir={tmp_path / 'facts'}"]
    first_predictions, first = run(tmp_path / "first", image_folder, *off)
    second_predictions, second = run(tmp_path / "second", image_folder, *off)
    assert first_predictions == second_predictions
    assert first["test"] == second["test"] and first["val"] == second["val"]


def random_states() -> tuple:
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def assert_same_states(before: tuple, after: tuple, step: str) -> None:
    assert torch.equal(before[0], after[0]), f"{step} drew from torch's global random state"
    assert np.array_equal(before[1], after[1]), f"{step} drew from numpy's global random state"
    assert before[2] == after[2], f"{step} drew from Python's global random state"


@pytest.mark.parametrize("cache", ["true", "false"])
def test_the_data_steps_outside_training_leave_the_global_random_state_alone(tmp_path, cache):
    """Demo generation, the split, the checks before training (with the cache build or the
    decoding pass) and the full audit (perceptual hashes): each leaves the global torch,
    numpy and Python random states exactly as it found them."""
    cfg = compose_config(["data=demo_pneumonia", *TINY_DEMO, "data.image_size=32",
                          "data.loader.num_workers=0", f"data.cache.enabled={cache}",
                          f"data.cache.dir={tmp_path / 'cache'}"],
                         tmp_path / "run", demo_dir=tmp_path / "demo")
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    for step, action in (("demo generation", module.prepare_data),
                         ("the split", lambda: module.setup("fit")),
                         ("the checks before training", lambda: check_before_training(module)),
                         ("the audit", lambda: audit_data(module.manifest, quick=False))):
        before = random_states()
        action()
        assert_same_states(before, random_states(), step)
    assert (module.image_cache is not None) == (cache == "true")
