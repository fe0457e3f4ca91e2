"""How a job ends: ``python train.py`` (and every job of a ``-m`` sweep) runs
:func:`run_job`, which runs :func:`~medrepro.jobs.training.train` and turns however it
stopped into a results.json status, one sentence and an exit status.

=====================================  ============  ==========================================
how the job stopped                    ``status``    ``error`` (also printed as ``Error: ...``)
=====================================  ============  ==========================================
it finished                            completed     (none)
a user's mistake (:class:`UserError`)  failed        the error's own sentence
loss or outputs not finite / exploded  diverged      :class:`TrainingDiverged`'s sentence
no space left on the disk (or quota)   failed        the file that could not be written, and
                                                     what to do
any other exception (a bug)            failed        ``Type: first line of the message`` and
                                                     where the traceback is (the job's log)
Ctrl-C                                 interrupted   how to continue
SIGTERM, or submitit's pre-emption     interrupted   how to continue (submitit: it requeues the
and time-limit signal (SLURM)                        job, which resumes from its last.ckpt)
=====================================  ============  ==========================================

Each record also says at which step the job stopped (``failed_at``, see
:mod:`medrepro.jobs.job_steps`). A single run then exits with status 1 (130 after Ctrl-C);
in a multirun the sweep goes on with the next job (Ctrl-C and SIGTERM stop the sweep, with
exit status 130 and 143), and
:class:`~medrepro.jobs.report.sweep_outcome.SweepOutcome` sets the sweep's exit status.
The traceback of an unexpected exception goes to the job's log only (``train.log`` in the
run folder), which is what a bug report needs; the console shows the one line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from medrepro.core.distributed import is_first_process, process_rank
from medrepro.core.errors import TrainingDiverged, UserError, disk_full_behind, user_error_behind
from medrepro.core.quiet import FILE_ONLY
from medrepro.core.run_folder import CHECKPOINTS_FOLDER, is_inside, mark_failed, read_results
from medrepro.jobs.job_resources import assign_job_resources
from medrepro.jobs.job_steps import current_step, describe_step
from medrepro.jobs.resume import is_multirun, resolved_config, same_configuration, sweep_dir_of
from medrepro.jobs.training import train

log = logging.getLogger(__name__)
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


def run_job(cfg: DictConfig, job: Callable[[DictConfig], dict] = train) -> float | None:
    """Run ``job`` (:func:`train`; eval.py runs the evaluation job) and record how it
    ended; return the optimised metric (a sweeper may read it), or NaN for a job of a
    multirun that did not complete (a sweeper such as Optuna records the trial as failed
    and goes on; the basic launcher ignores it)."""
    try:
        assign_job_resources(cfg)  # a parallel sweep's job: its own GPU and share of the threads
        metrics = job(cfg)
    except KeyboardInterrupt:
        _interrupted(cfg)
    except SystemExit as stop:
        # Lightning turns Ctrl-C during fit/validate/test into sys.exit(1), raised while
        # handling the KeyboardInterrupt
        if isinstance(stop.__context__, KeyboardInterrupt):
            _interrupted(cfg)
        if os.environ.get("SUBMITIT_EXECUTOR"):  # submitit's pre-emption/time-out handler
            _stopped_from_outside(cfg)
        elif isinstance(stop, SIGTERMException):  # Lightning's exit after a SIGTERM (code None)
            _stopped_from_outside(cfg)
            raise SystemExit(EXIT_TERMINATED) from None
        raise
    except Exception as raised:  # noqa: BLE001  (any exception: results.json must say so)
        status, sentence = _outcome(raised, cfg)
        _record(cfg, status, sentence)
        if is_multirun():
            return float("nan")
        raise SystemExit(EXIT_FAILED) from None
    optimised = cfg.get("optimized_metric")
    if not optimised:
        return None
    if optimised not in metrics:  # e.g. a per-class metric of a class the data do not have
        log.warning("optimized_metric '%s' is not one of the job's metrics (%s); the job "
                    "returns NaN.", optimised, ", ".join(sorted(metrics)))
        return float("nan")
    return metrics[optimised]


def _outcome(raised: Exception, cfg: DictConfig) -> tuple[str, str]:
    """(status, the one sentence) for an exception that stopped the job."""
    full = disk_full_behind(raised)
    if full is not None:
        log.debug("No space left on the device.", exc_info=raised)
        return "failed", _disk_full_sentence(full, cfg)
    error = user_error_behind(raised)
    if error is not None:
        return ("diverged" if isinstance(error, TrainingDiverged) else "failed"), _sentence(error)
    log.error("Unexpected error %s; its traceback:", describe_step(current_step()),
              exc_info=raised, extra={FILE_ONLY: True})
    step, where = describe_step(current_step()), _log_file() or "the job's log"
    return "failed", (f"{_first_line(raised)} (an unexpected error {step}; "
                      f"the traceback is in {where})")


def _interrupted(cfg: DictConfig) -> None:
    """Record a Ctrl-C and stop the process (the whole sweep in a multirun)."""
    output_dir = _output_dir(cfg)
    has_last = output_dir is not None and any((output_dir / CHECKPOINTS_FOLDER).glob("last*.ckpt"))
    again = _how_to_continue(cfg, has_last)
    _record(cfg, "interrupted", f"Interrupted by Ctrl-C {describe_step(current_step())}; {again}.")
    raise SystemExit(EXIT_INTERRUPTED) from None


def _stopped_from_outside(cfg: DictConfig) -> None:
    """Record a job stopped by a signal from outside (SIGTERM, which Lightning turns into
    an exit at the next batch; or submitit's handler of SLURM's pre-emption and time-limit
    signal, which has requeued the job) as ``interrupted``, with how it continues; the
    exit itself goes on."""
    step = describe_step(current_step())
    if os.environ.get("SUBMITIT_EXECUTOR"):
        how = ("submitit requeues the job (unless it has used up hydra.launcher.max_num_timeout), "
               "and it resumes from its checkpoints/last.ckpt")
    else:
        how = _how_to_continue(cfg, has_last=True)
    _record(cfg, "interrupted", f"Stopped by a signal from outside (pre-emption, a time limit or "
                                f"SIGTERM) {step}; {how}.")


def _how_to_continue(cfg: DictConfig, has_last: bool) -> str:
    """The command that continues a stopped job: the sweep again in a multirun, else the
    run from its last.ckpt (when it has one)."""
    output_dir = _output_dir(cfg)
    if is_multirun():
        return (f"run the same command with hydra.sweep.dir={sweep_dir_of(output_dir)} to finish "
                "the sweep (completed jobs are skipped)")
    if has_last:
        return f"run the same command with hydra.run.dir={output_dir} ckpt_path=last to continue"
    return "run the same command again"


def _sentence(error: UserError) -> str:
    """The user's sentence, also when a DataLoader worker re-raised the error with the
    worker's traceback folded into the message."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message


