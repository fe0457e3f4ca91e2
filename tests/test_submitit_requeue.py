"""Sweeps through submitit: a job pre-empted (or at its time limit) is requeued and resumes
from its last.ckpt to the numbers of an uninterrupted run; ``hydra/launcher=slurm`` writes
the sbatch script the README documents.

Real engines: ``train.py -m`` with Hydra's submitit launcher. ``hydra/launcher=submitit_local``
runs each job as SLURM would, in its own process under submitit's job controller, with
submitit's signal handler installed. SIGUSR2 is the signal submitit acts on: SLURM sends it
``signal_delay_s`` before the time limit (``--signal=USR2@120``; submitit models a
pre-emption as SIGTERM, then SIGUSR2), and submitit's local controller before its own. submitit then
checkpoints the job (Hydra's launcher resubmits the same job) and requeues it (SLURM:
``scontrol requeue``; locally: exit status 144, and the controller starts it again); the
job finds its interrupted run folder and resumes from last.ckpt. Tiny runs: timm
``test_resnet``, 32 px grey images, batches of 2, three epochs, ``trainer.deterministic=true``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    REPO,
    RESUMABLE_RUN,
    RESUMABLE_SIZE,
    wait_a_third_into_epoch_2,
    write_noisy_splits,
)

SIZE = RESUMABLE_SIZE
RUN = [*RESUMABLE_RUN, "hydra.callbacks.sweep_report.resamples=200"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """``train/`` 32, ``val/`` 6 and ``test/`` 6 noisy grey 32 px images per class: 32
    training batches of 2 per epoch."""
    return write_noisy_splits(tmp_path_factory.mktemp("images"), {"train": 32, "val": 6, "test": 6}, SIZE)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def history(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without the wall-clock column."""
    return pd.read_csv(run_dir / "metrics.csv").drop(columns="epoch_seconds")


def job_process(run_dir: Path) -> int:
    """The process of the submitit job that runs ``run_dir``'s training: the task submitit
    started (``python -m submitit.core._submit``) that has the job's train.log open."""
    log = str((run_dir / "train.log").resolve())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if "submitit.core._submit" not in command:
                continue
            files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # ended meanwhile, or not ours
            continue
        if log in files:
            found.append(int(pid))
    assert len(found) == 1, found
    return found[0]


def preempt_in_epoch_2(sweep: subprocess.Popen, run_dir: Path, timeout: float = 600) -> None:
    """Send SIGUSR2 to the job of ``run_dir`` a third of an epoch after its first last.ckpt
    appeared."""
    wait_a_third_into_epoch_2(sweep, run_dir, timeout)
    os.kill(job_process(run_dir), signal.SIGUSR2)


def kill_processes_of(sweep_dir: Path) -> None:
    """SIGKILL the processes whose command line names ``sweep_dir`` (submitit's job
    controllers and jobs, which outlive a killed sweep)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(sweep_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue


def submitit_log(sweep_dir: Path, run_dir: Path) -> list[str]:
    """submitit's own records (``submitit LEVEL (time) - message``, on the job's stdout and
    stderr) of the job whose console output names ``run_dir``."""
    jobs = [sorted(folder.glob("*_0_log.*")) for folder in (sweep_dir / ".submitit").iterdir()
            if folder.is_dir()]
    texts = ["".join(path.read_text() for path in logs) for logs in jobs]
    (text,) = [text for text in texts if f"Run folder: {run_dir.resolve()}" in text]
    # a warning is written to both files: each record once
    return sorted({line for line in text.splitlines() if line.startswith("submitit ")})


def count(records: list[str], message: str) -> int:
    return sum(message in record for record in records)


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_result(images, tmp_path):
    """Two jobs of the same training (they differ only in the metric they return), run at
    once by submitit's local executor: job 1 gets SIGUSR2 in its second epoch, is requeued,
    resumes from its last.ckpt and ends with the same test metrics, predictions and
    per-epoch history as job 0, which ran without interruption."""
    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local", *RUN,
         f"data.root={images}", f"hydra.sweep.dir={sweep_dir}", "optimized_metric=val/auroc,val/acc"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    try:
        preempt_in_epoch_2(sweep, sweep_dir / "1")
        output, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:  # a failed check: stop the sweep and submitit's job processes
            sweep.kill()
            sweep.wait()
            kill_processes_of(sweep_dir)
    assert sweep.returncode == 0, output[-3000:]
    assert "2 jobs: 2 completed, 0 failed, 0 diverged" in output

    whole, resumed = sweep_dir / "0", sweep_dir / "1"
    # submitit's own account: job 1 caught the signal and was requeued; job 0 was not
    log = submitit_log(sweep_dir, resumed)
    assert count(log, "Caught signal SIGUSR2") == 1 and count(log, "this job is preempted") == 1
    assert count(log, "Requeued job") == 1 and count(log, "Starting with JobEnvironment") == 2
    assert count(log, "Job completed successfully") == 1
    assert count(submitit_log(sweep_dir, whole), "Caught signal") == 0

    assert results(resumed)["resumed_from"] == {"file": "checkpoints/last.ckpt", "epoch": 1}
    assert "resumed_from" not in results(whole)
    assert [results(run)["config"]["optimized_metric"] for run in (whole, resumed)] == ["val/auroc", "val/acc"]
    for run in (whole, resumed):
        assert results(run)["status"] == "completed"
    assert results(resumed)["test"] == results(whole)["test"]
    assert (resumed / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    pd.testing.assert_frame_equal(history(resumed), history(whole), check_exact=True)
    assert list(history(resumed)["epoch"]) == [1, 2, 3]
    assert not (resumed / "previous").exists()  # resumed in place, nothing moved aside
    assert sorted(os.listdir(resumed / "checkpoints")) == sorted(os.listdir(whole / "checkpoints"))
    assert (sweep_dir / "summary.md").is_file()


def test_the_slurm_launcher_submits_the_documented_sbatch_script(tmp_path):
    """``hydra/launcher=slurm`` with a partition and two GPUs per node: the sbatch script
    submitit writes (read before the stand-in ``sbatch`` of this machine, which has no
    SLURM, refuses it) asks for one task per GPU, 8 CPU cores per task, 32 GB, 4 hours, the
    USR2 signal two minutes before the end, and the sweep's jobs as one job array."""
    bin_dir = tmp_path / "bin"  # no SLURM here: submitit looks for srun, then calls sbatch
    bin_dir.mkdir()
    for command, script in (("srun", "exit 1"), ("sbatch", "echo 'sbatch: no SLURM cluster here' >&2; exit 1")):
        (bin_dir / command).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / command).chmod(0o755)
    sweep_dir = tmp_path / "sweep"
    finished = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
         "hydra.launcher.gpus_per_node=2", "trainer.devices=2", "seed=0,1,2", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert finished.returncode != 0 and "no SLURM cluster here" in finished.stderr, finished.stderr[-3000:]
    (script,) = (sweep_dir / ".submitit").glob(".submission_file_*.sh")
    settings = {line.split()[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")}
    assert {"--partition=gpu", "--gpus-per-node=2", "--ntasks-per-node=2", "--nodes=1", "--cpus-per-task=8",
            "--mem=32GB", "--time=240", "--signal=USR2@120", "--array=0-2%3"} <= settings, settings
    assert f"--output={sweep_dir}/.submitit/%A_%a/%A_%a_0_log.out" in settings
