"""Hydra callback: how a multirun went, in one line and in the exit status."""

from __future__ import annotations

import shutil
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
# in the sweep folder: one file per job, named by its number, holding its status. A parallel
# launcher (joblib, submitit) calls on_job_end in the job's own process, not in the one that
# ends the multirun: the notes carry the statuses there
OUTCOMES_FOLDER = ".job_outcomes"


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
        notes = _outcomes_folder(config)
        if notes is not None:
            shutil.rmtree(notes, ignore_errors=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status == JobStatus.FAILED:
            status = "failed"
        else:
            output_dir = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
            results = read_results(output_dir) if output_dir else None
            status = (results or {}).get("status") or "without results.json"
            status = "unfinished" if status == "running" else status
        self.statuses.append(status)
        _note_status(config, status)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.statuses = _noted_statuses(_outcomes_folder(config)) or self.statuses
        line = outcome_line(self.statuses)
        report = Path(config.hydra.sweep.dir) / "summary.md"
        if report.is_file() and report.stat().st_mtime >= self._started:
            line += f"; see {report}"
        everything_completed = all(status == "completed" for status in self.statuses)
        print(line, file=sys.stdout if everything_completed else sys.stderr)
        if not everything_completed:
            raise SystemExit(EXIT_NOT_ALL_COMPLETED)


def _outcomes_folder(config: DictConfig) -> Path | None:
    sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    return Path(sweep_dir) / OUTCOMES_FOLDER if sweep_dir else None


def _note_status(config: DictConfig, status: str) -> None:
    folder, job = _outcomes_folder(config), OmegaConf.select(config, "hydra.job.num", default=None)
    if folder is not None and job is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(job)).write_text(status)


def _noted_statuses(folder: Path | None) -> list[str]:
    """The statuses the jobs of this multirun noted, in job order."""
    if folder is None or not folder.is_dir():
        return []
    return [note.read_text().strip() for note in sorted(folder.iterdir(), key=lambda p: int(p.name))]


def outcome_line(statuses: list[str]) -> str:
    """``3 jobs: 1 completed, 1 failed, 1 diverged`` (other statuses, such as
    ``interrupted``, follow when present)."""
    counts = Counter(statuses)
    names = [*ORDER, *sorted(set(counts) - set(ORDER))]
    noun = "job" if len(statuses) == 1 else "jobs"
    return f"{len(statuses)} {noun}: " + ", ".join(f"{counts[name]} {name}" for name in names)
