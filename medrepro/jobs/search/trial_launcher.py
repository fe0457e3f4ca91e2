"""The launcher of a search's trials (:class:`TrialLauncher`): the sweep's own launcher
(basic, joblib, submitit), with two changes the search needs."""

from __future__ import annotations

import logging
import math

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger(__name__)


class TrialLauncher:
    """Launches a search's trials with the sweep's launcher, except:

    - **A repeated trial is not run again.** A trial whose job would have the overrides of
      a finished trial of the study (the same parameters: Optuna's TPE draws a combination
      of choices again, often the best one) gets that trial's value, or fails as it did,
      without a job: the same configuration with the same seed gives the same result, and
      its job would take the earlier trial's completed run into its own folder
      (:func:`medrepro.jobs.resume.find_completed`), leaving that trial's folder empty. The
      repeat has no run folder (its job number is skipped).
    - **A return value that is not a finite number** (NaN: a failed or diverged job, see
      :func:`medrepro.jobs.job_runner.run_job`) becomes ``None``. The plugin (1.3.0) tells
      a NaN as FAIL *with* the value, which Optuna refuses ("Values cannot be specified
      when state is ... FAIL"): the whole search stopped with a traceback. ``None`` it
      tells as FAIL, and the search goes on.
    """

    def __init__(self, launcher, study=None) -> None:
        self.launcher = launcher
        self.study = study  # None: no study to look up (a study in memory)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        earlier = self._finished_trials()
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        to_run: list[int] = []
        for index, overrides in enumerate(job_overrides):
            repeated = earlier.get(frozenset(overrides))
            if repeated is None:
                to_run.append(index)
                continue
            log.info("Trial %d repeats trial %d's parameters: its value is trial %d's, without "
                     "a job.", initial_job_idx + index, repeated.number, repeated.number)
            returns[index] = _answered(overrides, repeated.value)
        for run in consecutive_runs(to_run):  # consecutive job numbers launch together
            launched = self.launcher.launch([job_overrides[i] for i in run],
                                            initial_job_idx=initial_job_idx + run[0])
            for index, job_return in zip(run, launched):
                returns[index] = job_return
        for job_return in returns:
            if job_return.status == JobStatus.COMPLETED and not _is_finite(job_return.return_value):
                job_return.return_value = None
        return returns

    def _finished_trials(self) -> dict:
        """The study's finished trials by the overrides of their jobs (the plugin's
        parameters, then its fixed overrides, which it stores as the trial's user
        attributes)."""
        import optuna

        if self.study is None:
            return {}
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        return {frozenset(trial_overrides(trial)): trial for trial in self.study.trials
                if trial.state in finished}


def trial_overrides(trial) -> tuple[str, ...]:
    """The overrides of a trial's job, as the plugin writes them: its parameters, then the
    fixed overrides (the command line's), which the plugin stores as user attributes."""
    return tuple(f"{name}={value}" for name, value in {**trial.params, **trial.user_attrs}.items())


def _answered(overrides, value) -> JobReturn:
    job_return = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    job_return.return_value = value  # None for a failed trial
    return job_return


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def consecutive_runs(numbers: list[int]) -> list[list[int]]:
    """``numbers`` (ascending) in runs of consecutive numbers: [1, 2, 4] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and runs[-1][-1] + 1 == number:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs
