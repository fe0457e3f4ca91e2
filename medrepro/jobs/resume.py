"""A job's run folder before the job starts: skip it, resume it, or start it clean.

- **Single run** (``python train.py``): ``ckpt_path=last`` continues the run in its own
  folder (``hydra.run.dir``) from ``checkpoints/last.ckpt``, ``ckpt_path=FILE`` from any
  training checkpoint. Without ``ckpt_path``, a folder that holds the completed results of
  the same configuration is not run again, and any other earlier attempt is moved aside.
- **Sweep job** (``-m`` into an existing ``hydra.sweep.dir``): a job is matched to earlier
  results by its configuration, not its job number. An interrupted attempt of the same
  configuration in the job's folder is resumed from its ``last.ckpt``; a completed run of
  it anywhere in the sweep folder (another job number after the arm list changed, or a
  folder moved aside) is moved into the job's folder and not run again.
- **Starting clean** moves the files of an earlier attempt (another configuration, or one
  that is not resumed) into ``previous/<its start time>/`` inside the run folder: nothing
  is deleted, and the run folder never mixes two attempts' checkpoints, predictions or plots.

Configurations are compared as results.json stores them, without the keys that depend on
the run folder (any path inside it) or on ``ckpt_path``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from medrepro.core.distributed import is_first_process
from medrepro.core.errors import ConfigError
from medrepro.core.run_folder import (
    CHECKPOINTS_FOLDER,
    RESULTS_JSON,
    is_inside,
    read_results,
    write_results,
)

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
PREVIOUS_FOLDER = "previous"  # earlier attempts moved aside, one sub-folder each
HYDRA_FOLDER = ".hydra"  # the current job's composed config, written by Hydra before it starts
LOCK_FILE = ".run_folders.lock"  # in the sweep folder, while a job prepares its folder
RUN_FOLDER = "<run folder>"  # stands for the run folder when configurations are compared
TRAINING_STATE = ("state_dict", "loops", "optimizer_states")  # what a resumable checkpoint holds


@dataclass(frozen=True)
class JobStart:
    """How a job starts: ``completed`` is the results.json of a completed run of its
    configuration (the job is not run again); ``checkpoint``, the checkpoint its fit
    resumes from; neither: a fresh start."""

    completed: dict | None = None
    checkpoint: Path | None = None


def prepare_run_folder(cfg: DictConfig) -> JobStart:
    """Decide how the job starts and make its run folder ready for it (see the module's
    docstring). A ``ckpt_path`` that is missing, not a checkpoint that loads safely, or that
    continues a run of another configuration stops with a :class:`ConfigError`."""
    output_dir = Path(cfg.paths.output_dir)
    config = resolved_config(cfg)
    requested = cfg.get("ckpt_path")
    sweep_dir = sweep_dir_of(output_dir)
    if not is_first_process():
        return _start_of_another_rank(output_dir, requested)
    # jobs of one sweep that run at once move files between each other's folders
    with FileLock(str(sweep_dir / LOCK_FILE)) if sweep_dir is not None else nullcontext():
        return _prepare(output_dir, config, None if requested is None else str(requested), sweep_dir)


def _start_of_another_rank(output_dir: Path, requested) -> JobStart:
    """The start of a process other than the first in a multi-process run (DDP): the
    checkpoint ``ckpt_path`` names, decided without moving any file (the first process has
    prepared the run folder and is writing into it). A sweep job's automatic resume is the
    first process's decision only."""
    if requested is not None:
        return JobStart(checkpoint=resolve_checkpoint(str(requested), output_dir))
    return JobStart()


def _prepare(output_dir: Path, config: dict, requested: str | None, sweep_dir: Path | None) -> JobStart:
    earlier = read_results(output_dir)
    same = earlier is not None and same_configuration(earlier.get("config"), config)
    if same and _is_completed(earlier):
        log.info("Skipped: %s already holds the completed results of this configuration.", output_dir)
        return JobStart(completed=earlier)
    if requested is not None:
        return _requested_start(output_dir, earlier, same, requested, config)
    if sweep_dir is not None:
        return _sweep_job_start(output_dir, earlier, same, config, sweep_dir)
    moved = move_aside(output_dir, earlier)
    if moved is not None and same:
        log.warning("The earlier attempt of this configuration is now in %s; this run starts "
                    "again from epoch 1 (ckpt_path=last continues an attempt instead).", moved)
    return JobStart()


def _requested_start(output_dir: Path, earlier: dict | None, same: bool, requested: str,
                     config: dict) -> JobStart:
    """``ckpt_path`` set: continue in place (a checkpoint of this run folder, whose earlier
    attempt must be of the same configuration), or start from another run's checkpoint."""
    checkpoint = resolve_checkpoint(requested, output_dir)
    if is_inside(checkpoint, output_dir):
        if earlier is not None and not same:
            raise ConfigError(_other_configuration_sentence(requested, output_dir, earlier, config))
    else:
        move_aside(output_dir, earlier)
    return JobStart(checkpoint=checkpoint)


