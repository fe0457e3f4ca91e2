"""The 95 % intervals of the sweep report: per run (Wilson for the proportions of a 2x2
table, DeLong for a two-class AUROC, the bootstrap over patients for the rest and beside
them) and of an arm's mean over its runs (:mod:`medrepro.statistics.arm_interval`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medrepro.jobs.report.formatting import finite
from medrepro.jobs.report.test_sets import ArmTestSet, RunTest
from medrepro.statistics.arm_interval import ArmInterval, arm_mean_interval
from medrepro.statistics.bootstrap import percentile_interval
from medrepro.statistics.delong import delong_interval
from medrepro.statistics.proportions import binary_rates, wilson_interval

LEVEL = 0.95
WILSON = "Wilson"
DELONG = "DeLong"
BOOTSTRAP = "bootstrap over patients"
ARM_SHARED = "mean over runs: run-to-run variation + shared test set (t)"
ARM_SEPARATE = "mean over runs: runs' spread, test sets differ (t)"
ARM_ONE_RUN = "one run: its test-set bootstrap SE"
# metric name -> the 2x2 proportion it is (two-class tasks, class 1 positive)
PROPORTIONS = {"acc": "accuracy", "precision": "ppv", "recall": "sensitivity",
               "specificity": "specificity"}


@dataclass(frozen=True)
class Interval:
    """A 95 % interval, its method (a short name, see the constants) and, where it was
    drawn, the percentile bootstrap over patients beside it."""

    low: float | None
    high: float | None
    method: str
    bootstrap_low: float | None = None
    bootstrap_high: float | None = None


def run_intervals(test: RunTest, binary: bool) -> dict[str, Interval]:
    """Metric name (``acc``, ``auroc``, ...) -> the run's interval: Wilson (accuracy; for
    two classes also precision = PPV, recall = sensitivity, specificity), DeLong (two-class
    AUROC), otherwise the percentile bootstrap over patients; the bootstrap interval is
    given beside every one."""
    intervals = {}
    rates = binary_rates(test.truth == 1, test.predicted == 1, LEVEL) if binary else {}
    for name, draws in test.draws.items():
        boot = percentile_interval(draws, LEVEL)
        low, high, method = boot[0], boot[1], BOOTSTRAP
        if name == "acc":
            low, high = wilson_interval(int(np.sum(test.truth == test.predicted)), test.n_images, LEVEL)
            method = WILSON
        elif binary and name in PROPORTIONS:
            rate = rates[PROPORTIONS[name]]
            low, high, method = rate.low, rate.high, WILSON
        elif binary and name == "auroc":
            _, low, high = delong_interval(test.truth == 1, test.positive_scores, LEVEL)
            method = DELONG
        intervals[name] = Interval(finite(low), finite(high), method, finite(boot[0]),
                                   finite(boot[1]))
    return intervals


def arm_interval(test_set: ArmTestSet, name: str, values: list[float] | None = None
                 ) -> ArmInterval | None:
    """The interval of the arm's mean of metric ``name`` over its runs with predictions:
    ``values`` their values (default: recomputed from predictions.csv); the resamples
    shared by the runs when they share the test set, none otherwise. ``None`` where no run
    has a finite value."""
    tests = test_set.runs
    if not tests or any(name not in test.draws for test in tests):
        return None
    values = [test.estimates[name] for test in tests] if values is None else values
    if not all(v is not None and math.isfinite(v) for v in values):
        return None
    draws = np.stack([test.draws[name] for test in tests]) if test_set.shared else None
    if draws is not None and draws.shape[1] < 2 and len(tests) > 1:
        draws = None  # one resample cannot give a covariance
    return arm_mean_interval(values, draws, LEVEL, bounds=(0.0, 1.0))


def arm_method(interval: ArmInterval) -> str:
    """The short method name of an arm's interval (summary.csv's ``ci_method``)."""
    if interval.runs == 1:
        return ARM_ONE_RUN
    return ARM_SHARED if math.isfinite(interval.test_set_variance) else ARM_SEPARATE


