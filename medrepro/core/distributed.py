"""Which process of a multi-process (DDP) job this is, how many processes a trainer setting
starts, and gathering Python objects from every process.

A job on N devices runs N processes (Lightning's DDP: the first one starts the others by
re-running the command with ``LOCAL_RANK`` set; under SLURM or torchrun every process is
started from outside). Each process trains on its share of the data; only the first one
(global rank 0) writes the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

# the variables by which Lightning (LOCAL_RANK, NODE_RANK), torchrun (RANK) and SLURM
# (SLURM_PROCID) tell a process of a multi-process job that it is not the first one
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
# accelerator settings that mean CUDA GPUs (``auto``: when there is one)
GPU_ACCELERATORS = ("gpu", "cuda")


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_first_process() -> bool:
    """Whether this is the job's first process (global rank 0): the process group's rank
    once it exists, else the launchers' environment variables (every one unset or 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def process_rank() -> int:
    """This process's global rank (0 in a single-process job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def gather_objects(value) -> list:
    """``value`` of every process, in rank order (``[value]`` in a single-process job).
    Every process must call it, at the same point."""
    if not is_distributed():
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def uses_gpus(accelerator) -> bool:
    """Whether a trainer's ``accelerator`` setting lands on CUDA GPUs here."""
    name = str(accelerator).lower()
    return (name in GPU_ACCELERATORS or name == "auto") and torch.cuda.is_available()


def processes_per_job(trainer: Mapping) -> int:
    """How many processes a trainer config (``devices``, ``num_nodes``, ``accelerator``)
    runs: one per device, on every node. ``devices`` -1 or ``auto`` on GPUs counts the
    GPUs of this machine; ``auto`` on a CPU is one process."""
    nodes = trainer.get("num_nodes") or 1
    return _device_count(trainer.get("devices", "auto"), trainer.get("accelerator", "auto")) * int(nodes)


def _device_count(devices, accelerator) -> int:
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)  # device indices, e.g. [0, 1]
    text = str(devices).strip().strip("[]")
    if "," in text:  # "0,1": device indices
        return len([part for part in text.split(",") if part.strip()])
    if text in ("auto", "-1"):
        return torch.cuda.device_count() if uses_gpus(accelerator) else 1
    try:
        return max(1, int(text))
    except ValueError:
        return 1  # not a count: Lightning says what is wrong with it