def _sweep_job_start(output_dir: Path, earlier: dict | None, same: bool, config: dict,
                     sweep_dir: Path) -> JobStart:
    """A sweep job: resume its interrupted attempt, or start clean and take a completed run
    of its configuration from elsewhere in the sweep folder if there is one."""
    last = output_dir / CHECKPOINTS_FOLDER / LAST_CHECKPOINT
    if same and last.exists():
        try:
            check_checkpoint(last)
        except ConfigError as error:
            log.warning("%s The job starts again.", error)
        else:
            log.info("Resuming the interrupted job in %s from %s.", output_dir, last)
            return JobStart(checkpoint=last)
    move_aside(output_dir, earlier)
    found = find_completed(sweep_dir, config)
    return JobStart(completed=adopt(found, output_dir, config)) if found is not None else JobStart()


def resolved_config(cfg: DictConfig) -> dict:
    """The job's resolved configuration as results.json stores it (JSON types, ``str()`` of
    anything else)."""
    return json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))


def same_configuration(recorded: dict | None, config: dict | None) -> bool:
    """Whether two resolved configurations (as results.json stores them) describe the same
    job, apart from their run folders and ``ckpt_path``."""
    if not isinstance(recorded, dict) or not isinstance(config, dict):
        return False
    return _comparable(recorded) == _comparable(config)


def configuration_differences(recorded: dict, config: dict) -> list[str]:
    """The dotted keys whose values differ between two configurations (as
    :func:`same_configuration` compares them)."""
    return _differences(_comparable(recorded), _comparable(config))


def resolve_checkpoint(requested: str, output_dir: Path) -> Path:
    """The checkpoint file ``ckpt_path`` names: ``last`` is the run folder's
    ``checkpoints/last.ckpt``; it must exist and load safely (:func:`check_checkpoint`)."""
    if requested == "last":
        path = output_dir / CHECKPOINTS_FOLDER / LAST_CHECKPOINT
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last found no checkpoint at {path}; pass the folder of the run to "
                "continue as hydra.run.dir=DIR (it holds checkpoints/last.ckpt), or a "
                "checkpoint file as ckpt_path=FILE."
            )
    else:
        path = Path(requested).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path={requested}: no such checkpoint file; pass a run's "
                "checkpoints/last.ckpt (or ckpt_path=last with hydra.run.dir set to its run folder)."
            )
    check_checkpoint(path)
    return path


def check_checkpoint(path: Path) -> dict:
    """Load ``path`` as ``trainer.fit(ckpt_path=...)`` will (``weights_only=True``: nothing in
    it can run code; memory-mapped, so the tensors are not read) and check that it holds a
    training state to resume; return it."""
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol: the sentence below says it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # text, pickled code, a truncated file, ...
        damaged = "zip archive" in str(error) or isinstance(error, EOFError)
        reason = "the file is truncated or damaged" if damaged else type(error).__name__
        raise ConfigError(
            f"Cannot resume from {path}: it is not a checkpoint that loads safely as plain "
            f"data ({reason}); pass a checkpoint that medrepro's training wrote, or start "
            "without ckpt_path."
        ) from error
    if not isinstance(checkpoint, dict) or not all(key in checkpoint for key in TRAINING_STATE):
        raise ConfigError(
            f"Cannot resume from {path}: it holds no training state (weights, optimiser and "
            f"epoch); to start a new run from its weights, use model.weights={path} instead of ckpt_path."
        )
    return checkpoint


def check_checkpoint_fits(model: torch.nn.Module, path: Path) -> None:
    """Stop with one sentence when the checkpoint's weights do not fit the model built from
    the job's configuration (another model, class count or channel count)."""
    saved = check_checkpoint(path)["state_dict"]
    own = model.state_dict()
    misfits = [key for key in own if key not in saved or tuple(saved[key].shape) != tuple(own[key].shape)]
    misfits += [key for key in saved if key not in own]
    if misfits:
        key = misfits[0]
        here = tuple(own[key].shape) if key in own else "absent"
        there = tuple(saved[key].shape) if key in saved else "absent"
        raise ConfigError(
            f"Cannot resume from {path}: it holds the weights of another model ({len(misfits)} "
            f"tensor(s) differ, e.g. {key}: {there} in the checkpoint, {here} here); resume with "
            "the overrides of the run that wrote it."
        )


