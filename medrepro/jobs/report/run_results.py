"""The run report's test numbers: discrimination (AUROC with DeLong's and the patient
bootstrap's intervals), the operating point (2x2 table, sensitivity, specificity, PPV,
NPV with Wilson intervals), calibration, failure analysis, the paper comparison and the
statistical methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrepro.core.run_folder import (
    GALLERY_FOLDER,
    PLOTS_FOLDER,
    RELIABILITY_DIAGRAM_PNG,
    class_key,
)
from medrepro.jobs.report.arms import group_arms
from medrepro.jobs.report.formatting import finite, is_rate
from medrepro.jobs.report.paper_comparison import paper_comparison_sentence
from medrepro.jobs.report.run_contents import Predictions, RunContents
from medrepro.jobs.report.run_metrics import (
    LEVEL,
    RESAMPLES,
    AurocEstimate,
    auroc_rows,
    percent,
    proportion_row,
)
from medrepro.jobs.report.runs import Run
from medrepro.statistics.bootstrap import GROUPED_BOOTSTRAP_METHOD
from medrepro.statistics.calibration import CALIBRATION_METHOD, calibration_errors
from medrepro.statistics.delong import DELONG_INTERVAL_METHOD, delong_interval
from medrepro.statistics.proportions import WILSON_METHOD, binary_rates, proportion

DISCRIMINATION = "Discrimination"
OPERATING_POINT = "Operating point"
CALIBRATION = "Calibration"
FAILURES = "Failure analysis"
PAPER = "Paper comparison"
METHODS = "Statistical methods"
DEFAULT_BINS = 15
MOST_CONFIDENT_ERRORS = 5


def discrimination_lines(run: RunContents, estimate: AurocEstimate | None) -> list[str]:
    lines = [f"## {DISCRIMINATION}", ""]
    test = run.test
    if test is None:
        return [*lines, "No test predictions were recorded (predictions.csv).", ""]
    n = len(test.truth)
    counts = ", ".join(f"{int((test.truth == i).sum())} {c}" for i, c in enumerate(run.classes))
    lines.append(f"On {n} test images ({counts}) from {estimate.patients if estimate else '?'} "
                 "patients; 95 % intervals (methods below).")
    lines += ["", "| metric | value | 95 % CI | counts |", "|---|---:|---|---|"]
    lines += auroc_rows(estimate)
    lines.append(proportion_row("accuracy", int((test.truth == test.predicted).sum()), n))
    if estimate is None:
        lines.append("")
        lines.append("AUROC: undefined (a class has no test images).")
    elif estimate is not None:
        low, high = estimate.delong or estimate.bootstrap
        lines += ["", (f"What the data can tell: the AUROC's 95 % interval is {high - low:.3f} wide "
                       f"({low:.3f} to {high:.3f}); with {n} test images, differences between "
                       "models smaller than about half that width cannot be told apart from chance.")]
    return [*lines, ""]


def operating_point_lines(run: RunContents) -> list[str]:
    lines = [f"## {OPERATING_POINT}", ""]
    test = run.test
    if not run.binary:
        lines.append("Multi-class task: the predicted class is the most probable one (no "
                     "threshold). Per class, one against the rest:")
        if test is None:
            return [*lines, "", "No test predictions were recorded.", ""]
        lines += ["", "| class | sensitivity (recall) | PPV (precision) |", "|---|---|---|"]
        for index, name in enumerate(run.classes):
            rates = binary_rates(test.truth == index, test.predicted == index, LEVEL)
            lines.append(f"| {name} | {percent(rates['sensitivity'])} | {percent(rates['ppv'])} |")
        return [*lines, ""]
    positive, negative = run.classes[1], run.classes[0]
    lines.append(threshold_sentence(run, positive))
    if test is None:
        return [*lines, "", "No test predictions were recorded.", ""]
    rates = binary_rates(test.truth == 1, test.predicted == 1, LEVEL)
    tp, fp, tn, fn = (rates[k] for k in ("tp", "fp", "tn", "fn"))
    lines += ["", f"| test set (rows: truth) | predicted {positive} | predicted {negative} | total |",
              "|---|---:|---:|---:|",
              f"| {positive} (positive) | {tp} (TP) | {fn} (FN) | {tp + fn} |",
              f"| {negative} (negative) | {fp} (FP) | {tn} (TN) | {fp + tn} |",
              f"| total | {tp + fp} | {fn + tn} | {tp + fp + tn + fn} |", "",
              "| rate | value (95 % Wilson CI; counts) |", "|---|---|"]
    for key, name in (("sensitivity", "sensitivity"), ("specificity", "specificity"),
                      ("ppv", "PPV"), ("npv", "NPV"), ("accuracy", "accuracy")):
        lines.append(f"| {name} | {percent(rates[key])} |")
    return [*lines, ""]


def threshold_sentence(run: RunContents, positive: str) -> str:
    point = run.results.get("operating_point") or {}
    threshold = point.get("threshold")
    if threshold is None:  # a run from before the operating point was recorded
        configured = (run.config.get("model") or {}).get("threshold", 0.5)
        return (f"Threshold: {positive} is predicted when its probability is at least {configured} "
                "(model.threshold, pre-specified; not chosen on the test set).")
    sentence = f"Threshold: {positive} is predicted when its probability is at least {threshold:.4g}"
    if point.get("chosen_on") == "validation":
        sentence += (f", chosen on the validation set by the rule {point.get('rule')} and applied "
                     "unchanged to the test set")
    else:
        sentence += " (model.threshold, pre-specified before testing)"
    val = point.get("val") or {}
    if val.get("sensitivity") is not None:
        sentence += (f"; on the validation set it gave sensitivity {100 * val['sensitivity']:.1f} % "
                     f"and specificity {100 * val['specificity']:.1f} %")
    return sentence + "."


def calibration_lines(run: RunContents) -> list[str]:
    lines = [f"## {CALIBRATION}", ""]
    record = run.results.get("calibration")
    if record and (record.get("val") or record.get("test")):
        bins = record.get("bins") or DEFAULT_BINS
        method = record.get("method") or "none"
        if method == "temperature" and record.get("temperature") is not None:
            lines.append(f"Temperature scaling (model.calibrate=temperature): T = "
                         f"{record['temperature']:.4g}, fitted on the validation set; the test "
                         "probabilities (predictions.csv) are the scaled ones.")
        else:
            lines.append("No recalibration (model.calibrate=none): the model's own probabilities.")
        lines += ["", "| split | probabilities | ECE | MCE | Brier |", "|---|---|---:|---:|---:|"]
        for split in ("val", "test"):
            for when in ("before", "after"):
                errors = (record.get(split) or {}).get(when)
                if errors:
                    label = "model's own" if when == "before" else "after temperature scaling"
                    lines.append(f"| {split} | {label} | {errors['ece']:.4f} | {errors['mce']:.4f} | "
                                 f"{errors['brier']:.4f} |")
    elif run.test is not None:
        bins = DEFAULT_BINS
        errors = calibration_errors(run.test.truth, run.test.probabilities, bins=bins)
        lines.append("The run recorded no calibration; computed here from predictions.csv:")
        lines += ["", "| split | ECE | MCE | Brier |", "|---|---:|---:|---:|",
                  f"| test | {errors['ece']:.4f} | {errors['mce']:.4f} | {errors['brier']:.4f} |"]
    else:
        return [*lines, "No test predictions were recorded.", ""]
    lines += ["", CALIBRATION_METHOD.format(bins=bins)]
    diagram = Path(PLOTS_FOLDER) / RELIABILITY_DIAGRAM_PNG
    if (run.folder / diagram).is_file():
        lines += ["", f"![Reliability diagram]({diagram.as_posix()})"]
    return [*lines, ""]


def failure_lines(run: RunContents) -> list[str]:
    lines = [f"## {FAILURES}", ""]
    test = run.test
    if test is not None:
        wrong = test.truth != test.predicted
        lines.append(f"{int(wrong.sum())} of {len(wrong)} test images are misclassified"
                     + (f" ({int((wrong & (test.truth == 0)).sum())} false positives, "
                        f"{int((wrong & (test.truth == 1)).sum())} false negatives)." if run.binary else "."))
        lines += _confident_errors(run, test)
    gallery = run.folder / GALLERY_FOLDER
    pictures = sorted(gallery.glob("*.png")) if gallery.is_dir() else []
    if pictures:
        lines += ["", ("The failure gallery (gallery/: the most confidently wrong and right test images "
                  "with their Grad-CAM heat maps; gallery/gallery.csv lists them):"), ""]
        lines += [f"![{p.stem.replace('_', ' ')}]({GALLERY_FOLDER}/{p.name})" for p in pictures]
    else:
        lines += ["", ("No failure gallery in this folder (callbacks.failure_gallery was off or "
                  "found nothing to show).")]
    return [*lines, ""]


def _confident_errors(run: RunContents, test: Predictions) -> list[str]:
    wrong = np.flatnonzero(test.truth != test.predicted)
    if not len(wrong):
        return []
    confidence = test.probabilities[wrong, test.predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:MOST_CONFIDENT_ERRORS]
    lines = ["", "Most confident errors:", "", "| image | truth | predicted | probability of the prediction |",
             "|---|---|---|---:|"]
    for i in order:
        lines.append(f"| {Path(str(test.table['path'].iloc[i])).name} | {run.classes[test.truth[i]]} | "
                     f"{run.classes[test.predicted[i]]} | {test.probabilities[i, test.predicted[i]]:.3f} |")
    return lines


# --------------------------------------------------------------------------- paper comparison


def paper_lines(run: RunContents, deviations: list | None) -> list[str]:
    reference = run.config.get("reference") or {}
    if not reference:
        return []
    lines = [f"## {PAPER}", "", f"Paper: {reference.get('citation', '')}"]
    if reference.get("note"):
        lines.append(f"About its numbers: {reference['note']}")
    arms = group_arms([_as_run(run)], reference)
    arm = arms[0] if arms else None
    if arm is None or not arm.reference:
        return [*lines, "", "No arm of the paper matches this run's settings.", ""]
    lines += ["", f"Paper arm: {arm.label}."]
    if deviations:
        lines.append(f"This run differs from the experiment in {len(deviations)} setting(s) (top of "
                     "this report): the comparison is not like for like.")
    lines.append("")
    for metric, published in arm.reference.items():
        paper, spread = _paper_value(published)
        if paper is None:
            continue
        ours, low, high = our_value(run, metric)
        sentence = paper_comparison_sentence(metric, paper, ours, low, high,
                                             percent=is_rate(metric))
        lines.append(f"- {sentence}{spread}")
    return [*lines, ""]


def _as_run(run: RunContents) -> Run:
    return Run(folder=run.folder, job=0, status=str(run.results.get("status")),
               error=run.results.get("error"), config=run.config, overrides={}, results=run.results)


def _paper_value(published) -> tuple[float | None, str]:
    """The paper's number for a metric (a number, or its ``mean``, ``best`` or the mean of
    its ``runs``) and words on its spread."""
    if published is None:
        return None, ""
    if not isinstance(published, dict):
        return float(published), ""
    runs = [float(v) for v in published.get("runs") or []]
    if "mean" in published:
        extra = f" (the paper's mean of {len(runs) or 'its'} runs" + \
            (f", SD {published['sd']}" if published.get("sd") is not None else "") + ")"
        return float(published["mean"]), extra
    if "best" in published:
        return float(published["best"]), " (the paper's best run)"
    if runs:
        return float(np.mean(runs)), (f" (the mean of the paper's {len(runs)} runs, "
                                      f"{min(runs):g} to {max(runs):g})")
    return None, ""


def our_value(run: RunContents, metric: str) -> tuple[float | None, float | None, float | None]:
    """Our value of ``metric`` with its 95 % interval where one follows from the folder:
    Wilson for the proportions and DeLong for the AUROC of the tested checkpoint's test
    (and, with val_predictions.csv, validation) predictions; train/* from metrics.csv at
    the tested epoch, without an interval."""
    stage, _, name = metric.partition("/")
    predictions = {"test": run.test, "val": run.val}.get(stage)
    if predictions is not None:
        found = _interval(run, predictions, name)
        if found is not None:
            return found
    if stage == "train" and run.history is not None and metric in run.history:
        epochs = run.history["epoch"].astype(int)
        rows = run.history[epochs == run.tested_epoch] if run.tested_epoch in set(epochs) else run.history
        return finite(rows[metric].iloc[-1]), None, None
    return finite((run.results.get(stage) or {}).get(name)), None, None


def _interval(run: RunContents, predictions: Predictions, name: str):
    truth, predicted = predictions.truth, predictions.predicted
    if name == "acc":
        share = proportion(int((truth == predicted).sum()), len(truth), LEVEL)
        return share.value, share.low, share.high
    if name == "auroc" and run.binary:
        if len(np.unique(truth)) < 2:
            return None
        return delong_interval(truth, predictions.probabilities[:, 1], level=LEVEL)
    binary_names = {"recall": "sensitivity", "specificity": "specificity", "precision": "ppv"}
    if run.binary and name in binary_names:
        share = binary_rates(truth == 1, predicted == 1, LEVEL)[binary_names[name]]
        return share.value, share.low, share.high
    base, _, key = name.partition("_")
    keys = [class_key(c) for c in run.classes]
    if key in keys and base in ("recall", "precision"):
        index = keys.index(key)
        rates = binary_rates(truth == index, predicted == index, LEVEL)
        share = rates["sensitivity" if base == "recall" else "ppv"]
        return share.value, share.low, share.high
    return None


def methods_lines(binary: bool, resamples: int = RESAMPLES) -> list[str]:
    lines = [f"## {METHODS}", ""]
    if binary:
        lines.append("- " + DELONG_INTERVAL_METHOD.format(level=LEVEL))
    lines += ["- AUROC: " + GROUPED_BOOTSTRAP_METHOD.format(level=LEVEL, resamples=resamples)
              + " Seed 0. AUROC of more than two classes: the macro average of one-vs-rest AUROCs.",
              "- " + WILSON_METHOD.format(level=LEVEL),
              ("- Paper comparison: the paper's number lies inside our interval or not (Wilson or "
              "DeLong intervals of this run's predictions; train/* and losses have none).")]
    return [*lines, ""]
