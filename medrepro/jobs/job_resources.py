"""What a job of a parallel sweep gets of the machine: its own GPU and its share of the
CPU threads.

``python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=N ...`` runs N jobs at
once, each in one of N worker processes (joblib's loky backend) that runs job after job.
:func:`assign_job_resources`, called first thing in every job, gives the job

- **a GPU of its own**, when the sweep sees GPUs (the ``CUDA_VISIBLE_DEVICES`` list the
  sweep was started with, else every GPU of the machine): the worker process takes a free
  slot, one per GPU, by locking ``.gpu_slot_<k>.lock`` in the sweep folder, and keeps it as
  long as it lives (CUDA, once initialised in a process, stays on the GPU it started on, so
  the worker's later jobs run on the same GPU); ``CUDA_VISIBLE_DEVICES`` is set to that one
  GPU before CUDA is initialised. The operating system releases the lock when the process
  ends, however it ends. Two jobs never share a GPU: N larger than the number of GPUs stops
  every job with one sentence (unless the jobs train on the CPU, ``trainer.accelerator=cpu``:
  then a job without a free GPU sees none);
- **its share of the CPU threads**: ``torch.set_num_threads(cores // N)``, at least 1,
  whatever thread counts the shell set (joblib sets ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS`` and the like to cores // N in its workers, but only those the shell
  has not set, and torch follows them).

Jobs of other launchers are left as they are: the basic launcher runs one job at a time,
and submitit (``hydra/launcher=submitit_local|slurm``) starts each job in its own process
with the GPUs and CPUs the scheduler gave it. What the job got is returned
(:class:`JobResources`), and results.json records what every job runs with under
``resources`` (``CUDA_VISIBLE_DEVICES`` and torch's thread count).
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from medrepro.core.errors import ConfigError

log = logging.getLogger(__name__)

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLOT_LOCK = ".gpu_slot_{}.lock"  # in the sweep folder, held by the worker that uses GPU slot k
NO_GPU = ""  # CUDA_VISIBLE_DEVICES that hides every GPU


@dataclass(frozen=True)
class JobResources:
    """What a job of a parallel sweep got: ``gpu``, the ``CUDA_VISIBLE_DEVICES`` value it
    runs with (one GPU; ``""``: none; ``None``: the machine has none), and ``threads``,
    torch's CPU threads."""

    gpu: str | None
    threads: int


# this process's GPU slot (the lock, held for the process's lifetime, and the GPU), and
# CUDA_VISIBLE_DEVICES as the sweep set it, before a job of this process narrowed it
_held_slot: tuple[FileLock, str] | None = None
_UNCHANGED = object()
_visible_at_start: object = _UNCHANGED


def assign_job_resources(cfg: DictConfig) -> JobResources | None:
    """Give a job of a ``hydra/launcher=joblib`` sweep its GPU and CPU threads (see the
    module's docstring) and return what it got; ``None`` for any other job (nothing is
    changed). Stops with a :class:`ConfigError` when more jobs run at once than the sweep
    has GPUs."""
    launcher = _launcher()
    if launcher is None or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    parallel = parallel_jobs(launcher.get("n_jobs"))
    threads = max(cpu_count() // parallel, 1)
    gpu = _take_gpu(cfg, parallel)
    torch.set_num_threads(threads)
    # not logged here: a record in the job's log before its run folder is prepared would
    # read as an earlier attempt's (medrepro.jobs.resume); results.json records it
    return JobResources(gpu=gpu, threads=threads)


def parallel_jobs(n_jobs) -> int:
    """How many jobs joblib runs at once for ``hydra.launcher.n_jobs``: N, or for a negative
    N, cores + 1 + N (-1: one per core), at least 1."""
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return n_jobs if n_jobs > 0 else max(cpu_count() + 1 + n_jobs, 1)


def cpu_count() -> int:
    """The cores this process may use, as joblib counts them (CPU affinity and container
    limits included)."""
    from joblib import cpu_count as joblib_cpu_count

    return joblib_cpu_count()


def sweep_gpus() -> list[str]:
    """The GPUs the sweep sees: the entries of ``CUDA_VISIBLE_DEVICES`` as the sweep was
    started, else ``0 .. n-1`` for the machine's n GPUs (counted in a child process, so that
    this one's CUDA is not initialised before it is narrowed to the job's GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if _visible_at_start is _UNCHANGED else _visible_at_start
    if visible is not None:
        return [entry.strip() for entry in str(visible).split(",") if entry.strip()]
    return [str(index) for index in range(_machine_gpu_count())]


def _take_gpu(cfg: DictConfig, parallel: int) -> str | None:
    """The GPU of this job (this process's slot, taken now if it has none), set as
    ``CUDA_VISIBLE_DEVICES``; ``""`` for a CPU job that found no free slot, ``None`` when
    the sweep sees no GPU."""
    global _held_slot
    if _held_slot is not None:
        return _held_slot[1]
    gpus = sweep_gpus()
    if not gpus:
        return None
    on_cpu = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto")).lower() == "cpu"
    if parallel > len(gpus) and not on_cpu:
        raise ConfigError(
            f"hydra.launcher.n_jobs runs {parallel} jobs at once, but the sweep sees "
            f"{len(gpus)} GPU(s) ({','.join(gpus)}) and two jobs never share one: set "
            f"hydra.launcher.n_jobs={len(gpus)} or fewer, or train on the CPU with "
            "trainer.accelerator=cpu."
        )
    if torch.cuda.is_initialized():  # too late to narrow this process to one GPU
        log.warning("CUDA was initialised before the job's GPU was assigned; the job sees "
                    "CUDA_VISIBLE_DEVICES=%s.", os.environ.get("CUDA_VISIBLE_DEVICES"))
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    sweep_dir = _sweep_dir()
    for slot, gpu in enumerate(gpus):
        lock = FileLock(str(sweep_dir / SLOT_LOCK.format(slot)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        _held_slot = (lock, gpu)
        _narrow_visible_gpus(gpu)
        return gpu
    _narrow_visible_gpus(NO_GPU)  # a CPU job: no free GPU, and it needs none
    return NO_GPU


def _narrow_visible_gpus(value: str) -> None:
    global _visible_at_start
    if _visible_at_start is _UNCHANGED:
        _visible_at_start = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value


def _launcher() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().get("launcher")


def _sweep_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    sweep_dir = Path(HydraConfig.get().sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return sweep_dir


@functools.cache
def _machine_gpu_count() -> int:
    if torch.version.cuda is None:  # a CPU build of torch sees no GPU
        return 0
    counted = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, check=False)
    try:
        return int(counted.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.warning("Could not count the GPUs (%s); the jobs' GPUs are not assigned.",
                    counted.stderr.strip().splitlines()[-1:] or "no output")
        return 0
