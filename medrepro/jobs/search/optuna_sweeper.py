"""``hparams_search=optuna``: Hydra's Optuna sweeper (hydra-optuna-sweeper), with what a
search of medrepro needs on top of it.

- **It continues a study.** The study lives in an SQLite file in the sweep folder
  (``hydra.sweeper.storage``, made absolute here, the folder created first). Running the
  same command again with ``hydra.sweep.dir=THAT_FOLDER`` continues it: the study's trials
  count toward ``hydra.sweeper.n_trials`` (the plugin alone would run n_trials more) and new
  jobs are numbered after the earlier ones (the plugin alone numbers them from 0 again, into
  the earlier trials' run folders), so trial N's run folder is job N's.
- **A trial left running** by the interruption (Ctrl-C, a killed process) is run again in its
  own run folder with its own parameters, before any new trial: the job resumes from its
  ``last.ckpt`` (:mod:`medrepro.jobs.resume`) or takes its completed results, and the trial
  is told its value. It is neither lost nor counted twice.
- **A seeded sampler** is seeded ``seed + trials so far`` when a study continues: the same
  seed again would draw the first run's first parameters again.
- **The direction follows the metric** (``hydra.sweeper.direction: auto``): minimize for a
  loss or MSE, maximize for anything else (AUROC, accuracy, F1, ...).
- **Only a validation metric** may be optimised: a search on ``test/...`` would tune on the
  test set (one sentence, exit status 1, before any job). The study records its metric;
  continuing it with another one stops the same way.
- **A repeated trial** (the parameters of a finished one) gets that trial's value without a
  job, and **a failed or diverged trial** (the job returns NaN) is told FAIL and the search
  goes on (:class:`~medrepro.jobs.search.trial_launcher.TrialLauncher`);
  at the end, ``optimization_results.yaml`` in the sweep folder holds the best trial (its
  number is its job's), its parameters and value, and how many trials completed or failed,
  also when none completed (the plugin would stop with a traceback).

One search process per sweep folder: a second one would take the first one's running trials
for interrupted ones.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, ListConfig, OmegaConf

from medrepro.core.errors import ConfigError
from medrepro.jobs.search.trial_launcher import TrialLauncher, consecutive_runs, trial_overrides

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # the plugin's name for it, in the sweep folder
SQLITE = "sqlite:///"
LOWER_IS_BETTER = ("loss", "mse")  # metrics (after "val/", before a per-class "_<class>")
SEARCHED_STAGE = "val"
METRIC_ATTRIBUTE = "optimized_metric"  # the study's user attribute that records it


def direction_of(metric: str) -> str:
    """``minimize`` for a loss or an MSE (``val/loss``, ``val/mse``), else ``maximize``."""
    name = str(metric).partition("/")[2].split("_")[0]
    return "minimize" if name in LOWER_IS_BETTER else "maximize"


def check_no_search_over_folds(choices) -> None:
    """Raise :class:`ConfigError` when ``cv`` (k-fold cross-validation) is chosen too: the
    search would tune ``data.split.fold`` like a hyper-parameter and report the fold that
    happened to score best."""
    if choices.get("cv"):
        raise ConfigError(
            f"hparams_search=optuna cannot be combined with cv={choices.get('cv')}: the search would "
            "pick the fold that scores best; search first, then run cv=kfold with the settings it found."
        )


def check_searched_metric(metric) -> None:
    """Raise :class:`ConfigError` unless ``metric`` is a validation metric (``val/...``)."""
    if not metric:
        raise ConfigError("hparams_search=optuna needs optimized_metric, the validation metric "
                          "each trial returns (e.g. optimized_metric=val/auroc).")
    if str(metric).partition("/")[0] != SEARCHED_STAGE:
        raise ConfigError(
            f"hparams_search=optuna optimises a validation metric, not optimized_metric={metric}: "
            "a search on the test set would tune on it and report an optimistic test score; "
            "use e.g. optimized_metric=val/auroc or val/loss."
        )


def absolute_storage(storage):
    """An ``sqlite:///PATH`` storage with PATH made absolute (relative to the working
    folder, as SQLite would read it) and its folder created; any other storage as it is."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE):
        return storage
    path = Path(storage[len(SQLITE):]).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE}{path}"


