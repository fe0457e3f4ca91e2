"""``logger=tensorboard``, ``logger=mlflow`` and ``logger=many``: real two-epoch runs whose
logs are read back with TensorBoard's and MLflow's own readers and compared with the run
folder (metrics.csv, results.json) and with the learning rate the step schedule gives,
computed here from the optimiser's rate; parallel jobs share one fresh MLflow SQLite store.
About 35 s on a 2-core CPU (and 40 s more for the slow parallel sweep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import REPO, compose_config, two_class_folder
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medrepro.jobs.job_runner import run_job

LR, GAMMA, EPOCHS = 0.004, 0.25, 2
RUN = ["data=folder", "model.name=test_resnet", "model.pretrained=false", "data.image_size=32",
       "data.loader.num_workers=0", "trainer.accelerator=cpu", "trainer.batch_size=4",
       f"trainer.max_epochs={EPOCHS}", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
       "trainer.enable_progress_bar=false", f"optimizer.lr={LR}", "scheduler=step",
       "scheduler.step_size=1", f"scheduler.gamma={GAMMA}", "task_name=logger_check"]
# the learning rate of each epoch under StepLR(step_size=1), from the optimiser's rate
EXPECTED_LR = [LR * GAMMA ** epoch for epoch in range(EPOCHS)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """``a/`` and ``b/``, 10 distinct 32-pixel images each."""
    return two_class_folder(tmp_path_factory.mktemp("images"), per_class=10, seed=3)


@pytest.fixture
def in_tmp_folder(tmp_path, monkeypatch):
    """Run from ``tmp_path`` (where the default MLflow store, outputs/mlflow.db, goes) and
    leave MLflow's process-wide tracking URI (and MLFLOW_TRACKING_URI) as it was."""
    monkeypatch.chdir(tmp_path)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield tmp_path
    mlflow.set_tracking_uri(before)


def run_in_process(run_dir: Path, images: Path, *overrides: str) -> dict:
    cfg = compose_config([*RUN, f"data.root={images}", *overrides], run_dir)
    run_dir.mkdir()
    run_job(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    return results


def fit_val_losses(run_dir: Path) -> list[float]:
    """The run folder's validation loss of each epoch of the fit."""
    history = pd.read_csv(run_dir / "metrics.csv")
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    return list(history["val/loss"])


def mlflow_history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_tensorboard_holds_each_epochs_learning_rate_and_metrics_csvs_values(
        in_tmp_folder, image_folder, one_torch_thread):
    run_dir = in_tmp_folder / "run"
    results = run_in_process(run_dir, image_folder, "logger=tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = {tag: [e.value for e in sorted(events.Scalars(tag), key=lambda e: e.step)]
               for tag in events.Tags()["scalars"]}
    assert scalars["lr-Adam"] == pytest.approx(EXPECTED_LR, rel=1e-6)  # float32 in the file
    # the fit's epochs, then the validation of the tested (best) checkpoint
    assert scalars["val/loss"][:EPOCHS] == pytest.approx(fit_val_losses(run_dir), rel=1e-6)
    assert scalars["val/loss"][EPOCHS:] == pytest.approx([results["val"]["loss"]], rel=1e-6)
    assert scalars["test/auroc"] == pytest.approx([results["test"]["auroc"]], rel=1e-6)
    hparams = OmegaConf.load(run_dir / "tensorboard" / "hparams.yaml")
    assert hparams["optimizer/lr"] == LR and hparams["model/name"] == "test_resnet"
    assert not (in_tmp_folder / "outputs").exists() and not (run_dir / "logs").exists()


def test_mlflow_holds_the_run_named_after_its_folder_with_config_metrics_and_results(
        in_tmp_folder, image_folder, one_torch_thread):
    run_dir = in_tmp_folder / "run"
    results = run_in_process(run_dir, image_folder, "logger=mlflow")
    client = MlflowClient(f"sqlite:///{in_tmp_folder / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("logger_check")  # task_name
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert mlflow_history(client, run.info.run_id, "lr-Adam") == pytest.approx(EXPECTED_LR)
    val_loss = mlflow_history(client, run.info.run_id, "val/loss")
    assert val_loss == pytest.approx([*fit_val_losses(run_dir), results["val"]["loss"]], rel=1e-6)
    params = run.data.params
    assert (params["optimizer/lr"], params["scheduler/gamma"]) == (str(LR), str(GAMMA))
    assert params["model/name"] == "test_resnet" and params["data/root"] == str(image_folder)
    downloaded = client.download_artifacts(run.info.run_id, "results.json", str(in_tmp_folder))
    assert json.loads(Path(downloaded).read_text()) == results
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "logs").exists()


def test_a_process_other_than_rank_0_writes_no_log(in_tmp_folder):
    """What the Trainer and the logging callbacks call, in a process of global rank 1 (as
    Lightning marks it in a DDP job): no TensorBoard or CSV file and no MLflow run."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from medrepro.jobs.loggers import ConfigAsHyperparameters, build_loggers

    run_dir = in_tmp_folder / "run"
    cfg = compose_config([*RUN, "data.root=unused", "logger=many"], run_dir)
    rank = rank_zero_only.rank
    rank_zero_only.rank = 1
    try:
        loggers = build_loggers(cfg)
        parameters = ConfigAsHyperparameters({"optimizer": {"lr": LR}}).parameters
        for logger in loggers:
            logger.log_hyperparams(parameters)
            logger.log_metrics({"lr-Adam": LR, "val/loss": 0.5}, step=0)
            logger.save()
            logger.finalize("success")
    finally:
        rank_zero_only.rank = rank
    assert [type(one).__name__ for one in loggers] == ["CSVLogger", "TensorBoardLogger",
                                                       "MLflowRunLogger"]
    assert not run_dir.exists()
    client = MlflowClient(f"sqlite:///{in_tmp_folder / 'outputs' / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


STARTS_AT_ONCE = """
import sys, time
from pathlib import Path
from medrepro.jobs.loggers import MLflowRunLogger
barrier, number, count, uri = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
(barrier / number).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.001)
logger = MLflowRunLogger(experiment_name="shared", run_folder=f"job{number}", tracking_uri=uri)
logger.log_metrics({"job": float(number)}, step=0)
logger.finalize("success")
"""


def test_jobs_that_start_at_the_same_instant_share_a_new_sqlite_store(tmp_path):
    """Three processes released together create the store, the experiment and their runs:
    without the file lock, MLflow's schema creation and experiment creation collide."""
    count, uri = 3, f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    (tmp_path / "barrier").mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", STARTS_AT_ONCE, str(tmp_path / "barrier"),
                                   str(number), str(count), uri], cwd=tmp_path, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for number in range(count)]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), "\n".join(outputs)[-3000:]
    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "shared"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == [f"job{n}" for n in range(count)]
    assert sorted(run.data.metrics["job"] for run in runs) == list(range(count))


