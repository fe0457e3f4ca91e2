"""Resuming: ``ckpt_path=last|FILE``, a run killed with SIGKILL in the middle of an epoch,
sweep re-runs into the same folder, and earlier attempts moved aside, never deleted.

A resumed run is compared with an uninterrupted run of the same overrides, which is the
oracle: a fixed seed, ``trainer.deterministic=true`` on the CPU, with random augmentation
and dropout, so that any random stream a resumed run draws differently changes its
numbers. Tiny runs: timm ``test_resnet``, 32 px grey images, batches of 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from conftest import (
    REPO,
    RESUMABLE_RUN,
    RESUMABLE_SIZE,
    compose_config,
    wait_a_third_into_epoch_2,
    write_noisy_splits,
)

from medrepro.core.errors import ConfigError
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.report.runs import load_runs
from medrepro.jobs.training import train

SIZE = RESUMABLE_SIZE
RUN = RESUMABLE_RUN
# every epoch's checkpoint kept (best-epoch001.ckpt ... best-epoch003.ckpt), to resume from any
EVERY_EPOCH = ["callbacks.model_checkpoint.save_top_k=-1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """``train/`` 32, ``val/`` 6 and ``test/`` 6 noisy grey 32 px images per class (``bright``
    ones brighter on average): 32 training batches of 2 per epoch."""
    return write_noisy_splits(tmp_path_factory.mktemp("images"), {"train": 32, "val": 6, "test": 6}, SIZE)


def overrides(images: Path, *extra: str) -> list[str]:
    return [*RUN, f"data.root={images}", *extra]


@pytest.fixture(scope="module")
def whole_run(images, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run that keeps every epoch's checkpoint."""
    run_dir = tmp_path_factory.mktemp("whole")
    train(compose_config(overrides(images, *EVERY_EPOCH), run_dir))
    return run_dir


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def history(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without the wall-clock column."""
    return pd.read_csv(run_dir / "metrics.csv").drop(columns="epoch_seconds")


def assert_same_outcome(run_dir: Path, reference: Path, same_checkpoints: bool = True) -> None:
    """The same test metrics, byte-identical predictions.csv, the same per-epoch history
    and (``same_checkpoints``) the same checkpoint files as the reference run."""
    assert results(run_dir)["status"] == "completed"
    assert results(run_dir)["test"] == results(reference)["test"]
    assert (run_dir / "predictions.csv").read_bytes() == (reference / "predictions.csv").read_bytes()
    pd.testing.assert_frame_equal(history(run_dir), history(reference), check_exact=True)
    if same_checkpoints:
        assert sorted(os.listdir(run_dir / "checkpoints")) == sorted(os.listdir(reference / "checkpoints"))


def test_ckpt_path_file_resumes_another_runs_checkpoint_to_the_uninterrupted_result(
        whole_run, images, tmp_path):
    """Resumed from the whole run's epoch-1 checkpoint in a new folder, the fit trains
    epochs 2 and 3 only (global step) and ends exactly where the whole run ended; its
    metrics.csv keeps epoch 1 from the checkpoint's run folder, not the epochs after it."""
    epoch1 = whole_run / "checkpoints" / "best-epoch001.ckpt"
    assert len(history(whole_run)) == 3  # the checkpoint's run folder has rows after epoch 1
    run_dir = tmp_path / "resumed"
    train(compose_config(overrides(images, *EVERY_EPOCH, f"ckpt_path={epoch1}"), run_dir))

    assert_same_outcome(run_dir, whole_run, same_checkpoints=False)
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["best-epoch002.ckpt", "best-epoch003.ckpt", "last.ckpt"]
    assert results(run_dir)["resumed_from"] == {"file": str(epoch1), "epoch": 1}
    assert "resumed_from" not in results(whole_run)
    epoch_seconds = pd.read_csv(run_dir / "metrics.csv")["epoch_seconds"]
    assert epoch_seconds.iloc[0] == pd.read_csv(whole_run / "metrics.csv")["epoch_seconds"].iloc[0]
    steps = [torch.load(run_dir / "checkpoints" / f"best-epoch00{e}.ckpt", weights_only=True)["global_step"]
             for e in (2, 3)]
    assert steps == [64, 96]  # 32 batches per epoch, counted on from the checkpoint's 32


def test_a_deterministic_run_with_dataloader_workers_resumes_to_the_uninterrupted_result(
        images, tmp_path):
    """With two DataLoader workers (the augmentation then runs in the workers) and
    trainer.deterministic=true, the workers restart every epoch (persistent_workers follows
    deterministic), so a run resumed from epoch 1 ends exactly as the uninterrupted one."""
    workers = ["data.loader.num_workers=2", "trainer.max_epochs=2", *EVERY_EPOCH]
    whole = tmp_path / "whole"
    cfg = compose_config(overrides(images, *workers), whole)
    assert cfg.data.loader.persistent_workers is False
    train(cfg)
    epoch1 = whole / "checkpoints" / "best-epoch001.ckpt"
    resumed = tmp_path / "resumed"
    train(compose_config(overrides(images, *workers, f"ckpt_path={epoch1}"), resumed))
    assert_same_outcome(resumed, whole, same_checkpoints=False)
    assert results(resumed)["resumed_from"]["epoch"] == 1


def test_a_run_resumed_without_per_epoch_seeding_would_draw_other_numbers(whole_run, images, tmp_path):
    """The premise of the comparisons: the random streams matter here. Resumed the same way
    but without the epoch_seeding callback, the run ends with other numbers."""
    epoch1 = whole_run / "checkpoints" / "best-epoch001.ckpt"
    run_dir = tmp_path / "unseeded"
    train(compose_config(overrides(images, *EVERY_EPOCH, f"ckpt_path={epoch1}",
                                   "~callbacks.epoch_seeding"), run_dir))
    assert history(run_dir).iloc[0].equals(history(whole_run).iloc[0])  # epoch 1: the checkpoint's
    assert not history(run_dir).iloc[1:].equals(history(whole_run).iloc[1:])


def test_ckpt_path_last_continues_in_place_and_keeps_one_set_of_checkpoints(whole_run, images, tmp_path):
    """ckpt_path=last in a folder whose run stopped after epoch 2 (its files as they were
    then: the epoch-2 last.ckpt and metrics.csv rows 1-2, plus a stale row 3 of a killed
    attempt that had got further): the run ends as the whole run did, with rows 1-3 once
    and no second last.ckpt."""
    run_dir = tmp_path / "stopped"
    shutil.copytree(whole_run, run_dir, symlinks=True)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "last.ckpt").unlink()
    (checkpoints / "best-epoch003.ckpt").unlink()
    os.symlink("best-epoch002.ckpt", checkpoints / "last.ckpt")
    stopped = results(run_dir)
    for key in ("test", "val", "tested_checkpoint"):
        stopped.pop(key, None)
    (run_dir / "results.json").write_text(json.dumps({**stopped, "status": "running"}))
    (run_dir / "predictions.csv").unlink()
    stale = pd.read_csv(run_dir / "metrics.csv")
    stale.loc[2, "val/loss"] = 99.0  # a row the killed attempt wrote after its checkpoint
    stale.to_csv(run_dir / "metrics.csv", index=False)

    train(compose_config(overrides(images, *EVERY_EPOCH, "ckpt_path=last"), run_dir))
    assert_same_outcome(run_dir, whole_run)
    assert results(run_dir)["resumed_from"] == {"file": "checkpoints/last.ckpt", "epoch": 2}
    assert not (run_dir / "previous").exists()


