"""The k-fold section of the sweep report: the folds of a configuration form one arm (like
seeds); per fold its validation (out-of-fold) and held-out test metrics, their mean ± SD
over folds, and the pooled out-of-fold predictions (every fold's val_predictions.csv
concatenated: each image outside the test split predicted once, by the model that did not
train on it) with their AUROC and accuracy and intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medrepro.core.run_folder import class_key
from medrepro.jobs.report.arms import Arm
from medrepro.jobs.report.formatting import finite, show, show_interval
from medrepro.jobs.report.intervals import LEVEL
from medrepro.jobs.report.runs import Run
from medrepro.jobs.report.statistics import mean_sd, metrics_from_predictions, prediction_arrays
from medrepro.jobs.report.test_sets import BOOTSTRAP_SEED, usable_predictions
from medrepro.statistics.bootstrap import group_keys, grouped_bootstrap_indices, percentile_interval
from medrepro.statistics.delong import delong_interval
from medrepro.statistics.proportions import wilson_interval

FOLD_METRICS = ("val/acc", "val/auroc", "test/acc", "test/auroc")


@dataclass
class PooledOutOfFold:
    """The pooled out-of-fold predictions of one seed of a k-fold arm."""

    arm: str
    seed: object
    folds: list[int]  # the folds pooled
    expected_folds: int | None
    images: int
    patients: int
    duplicates: int  # images predicted by more than one fold (should be 0)
    auroc: float
    delong: tuple[float | None, float | None]  # two-class only
    bootstrap: tuple[float | None, float | None]
    accuracy: float
    wilson: tuple[float | None, float | None]
    missing_jobs: list[int]  # completed folds without val_predictions.csv


def pooled_out_of_fold(arm: Arm, classes: list[str], resamples: int) -> list[PooledOutOfFold]:
    """One pooled out-of-fold result per seed of a k-fold arm."""
    seeds: dict[str, list[Run]] = {}
    for run in arm.completed:
        if run.kfold:
            seeds.setdefault(str(run.seed), []).append(run)
    pooled = []
    for runs in seeds.values():
        with_predictions = [r for r in runs if usable_predictions(r.val_predictions, classes)]
        missing = [r.job for r in runs if r not in with_predictions]
        if not with_predictions:
            continue
        frames = [r.val_predictions for r in with_predictions]
        patients = [pid for r, f in zip(with_predictions, frames) for pid in (r.patient_ids(f) or [None] * len(f))]
        frame = pd.concat(frames, ignore_index=True)
        truth, predicted, probabilities = prediction_arrays(frame, classes)
        keys = [class_key(c) for c in classes]
        auroc = float(metrics_from_predictions(truth, predicted, probabilities, keys)["auroc"][0])
        samples = grouped_bootstrap_indices(truth, patients, resamples, BOOTSTRAP_SEED)
        draws = metrics_from_predictions(truth, predicted, probabilities, keys, samples)["auroc"]
        delong = (None, None)
        if len(classes) == 2:
            _, low, high = delong_interval(truth == 1, probabilities[:, 1], LEVEL)
            delong = (finite(low), finite(high))
        correct = int(np.sum(truth == predicted))
        pooled.append(PooledOutOfFold(
            arm.label, runs[0].seed, sorted(r.fold for r in with_predictions),
            runs[0].folds, len(frame), len(set(group_keys(patients, len(frame)).tolist())),
            int(frame["path"].duplicated().sum()), auroc, delong,
            tuple(finite(v) for v in percentile_interval(draws, LEVEL)),
            correct / len(frame), tuple(finite(v) for v in wilson_interval(correct, len(frame), LEVEL)),
            missing))
    return pooled


def kfold_lines(arm: Arm, pooled: list[PooledOutOfFold], test_intervals: dict[int, dict]) -> list[str]:
    """The per-fold table, mean ± SD over folds and the pooled out-of-fold results."""
    folds = [r for r in arm.runs if r.kfold]
    expected = next((r.folds for r in folds if r.folds), None)
    lines = [f"### {arm.label}", "",
             (f"{len(folds)} fold run(s) of {expected or '?'}-fold cross-validation "
              f"({len(arm.completed)} completed). val/* are each fold's own validation fold "
              "(out-of-fold, at the tested checkpoint); test/* the held-out test split (the "
              "same images for every fold of one seed); the test AUROC's 95 % CI is DeLong's "
              "(two classes) or the bootstrap over patients."), "",
             "| seed | fold | job | status | " + " | ".join(FOLD_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(FOLD_METRICS)]
    for run in folds:
        cells = []
        for metric in FOLD_METRICS:
            value = run.metric(metric) if run.completed else None
            text = show(metric, value)
            interval = test_intervals.get(run.job, {}).get(metric.partition("/")[2]) \
                if metric.startswith("test/") else None
            if interval is not None and interval.low is not None:
                text += f" [{show_interval(metric, interval.low, interval.high, ', ')}]"
            cells.append(text)
        lines.append(f"| {run.seed} | {run.fold} | {run.job} | {run.status} | " + " | ".join(cells) + " |")
    summary = []
    for metric in FOLD_METRICS:
        mean, sd = mean_sd([r.metric(metric) for r in arm.completed])
        if mean is not None:
            summary.append(f"{metric} {show(metric, mean)} ± {show(metric, sd)}")
    if summary:
        lines += ["", f"**Mean ± SD over {len(arm.completed)} completed folds:** "
                  + "; ".join(summary) + " (rates in %, SD ddof 1)."]
    for result in pooled:
        lines += ["", _pooled_sentence(result)]
    if not pooled:
        lines += ["", ("No fold has val_predictions.csv (written by runs of this version): the "
                       "pooled out-of-fold predictions cannot be formed.")]
    return lines


def _pooled_sentence(result: PooledOutOfFold) -> str:
    folds = ", ".join(str(f) for f in result.folds)
    of = f" of {result.expected_folds}" if result.expected_folds else ""
    text = (f"**Pooled out-of-fold predictions, seed {result.seed}** (folds {folds}{of}; "
            f"{result.images} images, {result.patients} patients): AUROC "
            f"{show('auroc', result.auroc)}")
    if result.delong[0] is not None:
        text += f", 95 % CI {show_interval('auroc', *result.delong)} (DeLong)"
    if result.bootstrap[0] is not None:
        text += f", {show_interval('auroc', *result.bootstrap)} (bootstrap over patients)"
    text += f"; accuracy {show('acc', result.accuracy)} %"
    if result.wilson[0] is not None:
        text += f", 95 % CI {show_interval('acc', *result.wilson)} % (Wilson)"
    text += "."
    notes = []
    if result.expected_folds and len(result.folds) < result.expected_folds:
        notes.append(f"only {len(result.folds)} of {result.expected_folds} folds are pooled, so "
                     "not every image was predicted")
    if result.missing_jobs:
        notes.append(f"jobs {', '.join(map(str, result.missing_jobs))} completed without "
                     "val_predictions.csv")
    if result.duplicates:
        notes.append(f"{result.duplicates} image(s) were predicted by more than one fold: the "
                     "folds overlap, so this is not a clean out-of-fold estimate")
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text


def pooled_rows(pooled: list[PooledOutOfFold]) -> list[dict]:
    """summary.csv rows of the pooled out-of-fold AUROC and accuracy."""
    rows = []
    for result in pooled:
        for metric, value, (low, high), method, boot in (
            ("oof/auroc", result.auroc, result.delong if result.delong[0] is not None else result.bootstrap,
             "DeLong" if result.delong[0] is not None else "bootstrap over patients", result.bootstrap),
            ("oof/acc", result.accuracy, result.wilson, "Wilson", (None, None)),
        ):
            rows.append({"arm": result.arm, "metric": metric, "row": "pooled out-of-fold",
                         "seed": result.seed, "value": value, "n_runs": len(result.folds),
                         "ci95_low": low, "ci95_high": high, "ci_method": method,
                         "bootstrap_low": boot[0], "bootstrap_high": boot[1]})
    return rows