def test_many_writes_all_three_logs_with_the_same_values(in_tmp_folder, image_folder,
                                                         one_torch_thread):
    """``logger=many``: Lightning's CSV log, TensorBoard's events and the MLflow run, each
    with the learning rate of every epoch and the validation loss of metrics.csv."""
    run_dir = in_tmp_folder / "run"
    run_in_process(run_dir, image_folder, "logger=many")
    val_losses = fit_val_losses(run_dir)
    raw = pd.read_csv(run_dir / "logs" / "metrics.csv")
    assert list(raw["lr-Adam"].dropna()) == pytest.approx(EXPECTED_LR)
    assert list(raw["val/loss"].dropna())[:EPOCHS] == pytest.approx(val_losses, rel=1e-6)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("lr-Adam")] == pytest.approx(EXPECTED_LR, rel=1e-6)
    assert [e.value for e in events.Scalars("val/loss")][:EPOCHS] == pytest.approx(val_losses,
                                                                                  rel=1e-6)
    client = MlflowClient(f"sqlite:///{in_tmp_folder / 'outputs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("logger_check").experiment_id])
    assert mlflow_history(client, run.info.run_id, "lr-Adam") == pytest.approx(EXPECTED_LR)
    assert mlflow_history(client, run.info.run_id, "val/loss")[:EPOCHS] == pytest.approx(
        val_losses, rel=1e-6)


@pytest.mark.slow
def test_the_jobs_of_a_parallel_sweep_share_the_mlflow_store(tmp_path, image_folder):
    """Two jobs of a sweep run at once (joblib) with ``logger=many``: one experiment, a
    finished run per job named after its folder, each with its own job's values. About 30 s."""
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *RUN, f"data.root={image_folder}",
         "logger=many", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("logger_check")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["sweep/0", "sweep/1"]
    for job in ("0", "1"):
        run = runs[f"sweep/{job}"]
        assert run.info.status == "FINISHED" and run.data.params["seed"] == job
        assert mlflow_history(client, run.info.run_id, "lr-Adam") == pytest.approx(EXPECTED_LR)
        assert mlflow_history(client, run.info.run_id, "val/loss")[:EPOCHS] == pytest.approx(
            fit_val_losses(sweep / job), rel=1e-6)
        assert (sweep / job / "tensorboard" / "hparams.yaml").is_file()
