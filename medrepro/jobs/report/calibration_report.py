"""The calibration and operating-point sections of the sweep report: ECE, MCE and Brier
score per run and per arm (the mean over its runs) from the test predictions, and the
threshold, 2x2 table, sensitivity, specificity, PPV and NPV with Wilson intervals."""

from __future__ import annotations

import math

import numpy as np

from medrepro.jobs.report.formatting import finite, show
from medrepro.jobs.report.runs import Run
from medrepro.jobs.report.test_sets import ArmTestSet, RunTest
from medrepro.statistics.calibration import CALIBRATION_METHOD, calibration_errors
from medrepro.statistics.proportions import WILSON_METHOD, binary_rates

BINS = 15  # results.json calibration.bins where a run records it


def calibration_bins(test_sets: dict[str, ArmTestSet]) -> int:
    for test_set in test_sets.values():
        for test in test_set.runs:
            bins = (test.run.results.get("calibration") or {}).get("bins")
            if bins:
                return int(bins)
    return BINS


def test_probabilities(test: RunTest) -> np.ndarray:
    """What calibration scores: the positive-class probability (two classes) or all."""
    return test.positive_scores if test.probabilities.shape[1] == 2 else test.probabilities


def run_calibration(test: RunTest, bins: int) -> dict[str, float]:
    return calibration_errors(test.truth, test_probabilities(test), bins)


def calibration_lines(test_sets: dict[str, ArmTestSet], bins: int, figures: dict[str, str]) -> list[str]:
    """Per run and per arm (mean over runs): ECE, MCE, Brier on the test set, the
    probabilities as predictions.csv holds them (after temperature scaling where the run
    used it; its own "before" values from results.json beside them)."""
    lines = [CALIBRATION_METHOD.format(bins=bins) + (
        " From each run's test predictions (predictions.csv: after temperature scaling where "
        "model.calibrate=temperature; the before column gives results.json's ECE of the "
        "model's own probabilities). An arm's row is the mean over its runs. Lower is better; "
        "0 is perfect calibration."), "",
        "| arm | seed | job | ECE | MCE | Brier | calibration | ECE before |",
        "|---|---|---|---|---|---|---|---|"]
    any_row = False
    for label, test_set in test_sets.items():
        values = []
        for test in test_set.runs:
            errors = run_calibration(test, bins)
            values.append(errors)
            method, before = _recorded_calibration(test.run)
            lines.append(f"| {label} | {_seed(test.run)} | {test.run.job} | {errors['ece']:.4f} | "
                         f"{errors['mce']:.4f} | {errors['brier']:.4f} | {method} | {before} |")
            any_row = True
        if len(values) > 1:
            mean = {k: float(np.mean([v[k] for v in values])) for k in ("ece", "mce", "brier")}
            lines.append(f"| **{label}** | mean of {len(values)} | | {mean['ece']:.4f} | "
                         f"{mean['mce']:.4f} | {mean['brier']:.4f} | | |")
    if not any_row:
        return ["No completed run with test predictions."]
    for label, name in figures.items():
        lines += ["", f"**Reliability diagram, {label}**", "", f"![Reliability diagram, {label}]({name})"]
    return lines


def _recorded_calibration(run: Run) -> tuple[str, str]:
    calibration = run.results.get("calibration")
    if not calibration:
        return "not recorded", "–"
    method = calibration.get("method") or "none"
    if method == "temperature" and calibration.get("temperature") is not None:
        method = f"temperature T = {float(calibration['temperature']):.3g}"
    before = ((calibration.get("test") or {}).get("before") or {}).get("ece")
    return method, "–" if before is None else f"{float(before):.4f}"


# --------------------------------------------------------------------------- operating point


def threshold_text(run: Run) -> str:
    """The run's threshold and how it was set, from results.json ``operating_point``;
    older runs: model.threshold (default 0.5) as predictions.csv's ``predicted`` applies."""
    point = run.results.get("operating_point")
    if point and point.get("threshold") is not None:
        rule = point.get("rule") or "fixed"
        chosen = point.get("chosen_on") or "?"
        return f"{float(point['threshold']):.4g} ({rule}, {chosen})"
    configured = run.select("model.threshold")
    number = finite(configured)
    shown = f"{number:g}" if number is not None else "0.5"
    return f"{shown} (not recorded: predictions.csv's predicted column)"


def operating_point_lines(test_sets: dict[str, ArmTestSet], binary: bool, classes: list[str]) -> list[str]:
    if not binary:
        return [("The operating point is for two-class tasks; a multi-class model predicts its "
                 "most probable class (the confusion matrices below).")]
    lines = [(f"Each run's threshold on the positive class `{classes[1]}` (results.json "
              "`operating_point`: a number fixed before training, or a rule applied to the "
              "validation set and then unchanged to the test set) and its test 2x2 table. "
              + WILSON_METHOD.format(level=0.95) + " An arm's row sums its runs' tables; its "
              "rates are those of the summed table, without an interval: the runs share their "
              "test images, so the summed counts are not independent."), "",
             "| arm | seed | job | threshold | TP | FP | FN | TN | sensitivity | specificity | PPV | NPV |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    any_row = False
    for label, test_set in test_sets.items():
        total = np.zeros(4, dtype=int)
        for test in test_set.runs:
            rates = binary_rates(test.truth == 1, test.predicted == 1)
            counts = [rates[k] for k in ("tp", "fp", "fn", "tn")]
            total += counts
            cells = [_rate(rates[k]) for k in ("sensitivity", "specificity", "ppv", "npv")]
            lines.append(f"| {label} | {_seed(test.run)} | {test.run.job} | {threshold_text(test.run)} | "
                         + " | ".join(str(c) for c in counts) + " | " + " | ".join(cells) + " |")
            any_row = True
        if len(test_set.runs) > 1:
            tp, fp, fn, tn = (int(v) for v in total)
            summed = [_ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp), _ratio(tn, tn + fn)]
            lines.append(f"| **{label}** | sum of {len(test_set.runs)} | | | {tp} | {fp} | {fn} | {tn} | "
                         + " | ".join(show("ppv", v) for v in summed) + " |")
    return lines if any_row else ["No completed run with test predictions."]


def _rate(proportion) -> str:
    if proportion.trials == 0:
        return "–"
    return (f"{show('ppv', proportion.value)} [{show('ppv', proportion.low)}, "
            f"{show('ppv', proportion.high)}]")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _seed(run: Run) -> str:
    return str(run.seed) if run.fold is None else f"{run.seed} (fold {run.fold})"