def move_aside(run_dir: Path, earlier: dict | None = None) -> Path | None:
    """Move the files of an earlier attempt in ``run_dir`` into ``previous/<its start
    time>/`` (the current job's ``.hydra`` stays; a log file is copied there and emptied,
    since the job is already writing to it); return that folder, or ``None`` when there
    was nothing to move."""
    if not run_dir.is_dir():
        return None
    entries = [p for p in sorted(run_dir.iterdir()) if p.name not in (HYDRA_FOLDER, PREVIOUS_FOLDER)]
    logs = [p for p in entries if p.suffix == ".log" and p.is_file() and not p.is_symlink()]
    files = [p for p in entries if p not in logs]
    logs = [p for p in logs if p.stat().st_size > 0]
    if not files and not logs:
        return None
    target = _previous_folder(run_dir, earlier, entries)
    for path in files:
        shutil.move(str(path), str(target / path.name))
    for path in logs:
        shutil.copy2(path, target / path.name)
        os.truncate(path, 0)
    log.info("Moved the files of an earlier attempt in %s aside, into %s.", run_dir, target)
    return target


def find_completed(sweep_dir: Path, config: dict) -> Path | None:
    """A folder of ``sweep_dir`` that holds a completed run of ``config``: a job folder of
    any number, or a folder moved aside in one (``<job>/previous/<time>/``)."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        previous = job / PREVIOUS_FOLDER
        earlier = sorted(p for p in previous.iterdir() if p.is_dir()) if previous.is_dir() else []
        for folder in [job, *earlier]:
            results = read_results(folder)
            if results and _is_completed(results) and same_configuration(results.get("config"), config):
                return folder
    return None


def adopt(found: Path, output_dir: Path, config: dict) -> dict:
    """Move a completed run's files from ``found`` into the job's (emptied) ``output_dir``,
    with the paths in its results.json pointing there and ``moved_from`` recording where
    it was; return that results.json. The other job's ``.hydra`` and log stay."""
    results = read_results(found) or {}
    for path in sorted(found.iterdir()):
        if path.name in (HYDRA_FOLDER, PREVIOUS_FOLDER) or path.suffix == ".log":
            continue
        shutil.move(str(path), str(output_dir / path.name))
    if found.parent.name == PREVIOUS_FOLDER and not any(found.iterdir()):
        found.rmdir()
    old = (results.get("config") or {}).get("paths", {}).get("output_dir")
    if old:
        results = _rebase(results, str(old), str(config["paths"]["output_dir"]))
    if results.get("run_dir"):
        results = _rebase(results, str(results["run_dir"]), str(output_dir.resolve()))
    results["moved_from"] = str(found.resolve())
    write_results(output_dir / RESULTS_JSON, results)
    log.info("Skipped: the completed results of this configuration were in %s; moved into %s.",
             found, output_dir)
    return results


def _is_completed(results: dict) -> bool:
    return results.get("status") == "completed" and "test" in results


def _comparable(config: dict) -> dict:
    config = {key: value for key, value in config.items() if key != "ckpt_path"}
    run_dir = (config.get("paths") or {}).get("output_dir")
    return _rebase(config, str(run_dir), RUN_FOLDER) if run_dir else config


def _rebase(value, old: str, new: str):
    """``value`` with every string that is ``old`` or a path inside it moved to ``new``."""
    if isinstance(value, dict):
        return {key: _rebase(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebase(item, old, new) for item in value]
    if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old):]
    return value


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]


def _other_configuration_sentence(requested: str, output_dir: Path, earlier: dict, config: dict) -> str:
    keys = configuration_differences(earlier.get("config") or {}, config) or ["its configuration"]
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    return (f"ckpt_path={requested}: {output_dir} holds a run of another configuration "
            f"(differing in {shown}); resume with the overrides that run was started with, "
            f"or start a new run folder from its checkpoint with "
            f"ckpt_path={output_dir / CHECKPOINTS_FOLDER / LAST_CHECKPOINT}.")


def _previous_folder(run_dir: Path, earlier: dict | None, entries: list[Path]) -> Path:
    """A new ``previous/<time>`` folder, named after the attempt's start (results.json's
    ``started_at``, else its newest file), as Hydra names run folders."""
    try:
        started = datetime.fromisoformat(str((earlier or {})["started_at"])).astimezone()
    except (KeyError, ValueError):
        newest = max((p.lstat().st_mtime for p in entries), default=0.0)
        started = datetime.fromtimestamp(newest)
    stamp = started.strftime("%Y-%m-%d_%H-%M-%S")
    folder, count = run_dir / PREVIOUS_FOLDER / stamp, 1
    while folder.exists():
        count += 1
        folder = run_dir / PREVIOUS_FOLDER / f"{stamp}_{count}"
    folder.mkdir(parents=True)
    return folder


def is_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_dir_of(output_dir: Path) -> Path | None:
    """The sweep folder of a multirun job (``hydra.sweep.dir``, which holds the job's run
    folder; else the run folder's parent), ``None`` outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if not is_multirun():
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return sweep_dir if is_inside(output_dir, sweep_dir) else output_dir.parent
