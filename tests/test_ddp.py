"""Distributed data parallel: ``python train.py trainer=ddp trainer.accelerator=cpu
trainer.devices=2`` runs two real processes (gloo) on tiny demo data, and its run folder is
what a single process would have written.

The oracle is a single-process evaluation, in this test, of the checkpoint the DDP job
tested (``pl.Trainer(devices=1).test`` through the same data config), and scikit-learn on
its probabilities. The test split has an odd number of images (5), so Lightning's padding
DistributedSampler would test one image twice.

Who wrote what is observed, not guessed: the subprocesses run with a ``sitecustomize`` that
installs a Python audit hook (``sys.addaudithook``) recording, per process, every file
opened for writing, renamed into place, linked or removed. The decision recorded here:
the first process writes every run-folder file; the second process writes only its own
log, ``train_ddp_process_1.log`` (Hydra's job log under the job name Lightning gives it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO, compose_config
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write
from sklearn.metrics import roc_auc_score

from medrepro.callbacks.test_predictions import TestPredictions
from medrepro.core.errors import ConfigError
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.settings_check import check_settings
from medrepro.jobs.training import build_model, build_trainer

RUN = [
    "data=demo_pneumonia", "data.source.image_size=96", "data.source.images_per_class=16",
    "data.image_size=80", "data.loader.num_workers=0", "model.name=test_resnet",
    "model.pretrained=false", "trainer.batch_size=4", "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false", "logger=none",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
TRAIN_IMAGES, TEST_IMAGES = 24, 5  # the demo split of 16 images per class
RANK_1_LOG = "train_ddp_process_1.log"

# installed in every process of the DDP job (PYTHONPATH): one line per write, "rank<TAB>path"
AUDIT_HOOK = '''
import os, sys

_TRACE = os.open(os.path.join(os.environ["WRITE_TRACE_DIR"], f"{os.getpid()}.tsv"),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def _record(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str):
        rank = os.environ.get("LOCAL_RANK") or "0"
        os.write(_TRACE, f"{rank}\\t{os.path.abspath(path)}\\n".encode())


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS):
            _record(path)
    elif event in ("os.rename", "os.symlink", "shutil.copyfile"):
        _record(args[1])
    elif event == "os.remove":
        _record(args[0])


sys.addaudithook(_hook)
'''


def run_ddp(base: Path, demo_dir: Path, *extra: str) -> dict:
    """Run the two-process job below ``base``: its run folder, cache folder, the writes of
    each process (path -> ranks), its exit status and its console output."""
    run_dir, cache_dir, hook_dir, trace_dir = (base / n for n in ("run", "cache", "hook", "trace"))
    for folder in (hook_dir, trace_dir):
        folder.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {**os.environ, "MEDREPRO_CACHE_DIR": str(cache_dir), "WRITE_TRACE_DIR": str(trace_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *RUN, *DDP, f"paths.demo_dir={demo_dir}",
         f"hydra.run.dir={run_dir}", *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    writes: dict[Path, set[int]] = defaultdict(set)
    for trace in trace_dir.glob("*.tsv"):
        for line in trace.read_text().splitlines():
            rank, path = line.split("\t")
            writes[Path(path)].add(int(rank))
    return {"run": run_dir, "cache": cache_dir, "writes": writes, "returncode": done.returncode,
            "stderr": done.stderr, "output": done.stdout + done.stderr}


def written_by_rank_1(job: dict) -> list[str]:
    """The run-folder files the second process wrote (relative paths)."""
    run_dir = job["run"].resolve()
    return sorted(str(path.relative_to(run_dir)) for path, ranks in job["writes"].items()
                  if path.is_relative_to(run_dir) and 1 in ranks)


@pytest.fixture(scope="module")
def ddp_job(tmp_path_factory, demo_dir):
    job = run_ddp(tmp_path_factory.mktemp("ddp"), demo_dir)
    assert job["returncode"] == 0, job["stderr"][-4000:]
    return job


@pytest.fixture(scope="module")
def single_process(ddp_job, demo_dir, tmp_path_factory):
    """The oracle: the DDP job's tested checkpoint tested by one process (devices=1) on the
    same data config: its metrics and its predictions."""
    folder = tmp_path_factory.mktemp("single")
    results = json.loads((ddp_job["run"] / "results.json").read_text())
    checkpoint = ddp_job["run"] / results["tested_checkpoint"]["file"]
    cfg = compose_config([*RUN, "trainer.accelerator=cpu", f"paths.cache_dir={ddp_job['cache']}"],
                         folder, demo_dir=demo_dir)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    model = build_model(cfg, datamodule.find_classes(), datamodule.model_channels)
    datamodule.setup("test")
    # in the job's precision (trainer.precision=auto: bf16-mixed on a CPU with native bf16)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[TestPredictions(str(folder))],
                         default_root_dir=str(folder), precision=results["precision"])
    validated = trainer.validate(model, datamodule=datamodule, ckpt_path=str(checkpoint),
                                 weights_only=True, verbose=False)[0]
    tested = trainer.test(model, datamodule=datamodule, ckpt_path=str(checkpoint),
                          weights_only=True, verbose=False)[0]
    return {"val": {k.removeprefix("val/"): v for k, v in validated.items()},
            "test": {k.removeprefix("test/"): v for k, v in tested.items()},
            "predictions": pd.read_csv(folder / "predictions.csv")}


def test_two_processes_train_on_halves_of_the_data(ddp_job):
    assert "distributed_backend=gloo" in ddp_job["output"]
    assert "Starting with 2 processes" in ddp_job["output"]
    results = json.loads((ddp_job["run"] / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["batch_size"] == {"per_process": 4, "processes": 2, "accumulate_grad_batches": 1,
                                     "per_optimizer_step": 8}
    # 24 training images, 4 per process and step, 2 processes: 3 optimizer steps (one
    # process alone would take 6)
    checkpoint = torch.load(ddp_job["run"] / results["tested_checkpoint"]["file"], weights_only=False)
    assert checkpoint["global_step"] == TRAIN_IMAGES // 8
    # SyncBatchNorm does not run on CPU tensors: dropped, and said once
    log = (ddp_job["run"] / "train.log").read_text()
    assert log.count("trainer.sync_batchnorm=true is ignored on the CPU") == 1


def test_predictions_hold_every_test_image_once(ddp_job):
    split = pd.read_csv(ddp_job["run"] / "split.csv")
    test_paths = split.loc[split["split"] == "test", "path"].tolist()
    assert len(test_paths) == TEST_IMAGES  # odd: a padding sampler would repeat one
    predictions = pd.read_csv(ddp_job["run"] / "predictions.csv")
    assert sorted(predictions["path"]) == sorted(test_paths)
    assert predictions["path"].tolist() == test_paths  # in the split's order, as one process writes


def test_probabilities_and_metrics_equal_a_single_process_evaluation(ddp_job, single_process):
    """The tested checkpoint's validation and test metrics in results.json, and every test
    image's probabilities, as one process computes them."""
    ddp = pd.read_csv(ddp_job["run"] / "predictions.csv").set_index("path")
    one = single_process["predictions"].set_index("path")
    assert sorted(ddp.index) == sorted(one.index)
    one = one.loc[ddp.index]
    for column in ("prob_NORMAL", "prob_PNEUMONIA", "probability"):
        np.testing.assert_allclose(ddp[column], one[column], atol=1e-5, rtol=0)
    assert (ddp["label_index"] == one["label_index"]).all()
    assert (ddp["predicted_index"] == one["predicted_index"]).all()

    results = json.loads((ddp_job["run"] / "results.json").read_text())
    for stage in ("val", "test"):  # 3 and 5 images: odd, split unevenly between the processes
        expected = single_process[stage]
        assert set(results[stage]) == set(expected)
        for key, value in expected.items():
            assert results[stage][key] == pytest.approx(value, abs=1e-5), (stage, key)
    tested = results["test"]
    # and against scikit-learn on the single process's probabilities
    labels, scores = one["label_index"].to_numpy(), one["prob_PNEUMONIA"].to_numpy()
    assert tested["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-5)
    assert tested["acc"] == pytest.approx(float(np.mean((scores >= 0.5) == labels)), abs=1e-6)


def test_only_the_first_process_writes_the_run_folder(ddp_job):
    run_dir, writes = ddp_job["run"].resolve(), ddp_job["writes"]
    in_run = {path: ranks for path, ranks in writes.items() if path.is_relative_to(run_dir)}
    assert written_by_rank_1(ddp_job) == [RANK_1_LOG]
    assert in_run[run_dir / RANK_1_LOG] == {1}
    for name in ("results.json", "metrics.csv", "predictions.csv", "split.csv", "train.log",
                 "checkpoints/last.ckpt", "plots/roc_curve.png", "plots/learning_curves.png"):
        assert in_run.get(run_dir / name) == {0}, name
    assert len(list(run_dir.glob("results*.json"))) == 1
    history = pd.read_csv(run_dir / "metrics.csv")
    assert history["epoch"].tolist() == [1]  # one row per epoch, not one per process


def test_the_image_cache_is_built_once(ddp_job):
    run_dir, cache_dir = ddp_job["run"], ddp_job["cache"].resolve()
    logs = [(run_dir / name).read_text() for name in ("train.log", RANK_1_LOG)]
    assert [log.count("Building the image cache") for log in logs] == [1, 0]
    assert logs[1].count("Reading pre-processed images from the cache") == 1
    arrays = list(cache_dir.glob("*.npy"))
    assert len(arrays) == 1
    # besides the locks, and each process's check that the folder can be written (an empty
    # file, removed at once)
    cache_writes = {p: ranks for p, ranks in ddp_job["writes"].items()
                    if p.is_relative_to(cache_dir) and p.suffix != ".lock"
                    and not p.name.startswith(".writable.")}
    assert cache_writes[arrays[0]] == {0}
    assert all(ranks == {0} for ranks in cache_writes.values()), cache_writes
    store = json.loads((cache_dir / "file_facts.json").read_text())
    assert len(store["facts"]) == 2 * 16  # every demo image inspected, the store whole


# ---------------------------------------------------------------- failures


def test_only_the_first_process_records_a_failure(tmp_path, monkeypatch, capsys):
    cfg = compose_config([*RUN, "seed=-1"], tmp_path)  # a mistake every process makes
    for name in ("RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SystemExit):
        run_job(cfg)
    assert "Error (process 1): seed must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit):
        run_job(cfg)
    assert "\nError: seed must be a whole number" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_a_diverging_ddp_job_stops_in_every_process_and_is_recorded_once(tmp_path, demo_dir):
    job = run_ddp(tmp_path, demo_dir, "optimizer.lr=1e12")
    assert job["returncode"] == 1
    assert "Traceback" not in job["stderr"]
    assert "Error (process 1): Training diverged" in job["stderr"]
    results = json.loads((job["run"] / "results.json").read_text())
    assert results["status"] == "diverged" and results["failed_at"] == "training"
    assert written_by_rank_1(job) == [RANK_1_LOG]


# ---------------------------------------------------------------- DDP inside a multirun


def _compose_job(tmp_path, overrides: list[str], multirun: bool):
    cfg = compose_config([*RUN, *overrides], tmp_path)
    if multirun:
        hydra_cfg = HydraConfig.instance().cfg
        with read_write(hydra_cfg.hydra):
            hydra_cfg.hydra.mode = RunMode.MULTIRUN
    return cfg


def test_a_multirun_refuses_jobs_of_several_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    for overrides in (DDP, ["trainer.accelerator=cpu", "trainer.devices=2"]):  # strategy auto: DDP too
        cfg = _compose_job(tmp_path, overrides, multirun=True)
        with pytest.raises(ConfigError) as refused:
            check_settings(cfg)
        sentence = str(refused.value)
        assert sentence.startswith("trainer.devices=2 runs 2 processes per job, which a multirun (-m) "
                                   "cannot start"), sentence
        assert "hydra/launcher=slurm hydra.launcher.gpus_per_node=2 (submitit_slurm)" in sentence
        assert "hydra/launcher=joblib trainer.devices=1" in sentence
    cfg = _compose_job(tmp_path, [*DDP, "+trainer.num_nodes=2"], multirun=True)
    with pytest.raises(ConfigError, match=r"trainer.devices=2 on trainer.num_nodes=2 nodes runs 4 "
                       r"processes .* hydra.launcher.gpus_per_node=2 hydra.launcher.nodes=2 "):
        check_settings(cfg)
    # one device per job in a multirun, several devices outside one: allowed
    check_settings(_compose_job(tmp_path, [*DDP[:2], "trainer.devices=1"], multirun=True))
    check_settings(_compose_job(tmp_path, DDP, multirun=False))
    # the tasks of a SLURM job are the processes (Lightning starts none): allowed
    monkeypatch.setenv("SLURM_NTASKS", "2")
    check_settings(_compose_job(tmp_path, DDP, multirun=True))


def test_the_command_line_multirun_stops_with_the_sentence(tmp_path, demo_dir):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MEDREPRO_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SLURM_NTASKS", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *RUN, *DDP, "seed=0",
         f"paths.demo_dir={demo_dir}", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Error: trainer.devices=2 runs 2 processes per job, which a multirun (-m) cannot start" in done.stderr
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "failed" and "hydra/launcher=slurm" in results["error"]
    assert not list(sweep.rglob(RANK_1_LOG))  # no second process was started


def test_a_submitit_slurm_job_leaves_requeueing_to_submitit(tmp_path, monkeypatch):
    """Under SLURM Lightning requeues a job itself (SIGUSR1) unless told not to; a job that
    submitit submitted is requeued by submitit's own signal handler."""
    for name, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "0",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "42",
                        "SLURM_NODELIST": "node1", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(name, value)
    cfg = _compose_job(tmp_path, [*DDP[:2], "trainer.devices=1"], multirun=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert build_trainer(cfg, [], False, tmp_path).strategy.cluster_environment.auto_requeue is True
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert build_trainer(cfg, [], False, tmp_path).strategy.cluster_environment.auto_requeue is False