def test_a_missing_or_unsafe_checkpoint_stops_with_one_sentence_before_the_data_is_read(
        images, tmp_path, capsys):
    """Each case exits with status 1 and ``Error:`` and one sentence naming the file, before
    the data is split (no split.csv) or cached. A checkpoint whose unpickling would write a
    file never writes it."""
    planted = tmp_path / "planted.txt"

    class WritesAFile:
        def __reduce__(self):
            return (Path.write_text, (planted, "code ran"))

    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.ckpt").write_text("not a checkpoint\n")
    (files / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": WritesAFile()}))
    torch.save({"weight": torch.zeros(2)}, files / "weights.pth")
    unsafe = "it is not a checkpoint that loads safely as plain data"
    cases = {
        "last": [f"ckpt_path=last found no checkpoint at {tmp_path / 'run_last' / 'checkpoints' / 'last.ckpt'}"],
        str(files / "absent.ckpt"): [f"ckpt_path={files / 'absent.ckpt'}: no such checkpoint file"],
        str(files / "notes.ckpt"): [f"Cannot resume from {files / 'notes.ckpt'}: {unsafe}"],
        str(files / "evil.ckpt"): [f"Cannot resume from {files / 'evil.ckpt'}: {unsafe}"],
        str(files / "weights.pth"): [f"Cannot resume from {files / 'weights.pth'}: it holds no training state",
                                     f"model.weights={files / 'weights.pth'}"],
    }
    cache = tmp_path / "cache"
    for number, (value, expected) in enumerate(cases.items()):
        run_dir = tmp_path / ("run_last" if value == "last" else f"run{number}")
        cfg = compose_config(overrides(images, f"ckpt_path={value}", f"data.cache.dir={cache}"), run_dir)
        with pytest.raises(SystemExit) as stop:
            run_job(cfg)
        assert stop.value.code == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("Error: ") and "\n" not in error, error
        for part in expected:
            assert part in error
        assert not (run_dir / "split.csv").exists()
    assert not any(p.is_file() for p in cache.rglob("*"))  # nothing cached (rglob of no folder: none)
    assert not planted.exists()


def test_resuming_another_configuration_or_model_stops_with_one_sentence(whole_run, images, tmp_path):
    """ckpt_path=last with other overrides names the keys that differ; ckpt_path=FILE of
    another model (two logits instead of one) stops before the fit."""
    run_dir = tmp_path / "copy"
    shutil.copytree(whole_run, run_dir, symlinks=True)
    other = overrides(images, *EVERY_EPOCH, "ckpt_path=last", "optimizer.lr=0.5")
    with pytest.raises(ConfigError, match=r"holds a run of another configuration \(differing in optimizer\.lr\)"):
        train(compose_config(other, run_dir))
    assert tree_digest(run_dir) == tree_digest(whole_run)
    # as python train.py runs it: exit 1, and the other run's results.json still says completed
    with pytest.raises(SystemExit) as stop:
        run_job(compose_config(other, run_dir))
    assert stop.value.code == 1
    assert tree_digest(run_dir) == tree_digest(whole_run)
    epoch1 = whole_run / "checkpoints" / "best-epoch001.ckpt"
    features = timm.create_model("test_resnet").num_features
    with pytest.raises(ConfigError, match=rf"holds the weights of another model .*backbone\.fc\.weight: "
                                          rf"\(1, {features}\) in the checkpoint, \(2, {features}\) here"):
        train(compose_config(overrides(images, f"ckpt_path={epoch1}", "loss=ce"), tmp_path / "ce"))
    assert not (tmp_path / "ce" / "checkpoints").exists()


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (links as their target path), by relative path."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            digests[str(path.relative_to(folder))] = "-> " + os.readlink(path)
        elif path.is_file():
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_a_fresh_start_in_a_used_folder_moves_the_earlier_attempt_aside(whole_run, images, tmp_path):
    """A single run without ckpt_path in a folder that holds another configuration's run:
    that run's files go, unchanged, into previous/<its start time>/, and the folder holds
    only the new run's files (one last.ckpt, its own best checkpoint)."""
    run_dir = tmp_path / "used"
    shutil.copytree(whole_run, run_dir, symlinks=True)
    before = tree_digest(run_dir)
    train(compose_config(overrides(images, "trainer.max_epochs=1"), run_dir))

    started = datetime.fromisoformat(results(whole_run)["started_at"]).astimezone()
    (moved,) = (run_dir / "previous").iterdir()
    assert moved.name == started.strftime("%Y-%m-%d_%H-%M-%S")  # as Hydra names run folders
    assert tree_digest(moved) == before
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["best-epoch001.ckpt", "last.ckpt"]
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1
    assert results(run_dir)["config"]["trainer"]["max_epochs"] == 1


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "SLURM_PROCID"])
def test_a_second_ddp_process_leaves_the_run_folder_to_the_first(whole_run, images, tmp_path,
                                                                  monkeypatch, variable):
    """The second process of a multi-process run (DDP re-runs the command with a rank set)
    prepares nothing: the first process's files (another configuration here) stay in place,
    and ckpt_path still names the checkpoint both processes resume from."""
    from medrepro.jobs.resume import prepare_run_folder

    run_dir = tmp_path / "shared"
    shutil.copytree(whole_run, run_dir, symlinks=True)
    monkeypatch.setenv(variable, "1")
    start = prepare_run_folder(compose_config(overrides(images, "optimizer.lr=0.5"), run_dir))
    assert start.checkpoint is None and start.completed is None
    assert tree_digest(run_dir) == tree_digest(whole_run)
    epoch1 = whole_run / "checkpoints" / "best-epoch001.ckpt"
    start = prepare_run_folder(compose_config(overrides(images, f"ckpt_path={epoch1}"), run_dir))
    assert start.checkpoint == epoch1
    assert tree_digest(run_dir) == tree_digest(whole_run)
    monkeypatch.setenv(variable, "0")  # the first process does move the other configuration aside
    prepare_run_folder(compose_config(overrides(images, "optimizer.lr=0.5"), run_dir))
    assert (run_dir / "previous").is_dir() and not (run_dir / "results.json").exists()


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def kill_in_epoch_2(process: subprocess.Popen, run_dir: Path, timeout: float = 600,
                    signal_number: int = signal.SIGKILL) -> None:
    """SIGKILL (or ``signal_number``) ``process`` a third of an epoch after ``run_dir``'s
    first last.ckpt appeared."""
    wait_a_third_into_epoch_2(process, run_dir, timeout)
    os.kill(process.pid, signal_number)
    process.wait()


