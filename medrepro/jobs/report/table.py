"""summary.csv: one row per run and metric, and one per arm and metric (the mean over runs,
or the best run where the paper gives its best run), beside the paper's value.

The first columns are those of earlier versions (readers keep working); the columns added
since follow them: ``ci_method`` (how ci95_low/ci95_high were formed), the percentile
bootstrap over patients beside it, the k-fold ``fold`` and the ``epoch`` the row's value
comes from."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medrepro.jobs.report.arms import Arm
from medrepro.jobs.report.formatting import finite, whole_numbers
from medrepro.jobs.report.intervals import Interval, arm_interval, arm_method, run_intervals
from medrepro.jobs.report.statistics import mean_sd
from medrepro.jobs.report.test_sets import ArmTestSet

CSV_COLUMNS = ["arm", "metric", "row", "seed", "job", "status", "value", "sd", "n_runs",
               "paper", "paper_sd", "difference", "ci95_low", "ci95_high",
               # added with the patient bootstrap, Wilson, DeLong and arm intervals
               "ci_method", "bootstrap_low", "bootstrap_high", "fold", "epoch"]


@dataclass
class Intervals:
    """Every interval of the report: per run (by job) and per arm (by label), metric name
    (``acc``, ``auroc``, ...) -> :class:`Interval`; the ArmInterval objects keep their
    method sentences."""

    runs: dict[int, dict[str, Interval]]
    arms: dict[str, dict[str, Interval]]
    arm_details: dict[str, dict]  # label -> name -> ArmInterval


def all_intervals(test_sets: dict[str, ArmTestSet], binary: bool) -> Intervals:
    runs, arms, details = {}, {}, {}
    for label, test_set in test_sets.items():
        for test in test_set.runs:
            runs[test.run.job] = run_intervals(test, binary)
        arms[label], details[label] = {}, {}
        names = set.intersection(*(set(t.draws) for t in test_set.runs)) if test_set.runs else set()
        for name in sorted(names):
            values = [_value(test, name) for test in test_set.runs]
            interval = arm_interval(test_set, name, values)
            if interval is None:
                continue
            details[label][name] = interval
            arms[label][name] = Interval(finite(interval.low), finite(interval.high),
                                         arm_method(interval))
    return Intervals(runs, arms, details)


def _value(test, name: str) -> float:
    reported = test.run.metric(f"test/{name}")
    return test.estimates[name] if reported is None else reported


def summary_table(arms: list[Arm], metrics: list[str], intervals: Intervals) -> pd.DataFrame:
    rows = []
    for arm in arms:
        for metric in metrics:
            stage, _, name = metric.partition("/")
            tested = stage == "test"
            values = []
            for run in arm.runs:
                value = run.metric(metric) if run.completed else None
                values.append(value)
                interval = intervals.runs.get(run.job, {}).get(name) if tested else None
                rows.append(_row(arm, metric, "run", value, interval, run=run))
            mean, sd = mean_sd(values)
            paper, paper_sd, best = paper_value(arm.reference.get(metric))
            scored = [(v, run) for v, run in zip(values, arm.runs) if v is not None]
            top_value, top_run = max(scored, key=lambda pair: pair[0], default=(None, None))
            ours = top_value if best else mean
            if not tested:
                interval = None
            elif best:
                interval = intervals.runs.get(top_run.job, {}).get(name) if top_run else None
            else:
                interval = intervals.arms.get(arm.label, {}).get(name)
            rows.append(_row(arm, metric, "best run" if best else "mean", ours, interval, sd=sd,
                             n=sum(v is not None for v in values), paper=paper, paper_sd=paper_sd,
                             best_run=top_run if best else None))
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    for column in ("seed", "job", "n_runs", "fold", "epoch"):  # blank in some rows: not 0.0
        table[column] = whole_numbers(table[column])
    return table


def _row(arm, metric, kind, value, interval: Interval | None, run=None, sd=None, n=None,
         paper=None, paper_sd=None, best_run=None):
    difference = value - paper if value is not None and paper is not None else None
    interval = interval or Interval(None, None, "")
    source = run or best_run
    return {
        "arm": arm.label, "metric": metric, "row": kind,
        "seed": run.seed if run else None, "job": run.job if run else None,
        "status": run.status if run else None, "value": value, "sd": sd, "n_runs": n,
        "paper": paper, "paper_sd": paper_sd, "difference": difference,
        "ci95_low": interval.low, "ci95_high": interval.high,
        "ci_method": interval.method or None,
        "bootstrap_low": interval.bootstrap_low, "bootstrap_high": interval.bootstrap_high,
        "fold": run.fold if run else None,
        "epoch": source.metric_epoch(metric) if source and source.completed else None,
    }


def paper_value(reference) -> tuple[float | None, float | None, bool]:
    """The paper's (value, SD, whether it is the best run rather than the mean)."""
    if reference is None:
        return None, None, False
    if not isinstance(reference, dict):
        return float(reference), None, False
    if "mean" in reference:
        sd = reference.get("sd")
        return float(reference["mean"]), None if sd is None else float(sd), False
    if "best" in reference:
        return float(reference["best"]), None, True
    runs = reference.get("runs") or []
    mean, sd = mean_sd([float(v) for v in runs])
    return mean, sd, False

