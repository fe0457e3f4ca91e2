"""What the training job adds to results.json beside the callbacks' own record: the
experiment and the run's deviations from it (known before training, so that a run that
fails records them too) and what the pre-training checks allowed (after the test).

The ResultsJSON callback rewrites the whole results.json at every stage from its ``results``
dict, so the deviations go into that dict rather than into the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from medrepro.callbacks.results_json import ResultsJSON
from medrepro.core.run_folder import SPLIT_CSV
from medrepro.jobs.report.allowed_checks import record_allowed_checks
from medrepro.jobs.report.protocol_deviations import experiment_name, protocol_record
from medrepro.jobs.report.run_metrics import read_table
from medrepro.jobs.report.run_report import write_run_report_after_job

log = logging.getLogger(__name__)


def record_protocol(callbacks: list[pl.Callback], cfg: DictConfig) -> dict:
    """Add ``experiment`` and ``deviations`` (results.json) to the ResultsJSON callback's
    record. A deviation list that cannot be made (e.g. an experiment composed from another
    config tree) is logged and recorded as ``null`` with the reason; the run goes on."""
    try:
        record = protocol_record(cfg)
    except Exception as error:  # noqa: BLE001  (a by-product: the training stands)
        log.warning("The deviations from the experiment were not determined (%s: %s).",
                    type(error).__name__, error)
        record = {"experiment": experiment_name(), "deviations": None,
                  "deviations_error": f"{type(error).__name__}: {error}"}
    for callback in callbacks:
        if isinstance(callback, ResultsJSON):
            callback.results.update(record)
    if record.get("deviations"):
        log.info("%d setting(s) differ from experiment %s (results.json deviations, report.md).",
                 len(record["deviations"]), record["experiment"])
    return record


def finish_training_folder(run_dir: str | Path) -> None:
    """After the test (the callbacks have written results.json for the last time): add
    ``allowed_checks`` to results.json, then write report.md. Neither fails the completed
    run: a failure is logged as a warning."""
    try:
        record_allowed_checks(run_dir, read_table(Path(run_dir) / SPLIT_CSV))
    except Exception as error:  # noqa: BLE001  (a by-product: the run's results stand)
        log.warning("allowed_checks was not recorded in results.json (%s: %s).",
                    type(error).__name__, error)
    write_run_report_after_job(run_dir)
