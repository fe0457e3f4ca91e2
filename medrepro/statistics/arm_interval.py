"""The confidence interval of an arm's mean over seeds, with both sources of uncertainty:
the test set (a sample of patients) and the run-to-run variation of the training (seeds).

Model (two-way random effects, crossed: seed x test set). Run i of an arm, tested on the
test set that all its runs share, scores ``x_i = mu + T + S_i + E_i``: ``mu`` the arm's
expected metric over seeds and test sets (what the mean estimates), ``T`` the shared
test set's deviation (common to every run), ``S_i`` the seed's, ``E_i`` the part of the
test set's luck that differs between runs. The mean of k runs has
``Var = var(T) + (var(S) + var(E)) / k``, and

* ``(var(S) + var(E))`` is estimated by s², the sample variance of the k runs' values
  (ddof 1): ``T`` is common to all runs and cancels out of their differences;
* ``var(T)`` is estimated by the test-set covariance of two runs: resample the shared
  test set (by patient, :mod:`medrepro.statistics.bootstrap`), compute every run's metric
  on the same resample, and average the covariance of two different runs' values over
  the resamples (what the runs' errors have in common).

So ``SE² = c + s²/k`` (c clipped at 0), and the interval is ``mean ± t·SE`` with t of
Welch-Satterthwaite degrees of freedom, ``df = SE⁴ / ((s²/k)² / (k - 1))`` (the
run-to-run part has k - 1 degrees of freedom; c comes from many resamples and counts as
known), so ``df`` lies between k - 1 and infinity. Adding the whole bootstrap variance of
the mean to s²/k instead would count ``var(E)/k`` twice.

A bootstrap over seeds is no alternative with 3 to 5 seeds: resampling 3 values
under-states their spread by a third and takes only 10 distinct means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ArmInterval:
    """The mean of an arm's runs, its interval, how it was formed, and its parts."""

    mean: float
    low: float
    high: float
    method: str
    runs: int
    run_to_run_variance: float  # s² / k (NaN with one run)
    test_set_variance: float  # c: the test-set sampling the runs share (NaN without draws)
    degrees_of_freedom: float  # inf: the normal quantile


def arm_mean_interval(run_values, test_draws=None, level: float = 0.95,
                      bounds: tuple[float, float] | None = None) -> ArmInterval:
    """The interval of the mean of ``run_values`` (one metric value per run of the arm).

    ``test_draws`` is ``[k, B]``: run i's metric on bootstrap resample b of the test set,
    the SAME resample b for every run (the runs were tested on one test set; draw the
    resamples once per arm with :func:`~medrepro.statistics.bootstrap.grouped_bootstrap_indices`).
    Resamples where any run's value is not finite are left out. See the module's docstring
    for the method. Special cases, each said in ``method``:

    * one run: the run-to-run variation is unknown; the interval is the run's own
      test-set interval, ``value ± z·sqrt(bootstrap variance)``;
    * ``test_draws=None`` (runs tested on different test sets, e.g. a split per seed): the
      runs' spread already holds the test-set sampling; ``mean ± t(k-1)·s/sqrt(k)``.

    ``bounds`` (e.g. ``(0, 1)`` for a rate or an AUROC) clips the interval to the metric's
    range.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, not {level!r}")
    values = np.asarray(run_values, dtype=float).ravel()
    if not len(values) or not np.isfinite(values).all():
        raise ValueError("give one finite value per run")
    k = len(values)
    mean = float(values.mean())
    between = float(values.var(ddof=1)) / k if k > 1 else math.nan
    shared = math.nan
    if test_draws is not None:
        draws = np.atleast_2d(np.asarray(test_draws, dtype=float))
        if draws.shape[0] != k:
            raise ValueError(f"{draws.shape[0]} rows of draws for {k} runs")
        draws = draws[:, np.isfinite(draws).all(axis=0)]
        if draws.shape[1] >= 2:
            shared = _shared_test_variance(draws)
    percent = f"{level:.0%}"
    if k == 1:
        if not math.isfinite(shared):
            return ArmInterval(mean, math.nan, math.nan, "One run and no test-set resamples: "
                               "no interval.", 1, between, shared, math.nan)
        variance, df = shared, math.inf
        method = (f"One run: {percent} interval value ± z·SE from the bootstrap variance of "
                  f"its test set only; the run-to-run variation is unknown.")
    elif not math.isfinite(shared):
        variance, df = between, k - 1
        method = (f"Mean of {k} runs ± t({k - 1})·s/√{k} ({percent}), s the runs' sample SD: "
                  f"the runs were tested on different test sets, so their spread already "
                  f"holds the test-set sampling.")
    else:
        variance = shared + between
        df = variance**2 * (k - 1) / between**2 if between > 0 else math.inf
        method = (f"Mean of {k} runs ± t·SE ({percent}), SE² = s²/{k} + c: s² the sample "
                  f"variance of the runs (run-to-run variation) and c the test-set sampling "
                  f"the runs share (the mean covariance of two runs' values over "
                  f"{draws.shape[1]} resamples of the common test set by patient, stratified "
                  f"by class); t with Welch-Satterthwaite degrees of freedom "
                  f"(here {df:.1f}) under a random-effects model of seed and test set.")
    quantile = stats.norm.ppf((1 + level) / 2) if math.isinf(df) else stats.t.ppf(
        (1 + level) / 2, df)
    half = quantile * math.sqrt(variance)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return ArmInterval(mean, float(low), float(high), method, k, between, shared, float(df))


def _shared_test_variance(draws: np.ndarray) -> float:
    """The mean covariance between two different runs' values over the resamples (for one
    run: its own variance), clipped at 0."""
    covariance = np.atleast_2d(np.cov(draws, ddof=1))
    k = covariance.shape[0]
    if k == 1:
        return float(covariance[0, 0])
    off_diagonal = (covariance.sum() - np.trace(covariance)) / (k * (k - 1))
    return max(0.0, float(off_diagonal))