class ContinuableOptunaSweeper(OptunaSweeper):
    """The plugin's ``OptunaSweeper`` that continues its study (see the module's docstring).

    Hydra accepts a sweeper only from the ``hydra_plugins`` package:
    ``hydra_plugins.medrepro_search.OptunaSearchSweeper`` is this class there
    (conf/hparams_search/optuna.yaml names it)."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        search = self.sweeper  # the plugin's implementation: its settings and launcher
        metric = config.get("optimized_metric")
        try:
            check_searched_metric(metric)
            check_no_search_over_folds(config.hydra.runtime.choices)
        except ConfigError as error:
            _stop(str(error))
        if search.direction == "auto":
            search.direction = direction_of(metric)
        search.storage = absolute_storage(search.storage)
        self.config = config
        self.metric = str(metric)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        search = self.sweeper
        study = self._open_study()
        search.launcher = TrialLauncher(search.launcher, study)
        done = len(study.trials) if study is not None else 0
        if done:
            self._finish_running_trials(study)
            search.job_idx = done
            search.n_trials = max(0, search.n_trials - done)
            log.info("Continuing study %s: %d trials so far, %d to go.", study.study_name, done,
                     search.n_trials)
            self._reseed_sampler(done)
        try:
            super().sweep(arguments)
        except ValueError:  # the plugin's study.best_trial when no trial completed
            states = {trial.state for trial in study.trials} if study is not None else set()
            if not states or states & {optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE}:
                raise
            log.error("No trial of the search completed: no best parameters.")
        if study is not None:
            write_search_results(study, Path(self.config.hydra.sweep.dir) / RESULTS_FILE, self.metric)

    def _open_study(self):
        """The search's study in its storage, loaded or created (as the plugin would), with
        the optimised metric recorded in it; ``None`` without a storage (a study in memory
        cannot be continued). Continuing a study of another metric or direction stops with
        one sentence."""
        import optuna

        search = self.sweeper
        if search.storage is None:
            return None
        listed = search.direction if isinstance(search.direction, (list, ListConfig)) else [search.direction]
        directions = [str(getattr(d, "name", d)).lower() for d in listed]
        names = {s.study_name for s in optuna.study.get_all_study_summaries(storage=search.storage)}
        if search.study_name not in names:
            study = optuna.create_study(study_name=search.study_name, storage=search.storage,
                                        directions=directions)
            search.study_name = study.study_name  # a generated name, when none was set
            study.set_user_attr(METRIC_ATTRIBUTE, self.metric)
            return study
        study = optuna.load_study(study_name=search.study_name, storage=search.storage)
        recorded = study.user_attrs.get(METRIC_ATTRIBUTE) or self.metric  # not recorded: the plugin's
        before = [d.name.lower() for d in study.directions]
        if (recorded, before) != (self.metric, directions):
            _stop(f"The study in {str(search.storage).removeprefix(SQLITE)} "
                  f"{'/'.join(before)}s {recorded}, not {'/'.join(directions)}s {self.metric}: "
                  "continue it with the same optimized_metric (and direction), or start this "
                  "search in another sweep folder (hydra.sweep.dir).")
        study.set_user_attr(METRIC_ATTRIBUTE, self.metric)
        return study

    def _finish_running_trials(self, study) -> None:
        """Run each trial that an interrupted search left running again, in its own job
        folder (job number = trial number), and tell the study how it ended."""
        import optuna

        running = {t.number: t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING}
        for numbers in consecutive_runs(sorted(running)):
            log.info("Running again the interrupted trial(s) %s.", ", ".join(map(str, numbers)))
            overrides = [trial_overrides(running[number]) for number in numbers]
            returns = self.sweeper.launcher.launch(overrides, initial_job_idx=numbers[0])
            for number, job_return in zip(numbers, returns):
                tell(study, number, job_return)

    def _reseed_sampler(self, trials_so_far: int) -> None:
        sampler = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        seed = OmegaConf.select(self.config, "hydra.sweeper.sampler.seed", default=None)
        if sampler is not None and seed is not None:
            self.sweeper.sampler = instantiate(sampler, seed=int(seed) + trials_so_far)


def tell(study, number: int, job_return) -> None:
    """Tell the study trial ``number``'s value, the job's return value: FAIL when it is not
    a finite number (a failed or diverged job returns NaN) or the job raised, as the
    plugin does for the trials it launches itself."""
    import optuna

    try:
        study.tell(number, float(job_return.return_value))
    except Exception as error:  # noqa: BLE001  (NaN, None, the job's own exception)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        log.warning("Trial %d failed: %s", number, error)


def write_search_results(study, path: Path, metric: str) -> dict:
    """Write the search's outcome as YAML: the plugin's ``name``, ``best_params`` and
    ``best_value``, and ``best_trial`` (its job number), ``optimized_metric``,
    ``direction`` and the number of trials in each state; return it."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    results = {
        "name": "optuna",
        "best_params": dict(best.params) if best else None,
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "optimized_metric": metric,
        "direction": study.direction.name.lower(),
        "trials": {state.name.lower(): count for state, count in
                   sorted(Counter(t.state for t in study.trials).items(), key=lambda item: item[0].value)},
    }
    OmegaConf.save(OmegaConf.create(results), path)
    if best is not None:
        log.info("Best: trial %d (job %d), %s=%s with %s; see %s", best.number, best.number, metric,
                 best.value, best.params, path)
    return results


def _stop(sentence: str) -> None:
    """End the search before any job: ``Error: <sentence>`` and exit status 1 (a
    ``SystemExit`` passes through Hydra, which would print an exception's traceback)."""
    print(f"Error: {sentence}", file=sys.stderr)
    raise SystemExit(1)