def assert_killed_in_epoch_2(run_dir: Path) -> None:
    """The premise: the killed attempt's last checkpoint is epoch 1's, and it had not
    finished epoch 2."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 32, "killed after epoch 2 ended: lengthen the epochs"
    assert list(pd.read_csv(run_dir / "metrics.csv")["epoch"]) == [1]
    assert results(run_dir)["status"] == "running"


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_with_ckpt_path_last_to_the_uninterrupted_result(images, tmp_path):
    """``python train.py`` killed with SIGKILL in epoch 2, then ``python train.py <the same
    overrides> hydra.run.dir=<its folder> ckpt_path=last``: the same test metrics,
    predictions.csv and metrics.csv as the same command run without interruption."""
    one_thread = {"OMP_NUM_THREADS": "1"}  # as in-process; two threads spin on a busy CPU
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    # each builds its own image cache, as a first run does
    killed_env = {**one_thread, "MEDREPRO_CACHE_DIR": str(tmp_path / "cache_killed")}
    whole = cli(*overrides(images), f"hydra.run.dir={whole_dir}",
                env={**one_thread, "MEDREPRO_CACHE_DIR": str(tmp_path / "cache_whole")})
    killed = cli(*overrides(images), f"hydra.run.dir={killed_dir}", env=killed_env)
    kill_in_epoch_2(killed, killed_dir)
    assert_killed_in_epoch_2(killed_dir)

    finish(cli(*overrides(images), f"hydra.run.dir={killed_dir}", "ckpt_path=last", env=killed_env))
    finish(whole)
    assert_same_outcome(killed_dir, whole_dir)
    assert results(killed_dir)["resumed_from"] == {"file": "checkpoints/last.ckpt", "epoch": 1}
    assert not (killed_dir / "previous").exists()


@pytest.mark.slow
def test_sigterm_is_recorded_as_interrupted_and_the_run_continues_with_ckpt_path_last(images, tmp_path):
    """SIGTERM (what a cluster or ``kill`` sends) in epoch 2: Lightning stops at the next
    batch, results.json says ``interrupted`` with how to continue, not ``running``; the
    command it names finishes the run from epoch 1's last.ckpt."""
    run_dir = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", "MEDREPRO_CACHE_DIR": str(tmp_path / "cache")}
    process = cli(*overrides(images), f"hydra.run.dir={run_dir}", env=env)
    kill_in_epoch_2(process, run_dir, signal_number=signal.SIGTERM)
    assert process.returncode == 143  # 128 + SIGTERM, as a shell reports it
    record = results(run_dir)
    assert record["status"] == "interrupted" and record["failed_at"] == "training"
    assert record["error"] == (
        "Stopped by a signal from outside (pre-emption, a time limit or SIGTERM) during "
        f"training; run the same command with hydra.run.dir={run_dir} ckpt_path=last to continue.")
    finish(cli(*overrides(images), f"hydra.run.dir={run_dir}", "ckpt_path=last", env=env))
    assert results(run_dir)["status"] == "completed"
    assert results(run_dir)["resumed_from"] == {"file": "checkpoints/last.ckpt", "epoch": 1}


