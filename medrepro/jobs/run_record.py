"""What the training job adds to results.json beside the callbacks' own record: the
experiment and the run's deviations from it (known before training, so that a run that
fails records them too) and what the pre-training checks allowed (right after them).

The ResultsJSON callback rewrites the whole results.json at every stage from its ``results``
dict, so the deviations go into that dict rather than into the file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from medrepro.callbacks.results_json import ResultsJSON
from medrepro.jobs.report.allowed_checks import allowed_checks
from medrepro.jobs.report.protocol_deviations import experiment_name, protocol_record
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
    _add_to_results(callbacks, record)
    if record.get("deviations"):
        log.info("%d setting(s) differ from experiment %s (results.json deviations, report.md).",
                 len(record["deviations"]), record["experiment"])
    return record


def record_allowed(callbacks: list[pl.Callback], cfg: DictConfig, datamodule) -> dict:
    """After the checks before training: add ``allowed_checks`` (results.json) to the
    ResultsJSON callback's record, from the data module's findings and split, so that every
    later write of results.json (and the copy a logger uploads at the end) holds it."""
    results = {"data": datamodule.data_facts(),
               "config": {"data": {"checks": OmegaConf.to_container(cfg.data.get("checks") or {},
                                                                     resolve=True)}}}
    record = {"allowed_checks": allowed_checks(results, datamodule.manifest)}
    _add_to_results(callbacks, record)
    return record["allowed_checks"]


def _add_to_results(callbacks: list[pl.Callback], record: dict) -> None:
    """``record``'s keys into the ResultsJSON callback's record, which it writes whole."""
    for callback in callbacks:
        if isinstance(callback, ResultsJSON):
            callback.results.update(record)


def finish_training_folder(run_dir: str | Path) -> None:
    """After the test (the callbacks have written results.json for the last time): write
    report.md. It does not fail the completed run: a failure is logged as a warning."""
    write_run_report_after_job(run_dir)
