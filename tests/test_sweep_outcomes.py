"""How a job ends, told honestly: results.json's status (``completed``, ``failed``,
``diverged``, ``interrupted``) and the step it stopped at (``failed_at``), one sentence on
the console and the exit status, for single runs and sweeps; and the sweep's own exit status,
counts and report.

Real processes where the behaviour is the process's: ``python train.py`` (and ``-m``) in
subprocesses, a real SIGINT, a real full file system (a tiny tmpfs mounted in a private
mount namespace with ``unshare``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN, TINY_TRAINING, ctrl_c_enabled, write_gray
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from test_experiments import multirun_mode_config

from medrepro.jobs.job_runner import run_job
from medrepro.jobs.report.summary import write_report
from medrepro.jobs.report.sweep_outcome import SweepOutcome

TINY_JOB = ["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet"]


def train_py(*args: str, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                          text=True, capture_output=True, timeout=timeout, check=False, **popen)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def error_lines(stderr: str) -> list[str]:
    return [line.removeprefix("Error: ") for line in stderr.splitlines()
            if line.startswith("Error: ")]


# --------------------------------------------------------------------------- single runs


def test_an_unexpected_exception_during_training_ends_failed_with_one_line(tmp_path, demo_dir):
    """A bug (here a callback that asks for a metric nobody logs: Lightning raises during
    training) used to leave results.json at ``running`` with a traceback on the console. Now:
    exit 1, one line naming the error and the log, the traceback in train.log for a bug
    report, and results.json ``failed`` with that line and the step."""
    run_dir = tmp_path / "run"
    done = train_py(*TINY_JOB,
                    "+callbacks.broken._target_=pytorch_lightning.callbacks.EarlyStopping",
                    "+callbacks.broken.monitor=val/no_such_metric", f"paths.demo_dir={demo_dir}",
                    f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    [sentence] = error_lines(done.stderr)
    assert sentence.startswith(
        "RuntimeError: Early stopping conditioned on metric `val/no_such_metric`")
    assert sentence.endswith("(an unexpected error during training; the traceback is in "
                             f"{run_dir / 'train.log'})")
    log = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "early_stopping.py" in log
    written = results(run_dir)
    assert written["status"] == "failed" and written["error"] == sentence
    assert written["failed_at"] == "training" and "started_at" in written  # it had started training


def test_ctrl_c_ends_interrupted_with_exit_130(tmp_path, demo_dir):
    """A real SIGINT to the process group (what Ctrl-C in a terminal sends) during training."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *TINY_JOB, "trainer.max_epochs=500",
         f"paths.demo_dir={demo_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"hydra.run.dir={run_dir}"],
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=ctrl_c_enabled)  # noqa: PLW1509 (one signal() call before exec)
    deadline = time.monotonic() + 300
    while not os.path.lexists(run_dir / "checkpoints" / "last.ckpt"):  # after the first epoch
        running = process.poll() is None and time.monotonic() < deadline
        assert running, process.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    [sentence] = error_lines(stderr)
    assert sentence.startswith("Interrupted by Ctrl-C during training; run the same command with "
                               f"hydra.run.dir={run_dir} ckpt_path=last")
    written = results(run_dir)
    assert written["status"] == "interrupted" and written["error"] == sentence
    assert written["failed_at"] == "training"


def on_tmpfs(mount_point: Path, size_kib: int, script: str) -> list[str]:
    """A shell ``script`` run with a ``size_kib`` tmpfs at ``mount_point``, in a private mount
    namespace (the mount is visible to the script only, and gone when it ends)."""
    return ["unshare", "-rm", "sh", "-c",
            f"mount -t tmpfs -o size={size_kib}k tmpfs '{mount_point}' || exit 99; {script}"]


@pytest.fixture(scope="module")
def can_mount_tmpfs(tmp_path_factory) -> None:
    point = tmp_path_factory.mktemp("mount_probe")
    try:
        probe = subprocess.run(on_tmpfs(point, 64, "true"), capture_output=True, text=True,
                               timeout=30, check=False)
    except FileNotFoundError:
        pytest.skip("no unshare command: a tiny file system cannot be mounted to fill it")
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here: "
                    f"{probe.stderr.strip()}")