@pytest.mark.slow
def test_sweep_reruns_resume_interrupted_jobs_skip_completed_ones_and_match_by_configuration(
        images, tmp_path):
    """1. ``-m seed=0,1`` killed in job 1's second epoch. 2. The same command: job 0 is
    skipped (its files untouched), job 1 resumes from its last.ckpt. 3. The arm list
    changed to ``seed=2,0``: job 0 (now seed 2) starts clean, seed 0's files moved aside;
    job 1 (now seed 0) takes seed 0's completed results from there and is not run; seed 1's
    files are moved aside in job 1's folder. Nothing is deleted, and the report reads jobs
    0 and 1 only."""
    sweep = tmp_path / "sweep"
    env = {"OMP_NUM_THREADS": "1"}
    command = [*overrides(images), f"hydra.sweep.dir={sweep}", "hydra.callbacks.sweep_report.enabled=false"]
    first = cli("-m", *command, "seed=0,1", env=env)
    kill_in_epoch_2(first, sweep / "1")
    assert_killed_in_epoch_2(sweep / "1")
    assert results(sweep / "0")["status"] == "completed"
    job0 = tree_digest(sweep / "0")
    # untouched: every file but Hydra's record of the job and the job's log (which says it was skipped)
    job0_times = {p: p.stat().st_mtime_ns for p in (sweep / "0").rglob("*")
                  if ".hydra" not in p.parts and p.suffix != ".log"}

    finish(cli("-m", *command, "seed=0,1", env=env))
    assert {p: p.stat().st_mtime_ns for p in job0_times} == job0_times
    assert {k: v for k, v in tree_digest(sweep / "0").items() if not k.startswith(".hydra")} == {
        k: v for k, v in job0.items() if not k.startswith(".hydra") and k != "train.log"} | {
        "train.log": tree_digest(sweep / "0")["train.log"]}
    assert "Skipped" in (sweep / "0" / "train.log").read_text()
    resumed = results(sweep / "1")
    assert resumed["status"] == "completed" and resumed["config"]["seed"] == 1
    assert resumed["resumed_from"] == {"file": "checkpoints/last.ckpt", "epoch": 1}
    assert list(pd.read_csv(sweep / "1" / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert not (sweep / "1" / "previous").exists()
    seed0, seed1 = results(sweep / "0"), resumed
    seed0_predictions = (sweep / "0" / "predictions.csv").read_bytes()
    # the runs' files (results.json is rewritten when moved; Hydra rewrites multirun.yaml)
    before = {digest for name, digest in tree_digest(sweep).items() if name[0].isdigit()
              and not name.endswith((".log", "results.json")) and ".hydra" not in name}

    finish(cli("-m", *command, "seed=2,0", env=env))
    runs = load_runs(sweep)
    assert [(run.job, run.seed, run.status) for run in runs] == [(0, 2, "completed"), (1, 0, "completed")]
    (moved0,) = (sweep / "0" / "previous").iterdir()
    (moved1,) = (sweep / "1" / "previous").iterdir()
    # job 1 holds seed 0's run, moved from where job 0 had put it aside
    adopted = results(sweep / "1")
    assert adopted["test"] == seed0["test"] and adopted["started_at"] == seed0["started_at"]
    assert adopted["moved_from"] == str(moved0.resolve())
    assert adopted["run_dir"] == str((sweep / "1").resolve())
    assert (sweep / "1" / "predictions.csv").read_bytes() == seed0_predictions
    assert not (moved0 / "results.json").exists()
    # job 0 started clean: only seed 2's files, one last.ckpt
    assert results(sweep / "0")["config"]["seed"] == 2 and "resumed_from" not in results(sweep / "0")
    assert list(pd.read_csv(sweep / "0" / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert len(list((sweep / "0" / "checkpoints").glob("last*"))) == 1
    # seed 1's run, aside in job 1's folder, as it was
    assert results(moved1) == seed1
    after = set(tree_digest(sweep).values())
    assert before <= after  # every earlier file is still there, somewhere
