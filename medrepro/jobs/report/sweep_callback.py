"""Hydra callback: write the sweep report when a multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from medrepro.jobs.report.summary import write_report

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """After the last job of a multirun, write summary.md and summary.csv into the sweep
    folder (as ``python report.py SWEEP_DIR`` would). A report that cannot be written is
    logged; it never fails the sweep, whose run folders are complete anyway."""

    def __init__(self, enabled: bool = True, resamples: int = 1000) -> None:
        self.enabled = enabled
        self.resamples = resamples

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            path = write_report(sweep_dir, resamples=self.resamples)
        except Exception:  # the sweep's results stay; report.py can be run again
            log.exception("Could not write the sweep report; run: python report.py %s", sweep_dir)
            return
        print(f"Sweep report: {path}")