def _disk_full_sentence(error: OSError, cfg: DictConfig) -> str:
    """Which file or folder could not be written, and what to do."""
    quota = error.strerror and "quota" in error.strerror.lower()
    problem = "The disk quota is exceeded" if quota else "No space is left on the disk"
    path = error.filename2 or error.filename
    output_dir = _output_dir(cfg)
    if path:
        target = f"to write {path}"
    elif output_dir is not None:
        target = f"{describe_step(current_step())} (run folder {output_dir})"
    else:
        target = describe_step(current_step())
    setting = "hydra.sweep.dir" if is_multirun() else "hydra.run.dir"
    cache_dir = OmegaConf.select(cfg, "data.cache.dir", default=None)
    if path and cache_dir and is_inside(os.path.realpath(path), os.path.realpath(cache_dir)):
        setting = "data.cache.dir"
    return (f"{problem} {target}; free space there, or write to another disk with "
            f"{setting}=DIR, and run the command again.")


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of the innermost cause (Hydra and Lightning wrap
    the error that actually happened)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _record(cfg: DictConfig, status: str, message: str) -> None:
    """Print ``Error: <sentence>`` and write it into results.json (as far as the disk allows).

    The sentence stays one line (a newline in a file name is shown as ``\\n``). A results.json
    of another configuration (a job stopped before it moved an earlier run aside, e.g.
    ``ckpt_path=last`` with other overrides) is left as it was: it describes that run.
    In a multi-process (DDP) job only the first process writes results.json; the others
    print their sentence with their rank (and log it to their own log file)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if not is_first_process():
        print(f"\nError (process {process_rank()}): {message}", file=sys.stderr)
        log.error("Error: %s", message, extra={FILE_ONLY: True})
        return
    print(f"\nError: {message}", file=sys.stderr)
    log.error("Error: %s", message, extra={FILE_ONLY: True})
    output_dir = _output_dir(cfg)
    if output_dir is None or not output_dir.is_dir():
        return
    resolved = _resolved(cfg)
    earlier = read_results(output_dir)
    if earlier and earlier.get("config") is not None and not same_configuration(earlier["config"], resolved):
        print(f"(results.json in {output_dir} records another configuration's run and was "
              "left as it was)", file=sys.stderr)
        return
    try:
        mark_failed(output_dir, status, message, failed_at=current_step(), config=resolved)
    except OSError as error:
        print(f"(results.json in {output_dir} could not be updated: {error})", file=sys.stderr)


def _resolved(cfg: DictConfig) -> dict | None:
    """The resolved configuration as results.json stores it, or ``None`` when it does not
    resolve (itself a mistake)."""
    try:
        return resolved_config(cfg)
    except Exception:  # noqa: BLE001  (an unresolvable config is not recorded)
        return None


def _output_dir(cfg: DictConfig) -> Path | None:
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    return Path(output_dir) if output_dir else None


def _log_file() -> str | None:
    """The job's log file (Hydra's file handler), if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_file():
            return handler.baseFilename
    return None


