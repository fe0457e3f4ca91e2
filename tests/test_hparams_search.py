"""``hparams_search=optuna``: Hydra's Optuna sweeper searches learning rate, batch size and
weight decay on a validation metric, records failed and diverged trials and goes on, keeps
its study in the sweep folder's SQLite file and continues it there.

The searches run as real ``python train.py -m`` subprocesses; their studies are read back
with Optuna itself (``optuna.load_study``) and compared with each job's results.json and
configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, TINY_DEMO, compose_config, ctrl_c_enabled
from omegaconf import OmegaConf

from medrepro.jobs.search.optuna_sweeper import direction_of

# tiny jobs: the search chooses the batch size, so TINY_RUN's trainer.batch_size=4 is left out
TINY_SEARCH_JOB = ["data=demo_pneumonia", *TINY_DEMO, "data.image_size=80", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
                   "trainer.enable_progress_bar=false", "logger=none", "model.name=test_resnet",
                   "model.pretrained=false", "hydra.callbacks.sweep_report.resamples=20"]
# learning rates from 1e-4 to 1e12: with the sampler's seed 351, trial 1 draws 6.3e11 (the job
# diverges) and trials 0, 2, 3 draw 1.5e-4 to 0.031 (they complete); weight decay comes from
# the search space in conf/hparams_search/
FORCED_FAILURE = ["hydra.sweeper.sampler.seed=351", "trainer.batch_size=choice(4,8)",
                  "optimizer.lr=tag(log,interval(1e-4,1e12))"]
SEARCHED = ("optimizer.lr", "trainer.batch_size", "optimizer.weight_decay")
STUDY_NAME = "search"  # hydra.sweeper.study_name


def search(sweep_dir: Path, demo_dir: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=optuna", *TINY_SEARCH_JOB,
               f"paths.demo_dir={demo_dir}", f"hydra.sweep.dir={sweep_dir}", *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def load_study(sweep_dir: Path):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def searched_values(config: dict) -> dict:
    """The searched keys' values in a job's resolved configuration (results.json's)."""
    return {key: OmegaConf.select(OmegaConf.create(config), key) for key in SEARCHED}


def files_of(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file below ``folder``: (modification time, SHA-256)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_trials_match_their_jobs(sweep_dir: Path, trials) -> None:
    """Trial N is job N: its parameters are the job's configuration; a COMPLETE trial's value
    is the job's validation loss (not its test loss); a FAIL trial's job did not complete."""
    for trial in trials:
        job = results(sweep_dir / str(trial.number))
        assert searched_values(job["config"]) == trial.params, trial.number
        assert job["config"]["optimized_metric"] == "val/loss"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert job["status"] == "completed", trial.number
            assert trial.value == job["val"]["loss"], trial.number
            assert trial.value != job["test"]["loss"], trial.number
        else:
            assert trial.state == optuna.trial.TrialState.FAIL, (trial.number, trial.state)
            assert job["status"] in ("diverged", "failed"), trial.number


@pytest.mark.slow
def test_a_search_records_a_diverged_trial_and_continues_its_study_in_the_same_folder(
        tmp_path, demo_dir):
    """Four trials, the second of which diverges: the study (read back from the sweep
    folder's optuna.db) holds 3 COMPLETE trials whose values are their jobs' val/loss and 1
    FAIL trial, minimised since the metric is a loss; optimization_results.yaml names the
    best; the report says which job diverged; exit status 1 as for any sweep with a failed
    job. The same command with n_trials=6 then runs trials 4 and 5 only, into job folders
    4 and 5, leaving folders 0-3 as they were, with other parameters than the first run's
    first trials (the sampler is seeded anew). Continuing it with another metric is refused."""
    sweep_dir = tmp_path / "sweep"
    first = search(sweep_dir, demo_dir, *FORCED_FAILURE, "optimized_metric=val/loss",
                   "hydra.sweeper.n_trials=4")
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr + first.stdout
    assert (f"4 jobs: 3 completed, 0 failed, 1 diverged; see {sweep_dir / 'summary.md'}"
            in first.stderr.splitlines())

    study = load_study(sweep_dir)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params["optimizer.lr"] > 1e9 > max(t.params["optimizer.lr"] for t in trials if t.number != 1)
    assert_trials_match_their_jobs(sweep_dir, trials)
    assert results(sweep_dir / "1")["status"] == "diverged"
    assert sorted({t.params["trainer.batch_size"] for t in trials}) == [4, 8]  # both choices drawn

    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(completed, key=lambda t: t.value)
    written = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    assert written == {"name": "optuna", "best_params": best.params, "best_value": best.value,
                       "best_trial": best.number, "optimized_metric": "val/loss",
                       "direction": "minimize", "trials": {"complete": 3, "fail": 1}}
    summary = (sweep_dir / "summary.md").read_text()
    assert f"- job 1 (1 of 4): diverged during training: {results(sweep_dir / '1')['error']}" in summary

    earlier = {job: files_of(sweep_dir / job) for job in "0123"}
    again = search(sweep_dir, demo_dir, *FORCED_FAILURE, "optimized_metric=val/loss",
                   "hydra.sweeper.n_trials=6")
    assert again.returncode in (0, 1), again.stderr[-3000:]
    assert "Traceback" not in again.stderr + again.stdout
    assert any(line.startswith("2 jobs: ") for line in (again.stdout + again.stderr).splitlines())

    continued = load_study(sweep_dir).trials
    assert [t.number for t in continued] == [0, 1, 2, 3, 4, 5]
    for before, after in zip(trials, continued[:4]):
        assert (after.state, after.params, after.value) == (before.state, before.params, before.value)
    assert {job: files_of(sweep_dir / job) for job in "0123"} == earlier
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3", "4", "5"]
    assert_trials_match_their_jobs(sweep_dir, continued[4:])
    assert continued[4].params != trials[0].params and continued[5].params != trials[1].params
    written = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert sum(written.trials.values()) == 6

    # the study records what it optimises: continuing it with another metric is refused
    other = search(sweep_dir, demo_dir, *FORCED_FAILURE, "optimized_metric=val/auroc",
                   "hydra.sweeper.n_trials=8")
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.strip().splitlines()[-1] == (
        f"Error: The study in {sweep_dir / 'optuna.db'} minimizes val/loss, not maximizes "
        "val/auroc: continue it with the same optimized_metric (and direction), or start this "
        "search in another sweep folder (hydra.sweep.dir).")
    assert len(load_study(sweep_dir).trials) == 6


def test_a_trial_that_repeats_a_finished_one_gets_its_value_without_a_job(tmp_path, demo_dir):
    """A space of single choices: every trial draws trial 0's parameters. Trial 0 runs (job
    0); trials 1 and 2 are told trial 0's value without a job: no folders 1 and 2, and
    folder 0 keeps its run (a job of the same configuration would have taken it into its
    own folder, leaving trial 0's empty)."""
    sweep_dir = tmp_path / "sweep"
    done = search(sweep_dir, demo_dir, "optimized_metric=val/loss", "hydra.sweeper.n_trials=3",
                  "optimizer.lr=choice(0.001)", "trainer.batch_size=choice(4)",
                  "optimizer.weight_decay=choice(0.0)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"1 job: 1 completed, 0 failed, 0 diverged; see {sweep_dir / 'summary.md'}" in done.stdout
    trials = load_study(sweep_dir).trials
    job = results(sweep_dir / "0")
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", job["val"]["loss"])] * 3
    assert [p.name for p in sweep_dir.iterdir() if p.name.isdigit()] == ["0"]
    assert job["status"] == "completed" and "moved_from" not in job


def test_a_search_on_a_test_metric_stops_with_one_sentence_before_any_job(tmp_path, demo_dir):
    """Tuning on the test set would make its score optimistic: the search refuses
    ``optimized_metric=test/...`` in one sentence, exit status 1, no job and no study."""
    sweep_dir = tmp_path / "sweep"
    done = search(sweep_dir, demo_dir, "optimized_metric=test/auroc", "hydra.sweeper.n_trials=2")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: hparams_search=optuna optimises a validation metric, not "
        "optimized_metric=test/auroc: a search on the test set would tune on it and report an "
        "optimistic test score; use e.g. optimized_metric=val/auroc or val/loss.")
    assert not sweep_dir.exists()  # no job folder, no optuna.db


def test_a_search_over_folds_stops_with_one_sentence_before_any_job(tmp_path, demo_dir):
    """With cv=kfold the folds are a sweep parameter: the search would tune the fold and report
    the one that scored best; it refuses in one sentence, exit status 1, no job, no study."""
    sweep_dir = tmp_path / "sweep"
    done = search(sweep_dir, demo_dir, "cv=kfold", "hydra.sweeper.n_trials=2")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: hparams_search=optuna cannot be combined with cv=kfold: the search would pick the "
        "fold that scores best; search first, then run cv=kfold with the settings it found.")
    assert not sweep_dir.exists()


EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_the_search_replaces_an_experiments_arm_sweep_and_keeps_its_protocol(experiment, tmp_path):
    """With an experiment, the search's space replaces the experiment's arms and seeds (its
    hydra.sweeper.params); the experiment's protocol (model, epochs, loss, checkpoint
    choice) stays; the metric is a validation metric, the study is stored in the sweep
    folder and the sweeper is medrepro's (which continues a study), also with debug=smoke."""
    chosen = [f"experiment={experiment}"] if experiment else []
    for smoke in ([], ["debug=smoke"] if experiment else []):
        plain = compose_config(chosen + smoke, tmp_path / "run")
        cfg = compose_config(["hparams_search=optuna", *chosen, *smoke], tmp_path / "run")
        assert str(cfg.optimized_metric).startswith("val/"), (experiment, cfg.optimized_metric)
        for key in ("model", "loss", "trainer.max_epochs", "test_checkpoint", "data.name"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(plain, key), key
    composed = _hydra_config(["hparams_search=optuna", *chosen])
    sweeper = composed.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.medrepro_search.OptunaSearchSweeper"
    assert dict(sweeper.params) == {"optimizer.lr": "tag(log, interval(1e-5, 1e-1))",
                                    "trainer.batch_size": "choice(8, 16, 32)",
                                    "optimizer.weight_decay": "choice(0.0, 1e-5, 1e-4, 1e-3)"}
    assert OmegaConf.to_container(sweeper, resolve=False)["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
    assert sweeper.direction == "auto" and sweeper.n_jobs == 1 and sweeper.max_failure_rate == 1.0


def _hydra_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("metric", "direction"), [
    ("val/auroc", "maximize"), ("val/acc", "maximize"), ("val/f1", "maximize"),
    ("val/recall_normal", "maximize"), ("val/loss", "minimize"), ("val/mse", "minimize"),
])
def test_the_direction_follows_the_metric(metric, direction):
    assert direction_of(metric) == direction


@pytest.mark.slow
def test_an_interrupted_search_resumes_its_running_trial_in_place_then_goes_on(tmp_path, demo_dir):
    """Ctrl-C (SIGINT to the process group) during trial 1's second epoch leaves trial 1
    RUNNING in the study and an interrupted job with a last.ckpt. The same command: trial 1
    is run again in job folder 1 and resumes from its last.ckpt; trial 1 is told its value;
    trial 2 follows in folder 2; 3 trials in all, n_trials counted over both runs."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=optuna",
               *TINY_SEARCH_JOB, "trainer.max_epochs=4", "trainer.limit_train_batches=12",
               "optimizer.lr=tag(log,interval(1e-4,1e-2))", "trainer.batch_size=choice(2)",
               "optimized_metric=val/loss", "hydra.sweeper.n_trials=3",
               f"paths.demo_dir={demo_dir}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, start_new_session=True, preexec_fn=ctrl_c_enabled)  # noqa: PLW1509
    last = sweep_dir / "1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not os.path.lexists(last):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "trial 1 wrote no last.ckpt"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    assert [t.state.name for t in load_study(sweep_dir).trials] == ["COMPLETE", "RUNNING"]
    assert results(sweep_dir / "1")["status"] == "interrupted"
    job0 = files_of(sweep_dir / "0")

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"2 jobs: 2 completed, 0 failed, 0 diverged; see {sweep_dir / 'summary.md'}" in done.stdout
    trials = load_study(sweep_dir).trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    resumed = results(sweep_dir / "1")
    assert resumed["resumed_from"]["file"] == "checkpoints/last.ckpt"
    assert resumed["epochs_run"] == 4
    assert files_of(sweep_dir / "0") == job0
    assert_trials_match_their_jobs(sweep_dir, trials)