def test_a_full_disk_ends_with_one_sentence_naming_the_file(tmp_path, demo_dir, can_mount_tmpfs):
    """The run folder on a 1 MiB file system: the split, logs and results.json fit, the first
    checkpoint (about 4.5 MB with test_resnet's optimiser state) does not. The run folder is
    copied out before the mount goes away."""
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    run_dir = disk / "run"
    command = [sys.executable, str(REPO / "train.py"), *TINY_JOB, f"paths.demo_dir={demo_dir}",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    script = (" ".join(f"'{part}'" for part in command)
              + f"; status=$?; cp -r '{run_dir}' '{copy}'; exit $status")
    done = subprocess.run(on_tmpfs(disk, 1024, script), cwd=REPO, text=True, capture_output=True,
                          timeout=600, check=False)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    [sentence] = error_lines(done.stderr)
    checkpoints = run_dir / "checkpoints"
    assert sentence.startswith(f"No space is left on the disk to write {checkpoints}/"), sentence
    assert sentence.endswith("; free space there, or write to another disk with hydra.run.dir=DIR, "
                             "and run the command again.")
    written = results(copy)  # the run folder as the full disk left it
    assert written["status"] == "failed" and written["error"] == sentence
    assert written["failed_at"] == "training"


def test_results_json_is_marked_failed_on_a_disk_too_full_for_a_second_copy(tmp_path,
                                                                            can_mount_tmpfs):
    """mark_failed's atomic write needs room for a second copy; on a disk filled to the last
    byte it rewrites results.json in place instead of leaving ``running``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    running = {"status": "running", "config": {"seed": 0, "notes": "x" * 5000}}
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from medrepro.core.run_folder import mark_failed\n"
        f"run = Path({str(disk / 'run')!r}); run.mkdir()\n"
        f"(run / 'results.json').write_text(json.dumps({running!r}))\n"
        "try:\n"
        "    with open(run / 'filler', 'wb') as filler:\n"
        "        while True: filler.write(bytes(4096))\n"
        "except OSError as full:\n"
        "    assert full.errno == 28, full\n"
        "mark_failed(run, 'failed', 'No space is left on the disk.', failed_at='training')\n"
        f"Path({str(tmp_path / 'out.json')!r}).write_text((run / 'results.json').read_text())\n"
    )
    done = subprocess.run(on_tmpfs(disk, 256, f"'{sys.executable}' -c \"$CODE\""),
                          env={**os.environ, "CODE": code}, cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["status"] == "failed" and written["failed_at"] == "training"
    assert written["error"] == "No space is left on the disk."
    assert written["config"] == running["config"]



def test_the_job_log_stops_writing_on_a_full_disk_without_a_traceback_per_record(tmp_path,
                                                                                 can_mount_tmpfs):
    """train.log's handler (conf/hydra/default.yaml) on a full disk: the records that do not
    fit are dropped quietly (the job reports the full disk once), where logging's own
    FileHandler prints "--- Logging error ---" and a traceback for every one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    hydra_conf = OmegaConf.load(REPO / "conf" / "hydra" / "default.yaml")
    handler = hydra_conf.job_logging.handlers.file["class"]
    code = (
        "import importlib, logging\n"
        f"module, _, name = {handler!r}.rpartition('.')\n"
        "handler = getattr(importlib.import_module(module), name)"
        f"({str(disk / 'train.log')!r})\n"
        "log = logging.getLogger('job'); log.addHandler(handler); log.setLevel('INFO')\n"
        "log.info('written before the disk is full')\n"
        "try:\n"
        f"    with open({str(disk / 'filler')!r}, 'wb') as filler:\n"
        "        while True: filler.write(bytes(4096))\n"
        "except OSError as full:\n"
        "    assert full.errno == 28, full\n"
        "for i in range(3): log.info('record %d %s', i, 'x' * 9000)\n"
        "print(open(handler.baseFilename).read())\n"
    )
    done = subprocess.run(on_tmpfs(disk, 64, f"'{sys.executable}' -c \"$CODE\""),
                          env={**os.environ, "CODE": code}, cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written before the disk is full" in done.stdout
    assert "Logging error" not in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


# --------------------------------------------------------------------------- sweeps


def job_end(outcome: SweepOutcome, run_dir: Path, results: dict | None,
            hydra_status=JobStatus.COMPLETED):
    """What Hydra hands the callback when a job ends: the job's config and its JobReturn."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    outcome.on_job_end(config=config, job_return=JobReturn(status=hydra_status))


def sweep_end(outcome: SweepOutcome, sweep_dir: Path) -> int:
    """The exit status the callback gives the process (0 when it returns)."""
    try:
        config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
        outcome.on_multirun_end(config=config)
    except SystemExit as stop:
        return stop.code
    return 0


def test_the_sweep_outcome_counts_what_the_jobs_recorded(tmp_path, capsys):
    outcome = SweepOutcome()
    outcome.on_multirun_start(config=OmegaConf.create({}))
    for job in range(2):
        job_end(outcome, tmp_path / str(job), {"status": "completed"})
    assert sweep_end(outcome, tmp_path) == 0
    assert capsys.readouterr().out.strip() == "2 jobs: 2 completed, 0 failed, 0 diverged"

    outcome.on_multirun_start(config=OmegaConf.create({}))
    job_end(outcome, tmp_path / "0", {"status": "completed"})
    job_end(outcome, tmp_path / "1", {"status": "diverged"})
    job_end(outcome, tmp_path / "2", {"status": "running"})  # killed: never recorded its end
    job_end(outcome, tmp_path / "3", None, hydra_status=JobStatus.FAILED)  # escaped run_job
    (tmp_path / "summary.md").write_text("# report\n")
    assert sweep_end(outcome, tmp_path) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.strip() == (f"4 jobs: 1 completed, 1 failed, 1 diverged, 1 unfinished; "
                                   f"see {tmp_path / 'summary.md'}")


def test_a_sweep_with_a_failed_and_a_diverged_job_exits_1_and_counts_them(tmp_path, demo_dir):
    """``python train.py -m`` whose three learning rates complete, diverge (1e12) and fail
    (``abc``): every job runs, the report is written, the counts are printed and the exit
    status is 1. The NaN job is ``diverged``, not ``failed``."""
    sweep_dir = tmp_path / "sweep"
    done = train_py("-m", *TINY_JOB, "optimizer=sgd", "optimizer.lr=0.01,1e12,abc",
                    "hydra.callbacks.sweep_report.resamples=20", f"paths.demo_dir={demo_dir}",
                    f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 1, done.stderr[-3000:]
    counts = f"3 jobs: 1 completed, 1 failed, 1 diverged; see {sweep_dir / 'summary.md'}"
    assert counts in done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    statuses = [results(sweep_dir / job)["status"] for job in "012"]
    assert statuses == ["completed", "diverged", "failed"]
    diverged, failed = results(sweep_dir / "1"), results(sweep_dir / "2")
    assert diverged["failed_at"] == "training"
    assert diverged["error"].startswith("Training diverged: ")
    assert "lower optimizer.lr" in diverged["error"] and "\n" not in failed["error"]
    text = (sweep_dir / "summary.md").read_text()
    assert f"- job 1 (1 of 3): diverged during training: {diverged['error']}" in text
    assert "- job 2 (1 of 3): failed " in text and failed["error"] in text


def leakage_tree(root: Path) -> Path:
    """A given split whose train/a/a0.png is also test/a/copy.png (cross-split leakage)."""
    value = 10
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("a", "b"):
            for i in range(count):
                value += 7
                write_gray(root / split / label / f"{label}{i}.png", value)
    (root / "test" / "a" / "copy.png").write_bytes((root / "train" / "a" / "a0.png").read_bytes())
    return root


def test_the_report_of_a_sweep_that_failed_at_the_data_check_says_so(tmp_path, one_torch_thread):
    """Every job loads and splits its data, then stops at the pre-training data check. The
    report used to say "No run got as far as loading its data"; it now says where they
    stopped, with the whole sentence."""
    root = leakage_tree(tmp_path / "images")
    sweep_dir = tmp_path / "sweep"
    for job, seed in enumerate((0, 1)):
        overrides = ["data=folder", f"data.root={root}", "data.split.mode=given",
                     "data.split.group_duplicates=false", *TINY_TRAINING,  # the folders as they are
                     "model.name=test_resnet", f"seed={seed}",
                     f"paths.cache_dir={tmp_path / 'cache'}"]
        cfg = multirun_mode_config(overrides, sweep_dir / str(job), None)
        assert math.isnan(run_job(cfg))  # the sweep goes on (a sweeper: a failed trial)
    first, second = results(sweep_dir / "0"), results(sweep_dir / "1")
    assert first["status"] == second["status"] == "failed"
    assert first["failed_at"] == second["failed_at"] == "data_check"
    assert first["error"] == second["error"] and first["error"].startswith("Cross-split leakage")
    assert len(first["error"]) > 200  # long enough that a shortened sentence would show
    assert first["config"]["seed"] == 0  # recorded although training never started
    text = (write_report(sweep_dir, resamples=10)).read_text()
    assert "got as far as loading" not in text
    assert "No run recorded its data's classes and split" in text
    stopped = f"- jobs 0, 1 (2 of 2): failed during the pre-training data check: {first['error']}"
    assert stopped in text.splitlines()
