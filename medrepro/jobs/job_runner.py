"""How a job ends: ``python train.py`` (and every job of a ``-m`` sweep) runs
:func:`run_job`, which runs :func:`~medrepro.jobs.training.train` and turns what went wrong
into a results.json status and one sentence."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medrepro.core.errors import TrainingDiverged, UserError, user_error_behind
from medrepro.core.run_folder import mark_failed
from medrepro.jobs.training import train

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float | None:
    """Run :func:`train`, turning a user's mistake into one sentence on stderr.

    In a single run the process then exits with status 1 (other exceptions propagate
    with their traceback). In a multirun any failing job is recorded as ``failed`` (or
    ``diverged``) in its own results.json, its traceback goes to the job's log, and the
    sweep goes on with the next job.
    """
    try:
        metrics = train(cfg)
    except Exception as raised:
        error = user_error_behind(raised)
        if error is None:
            if not _is_multirun():
                raise
            log.exception("The job failed; the sweep goes on.")
            _report_failure(cfg, "failed", _first_line(raised))
            return None
        status = "diverged" if isinstance(error, TrainingDiverged) else "failed"
        _report_failure(cfg, status, _sentence(error))
        if _is_multirun():
            return None
        raise SystemExit(1) from None
    optimised = cfg.get("optimized_metric")
    return metrics.get(optimised) if optimised else None


def _sentence(error: UserError) -> str:
    """The user's sentence, also when a DataLoader worker re-raised the error with the
    worker's traceback folded into the message."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    return message


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of the innermost cause (Hydra and Lightning wrap
    the error that actually happened)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _report_failure(cfg: DictConfig, status: str, message: str) -> None:
    print(f"\nError: {message}", file=sys.stderr)
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if output_dir and Path(output_dir).is_dir():
        mark_failed(output_dir, status, message)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
