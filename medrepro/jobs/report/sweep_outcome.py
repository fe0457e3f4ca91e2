"""Hydra callback: how a multirun went, in one line and in the exit status."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from medrepro.core.run_folder import read_results

EXIT_NOT_ALL_COMPLETED = 1
ORDER = ("completed", "failed", "diverged")  # always shown; any other status after them


class SweepOutcome(Callback):
    """Counts the statuses this multirun's jobs recorded in their results.json, prints
    ``3 jobs: 1 completed, 1 failed, 1 diverged; see <sweep>/summary.md`` when the sweep
    ends, and ends the process with exit status 1 unless every job completed.

    A job that was skipped because its folder already held its completed results counts as
    completed. A job whose exception escaped :func:`~medrepro.jobs.job_runner.run_job`
    (Hydra then marks it failed) counts as failed.

    Hydra calls the ``on_multirun_end`` of its callbacks in reverse order, so listed before
    ``sweep_report`` in ``conf/hydra/default.yaml`` this one runs after the report is
    written. Hydra passes on a ``SystemExit`` raised here (it catches only ``Exception``),
    which is how the exit status reaches the shell: ``hydra.main`` itself returns nothing
    for a multirun.
    """

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self._started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.statuses = []
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status == JobStatus.FAILED:
            self.statuses.append("failed")
            return
        output_dir = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        results = read_results(output_dir) if output_dir else None
        status = (results or {}).get("status") or "without results.json"
        self.statuses.append("unfinished" if status == "running" else status)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        line = outcome_line(self.statuses)
        report = Path(config.hydra.sweep.dir) / "summary.md"
        if report.is_file() and report.stat().st_mtime >= self._started:
            line += f"; see {report}"
        everything_completed = all(status == "completed" for status in self.statuses)
        print(line, file=sys.stdout if everything_completed else sys.stderr)
        if not everything_completed:
            raise SystemExit(EXIT_NOT_ALL_COMPLETED)


def outcome_line(statuses: list[str]) -> str:
    """``3 jobs: 1 completed, 1 failed, 1 diverged`` (other statuses, such as
    ``interrupted``, follow when present)."""
    counts = Counter(statuses)
    names = [*ORDER, *sorted(set(counts) - set(ORDER))]
    noun = "job" if len(statuses) == 1 else "jobs"
    return f"{len(statuses)} {noun}: " + ", ".join(f"{counts[name]} {name}" for name in names)
