"""Parallel sweeps on one machine: ``-m hydra/launcher=joblib hydra.launcher.n_jobs=2``
runs two jobs at once, each with a GPU of its own and its share of the CPU threads
(medrepro/jobs/job_resources.py), and the report is written once, after the last job.

Real processes: ``train.py`` with Hydra's joblib launcher (loky workers), the smoke
version of ``experiment=brain_mri_inception`` with ``test_resnet`` on demo data, four jobs
(``seed=0,1,2,3``). The machine has no GPU: the sweep is started with
``CUDA_VISIBLE_DEVICES=0,1`` (two GPUs it may use) and trains on the CPU
(``trainer.accelerator=cpu``), so what is checked is the assignment each job received.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TINY_RUN, multirun_mode_config
from joblib import cpu_count

from medrepro.jobs.job_runner import run_job
from medrepro.jobs.report.runs import load_runs

PARALLEL = 2
SEEDS = (0, 1, 2, 3)
SWEEP = ["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={PARALLEL}",
         "experiment=brain_mri_inception", "debug=smoke", "model.name=test_resnet",
         "trainer.max_epochs=3", "~callbacks.run_plots", "~callbacks.failure_gallery", "hydra.callbacks.sweep_report.resamples=200"]
# the GPUs the sweep may use, and thread counts the shell set that a job must not keep
# (joblib passes them on to its workers as it finds them; torch follows both)
ENVIRONMENT = {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def sweep(sweep_dir: Path, demo_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The sweep, with a cache folder of its own (the jobs build the image cache with
    worker processes inside joblib's workers) and a training loader with a worker process:
    a loky worker's own default start method once broke both."""
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *SWEEP, f"paths.demo_dir={demo_dir}",
         f"paths.cache_dir={sweep_dir.parent / 'cache'}", "data.loader.num_workers=1",
         f"hydra.sweep.dir={sweep_dir}", *extra],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), **ENVIRONMENT},
    )


@pytest.fixture(scope="module")
def four_jobs(tmp_path_factory, demo_dir) -> tuple[Path, subprocess.CompletedProcess]:
    sweep_dir = tmp_path_factory.mktemp("parallel") / "sweep"
    finished = sweep(sweep_dir, demo_dir, f"seed={','.join(map(str, SEEDS))}")
    return sweep_dir, finished


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def active_time(run_dir: Path) -> tuple[datetime, datetime]:
    """When the job logged its first and its last record (train.log, in milliseconds)."""
    stamps = [line[1:24] for line in (run_dir / "train.log").read_text().splitlines()
              if line.startswith("[20")]
    return (datetime.strptime(stamps[0], "%Y-%m-%d %H:%M:%S,%f"),
            datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f"))


def overlapping_pairs(sweep_dir: Path) -> list[tuple[int, int]]:
    times = {seed: active_time(sweep_dir / str(seed)) for seed in SEEDS}
    return [(a, b) for a, b in combinations(SEEDS, 2)
            if max(times[a][0], times[b][0]) < min(times[a][1], times[b][1])]


@pytest.mark.slow  # one real four-job sweep: 30 s on an idle 2-core machine, 60-100 s on a busy one
def test_four_jobs_run_two_at_a_time_and_the_report_covers_all_four(four_jobs):
    """Every job completes in its own run folder; two jobs ran at the same time, never
    more; the report, written after the last job ended, covers the four runs."""
    sweep_dir, finished = four_jobs
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "4 jobs: 4 completed, 0 failed, 0 diverged" in finished.stdout
    for seed in SEEDS:
        job = results(sweep_dir / str(seed))
        assert job["status"] == "completed" and job["config"]["seed"] == seed
        assert (sweep_dir / str(seed) / "predictions.csv").is_file()
        assert (sweep_dir / str(seed) / "checkpoints" / "last.ckpt").is_file()
    # jobs really ran at the same time, and never more than n_jobs of them
    times = {seed: active_time(sweep_dir / str(seed)) for seed in SEEDS}
    assert overlapping_pairs(sweep_dir), times
    for start, _ in times.values():
        running = [seed for seed, (a, b) in times.items() if a <= start < b]
        assert len(running) <= PARALLEL, times
    # the report was written once every job had ended, from all four run folders
    report = sweep_dir / "summary.md"
    assert report.stat().st_mtime >= max(end for _, end in times.values()).timestamp()
    assert [(run.job, run.seed, run.status) for run in load_runs(sweep_dir)] == [
        (seed, seed, "completed") for seed in SEEDS]
    table = pd.read_csv(sweep_dir / "summary.csv")
    rows = table[(table.metric == "test/acc") & (table.row == "run")]
    assert sorted(rows.seed.astype(int)) == list(SEEDS)
    for seed in SEEDS:
        reported = rows[rows.seed.astype(int) == seed].value.item()
        assert reported == pytest.approx(results(sweep_dir / str(seed))["test"]["acc"])
    assert f"{sweep_dir}/summary.md" in finished.stdout


@pytest.mark.slow  # one real four-job sweep: 30 s on an idle 2-core machine, 60-100 s on a busy one
def test_jobs_at_the_same_time_got_different_gpus_and_a_share_of_the_threads(four_jobs):
    """results.json's ``resources``: one of the two GPUs per job, different GPUs for jobs
    that overlapped in time, and cores // n_jobs threads, which torch reports too."""
    sweep_dir, finished = four_jobs
    assert finished.returncode == 0, finished.stderr[-3000:]
    share = max(cpu_count() // PARALLEL, 1)
    resources = {seed: results(sweep_dir / str(seed))["resources"] for seed in SEEDS}
    for seed, got in resources.items():
        assert got["gpu"] in ("0", "1"), resources  # one of the sweep's GPUs, never both
        assert got["threads"] == share, resources
        # torch's own count, recorded with the device the job ran on
        assert results(sweep_dir / str(seed))["device"]["cpu_threads"] == share
    pairs = overlapping_pairs(sweep_dir)
    assert pairs
    for a, b in pairs:
        assert resources[a]["gpu"] != resources[b]["gpu"], (a, b, resources)


def test_more_jobs_at_once_than_gpus_stops_the_job_with_one_sentence(tmp_path, demo_dir, capsys,
                                                                      monkeypatch):
    """Three jobs at once on two GPUs: two jobs would share one, so each job stops before it
    reads the data, with one sentence in results.json and on the console (a job of the
    sweep, run in this process as a joblib worker runs it)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    run_dir = tmp_path / "sweep" / "0"
    cfg = multirun_mode_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "data=demo_brain_mri",
                                *TINY_RUN, "model.name=test_resnet"], run_dir, demo_dir)
    assert math.isnan(run_job(cfg))  # the sweep goes on with its next job
    sentence = ("hydra.launcher.n_jobs runs 3 jobs at once, but the sweep sees 2 GPU(s) (0,1) and "
                "two jobs never share one: set hydra.launcher.n_jobs=2 or fewer, or train on the "
                "CPU with trainer.accelerator=cpu.")
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines()[-1] == f"Error: {sentence}" and "Traceback" not in stderr
    job_results = results(run_dir)
    assert (job_results["status"], job_results["error"]) == ("failed", sentence)
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"]  # no data read, no training
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
