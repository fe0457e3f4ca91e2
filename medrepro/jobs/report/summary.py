"""Write ``summary.md`` and ``summary.csv`` (and the figures) into a sweep folder."""

from __future__ import annotations

import itertools
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.core.run_folder import class_key
from medrepro.jobs.job_steps import describe_step
from medrepro.jobs.report import plots
from medrepro.jobs.report.arms import Arm, group_arms
from medrepro.jobs.report.runs import Run, load_runs
from medrepro.jobs.report.statistics import (
    BOOTSTRAP_METRICS,
    bootstrap_samples,
    mean_sd,
    metrics_from_predictions,
    prediction_arrays,
    welch,
)
from medrepro.statistics.bootstrap import percentile_interval

STANDARD_METRICS = (
    "val/acc", "val/loss", "test/acc", "test/precision", "test/recall", "test/f1",
    "test/specificity", "test/auroc", "test/mse", "test/loss", "seconds_per_epoch",
)
RATES = ("acc", "precision", "recall", "f1", "specificity")  # shown in percent
CSV_COLUMNS = ["arm", "metric", "row", "seed", "job", "status", "value", "sd", "n_runs",
               "paper", "paper_sd", "difference", "ci95_low", "ci95_high"]


def write_report(sweep_dir: str | Path, resamples: int = 1000) -> Path:
    """Report on every run of ``sweep_dir``; return the path of summary.md."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    config = next((r.config for r in runs if r.config), {})
    reference = config.get("reference") or {}
    arms = group_arms(runs, reference)
    classes = _classes(runs)
    metrics = _metrics(arms)
    intervals = _bootstrap(arms, classes, resamples)
    table = _table(arms, metrics, intervals)
    table.to_csv(sweep_dir / "summary.csv", index=False)
    figures = _figures(arms, classes, reference, sweep_dir)
    text = _markdown(sweep_dir, config, reference, runs, arms, classes, metrics, table, figures, resamples)
    path = sweep_dir / "summary.md"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- numbers


def _classes(runs: list[Run]) -> list[str]:
    for run in runs:
        classes = (run.results.get("data") or {}).get("classes")
        if classes:
            return list(classes)
    return []


def _metrics(arms: list[Arm]) -> list[str]:
    """The paper's metrics first, then the standard ones, each once."""
    names = [m for arm in arms for m in arm.reference]
    return list(dict.fromkeys([*names, *STANDARD_METRICS]))


def _bootstrap(arms: list[Arm], classes: list[str], resamples: int) -> dict:
    """(arm label, seed or None) -> metric -> 95% interval, over resampled test images.
    ``None`` stands for the arm's mean over runs (each run resampled independently)."""
    intervals: dict = {}
    keys = [class_key(name) for name in classes]
    for arm in arms:
        per_run = {}
        for run in arm.completed:
            if run.predictions is None or not len(run.predictions) or not classes:
                continue
            arrays = prediction_arrays(run.predictions, classes)
            samples = bootstrap_samples(len(arrays[0]), resamples, seed=run.job)
            values = metrics_from_predictions(*arrays, keys, samples)
            per_run[run.seed] = values
            intervals[(arm.label, run.seed)] = {k: percentile_interval(v) for k, v in values.items()}
        if per_run:
            names = set.intersection(*(set(v) for v in per_run.values()))
            with warnings.catch_warnings():  # a resample where every run's value is NaN stays
                warnings.simplefilter("ignore", RuntimeWarning)  # NaN; the interval drops it
                intervals[(arm.label, None)] = {
                    name: percentile_interval(
                        np.nanmean([v[name] for v in per_run.values()], axis=0))
                    for name in names
                }
    return intervals


def _table(arms: list[Arm], metrics: list[str], intervals: dict) -> pd.DataFrame:
    rows = []
    for arm in arms:
        for metric in metrics:
            name = metric.partition("/")[2]
            test_metric = metric.startswith("test/") and name in _bootstrappable(intervals)
            values = []
            for run in arm.runs:
                value = run.metric(metric) if run.completed else None
                values.append(value)
                interval = intervals.get((arm.label, run.seed), {}).get(name) if test_metric else None
                rows.append(_row(arm, metric, "run", value, interval, run=run))
            mean, sd = mean_sd(values)
            paper, paper_sd, best = _paper(arm.reference.get(metric))
            scored = [(v, run) for v, run in zip(values, arm.runs) if v is not None]
            top_value, top_run = max(scored, key=lambda pair: pair[0], default=(None, None))
            ours = top_value if best else mean
            # the interval of the number shown: the best run's own, or that of the mean
            seed = top_run.seed if best and top_run is not None else None
            interval = intervals.get((arm.label, seed), {}).get(name) if test_metric else None
            rows.append(_row(arm, metric, "best run" if best else "mean", ours, interval, sd=sd,
                             n=sum(v is not None for v in values), paper=paper, paper_sd=paper_sd))
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    for column in ("seed", "job", "n_runs"):  # blank in some rows: pandas would make them 0.0
        table[column] = _whole_numbers(table[column])
    return table


def _bootstrappable(intervals: dict) -> set[str]:
    names = set(BOOTSTRAP_METRICS)
    for value in intervals.values():
        names |= set(value)
    return names


def _row(arm, metric, kind, value, interval, run=None, sd=None, n=None, paper=None, paper_sd=None):
    difference = value - paper if value is not None and paper is not None else None
    low, high = interval if interval else (None, None)
    return {
        "arm": arm.label, "metric": metric, "row": kind,
        "seed": run.seed if run else None, "job": run.job if run else None,
        "status": run.status if run else None, "value": value, "sd": sd, "n_runs": n,
        "paper": paper, "paper_sd": paper_sd, "difference": difference,
        "ci95_low": _finite(low), "ci95_high": _finite(high),
    }


def _paper(reference) -> tuple[float | None, float | None, bool]:
    """(value, SD, whether it is the best run rather than the mean)."""
    if reference is None:
        return None, None, False
    if not isinstance(reference, dict):
        return float(reference), None, False
    if "mean" in reference:
        return float(reference["mean"]), _float(reference.get("sd")), False
    if "best" in reference:
        return float(reference["best"]), None, True
    runs = reference.get("runs") or []
    mean, sd = mean_sd([float(v) for v in runs])
    return mean, sd, False


# --------------------------------------------------------------------------- figures


def _figures(arms, classes, reference, folder: Path) -> list[tuple[str, Path]]:
    figures = []
    main = reference.get("main_metric") or "test/acc"
    candidates = [
        ("Learning curves per arm", plots.plot_arm_learning_curves(arms, folder / "learning_curves.png")),
        ("ROC curves of all arms", plots.plot_arm_roc_curves(arms, classes, folder / "roc_curves.png")
         if classes else None),
        (f"{reference.get('parameter') or 'Arm'} against {main}",
         plots.plot_parameter_vs_metric(arms, main, reference.get("parameter") or "arm",
                                        folder / "parameter_vs_metric.png", bool(reference.get("log_x")))),
    ]
    figures += [(title, path) for title, path in candidates if path is not None]
    for path in plots.plot_arm_confusion_matrices(arms, folder):
        figures.append((f"Confusion matrix, {path.stem.removeprefix('confusion_')}", path))
    return figures


# --------------------------------------------------------------------------- markdown


def _markdown(sweep_dir, config, reference, runs, arms, classes, metrics, table, figures, resamples) -> str:
    main = reference.get("main_metric") or "test/acc"
    status_counts = pd.Series([r.status for r in runs]).value_counts().to_dict()
    lines = [
        f"# {config.get('task_name', sweep_dir.name)}: reproduction report",
        "",
        (f"Sweep folder `{sweep_dir}`, {len(runs)} runs "
        f"({', '.join(f'{n} {s}' for s, n in status_counts.items())}), "
        f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}."),
        "",
        *_data_facts(runs, classes),
    ]
    if reference:
        lines += ["", f"**Paper:** {reference.get('citation', '')}"]
        if reference.get("note"):
            lines += ["", f"**About the paper's numbers:** {reference['note']}"]
    lines += ["", ("Rates (accuracy, precision, recall, F1, specificity) are in %, differences in "
              "percentage points; AUROC, loss and MSE as fractions; seconds per epoch in s. "
              "SD is the sample SD over runs (ddof 1). Failed or diverged runs are listed but "
              "left out of means.")]
    lines += ["", "## Runs", "", *_runs_table(arms, main)]
    not_completed = _not_completed(runs)
    if not_completed:
        lines += ["", "## Runs that did not complete", "", *not_completed]
    lines += ["", "## Every arm beside the paper", "",
              (f"Each run's value, the mean ± SD over runs, the paper's value and our mean minus "
              f"the paper's. The 95% CI of a test metric is a percentile bootstrap over the test "
              f"images ({resamples} resamples; for the mean, each run's test set is resampled "
              f"independently; for a best run, that run's), so it shows test-set sampling "
              f"uncertainty, not run-to-run spread."),
              "", *_metric_table(arms, metrics, table)]
    lines += ["", "## Do the arms differ by more than run-to-run noise?", "",
              *_comparisons(arms, main, reference)]
    lines += ["", "## 95% confidence intervals per run (bootstrap over test images)", "",
              *_run_intervals(arms, table)]
    if figures:
        lines += ["", "## Figures", ""]
        for title, path in figures:
            lines += [f"**{title}**", "", f"![{title}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _data_facts(runs: list[Run], classes: list[str]) -> list[str]:
    data = next((r.results.get("data") for r in runs if r.results.get("data")), None) or {}
    if not data:
        return [("No run recorded its data's classes and split (a run records them when "
                 "training starts); see *Runs that did not complete* for the step at which each "
                 "run stopped.")]
    positive = data.get("positive_class")
    if positive:
        negative = next((c for c in classes if c != positive), "?")
        classes_line = (f"**Positive class:** `{positive}` (label 1; `{negative}` is label 0). "
                        "Precision, recall, F1 and specificity score the positive class.")
    else:
        classes_line = (f"**Classes:** {', '.join(f'`{c}`' for c in classes)} (multi-class: "
                        "precision, recall, F1, specificity and AUROC are macro averages over "
                        "classes; accuracy is the fraction correct).")
    split = _split_sentence(data)
    counts = data.get("split_counts") or {}
    count_text = "; ".join(
        f"{split_name} {sum(v for v in row.values() if isinstance(v, (int, float)))}"
        for split_name, row in counts.items() if split_name != "unused"
    )
    return [f"- {classes_line}", f"- **Split:** {split}" + (f" Images: {count_text}." if count_text else ""),
            (f"- **Data:** `{data.get('name')}` at `{data.get('root')}`, {data.get('channels')} "
            f"channel(s), {data.get('image_size')} px.")]


def _split_sentence(data: dict) -> str:
    """Whether the split is patient-level, from results.json's data checks:
    ``patient_leakage_possible`` is true when some patient has images in several splits,
    false when patient ids are known and none has, null when there are no patient ids."""
    leakage, mode = data.get("patient_leakage_possible"), data.get("split_mode")
    several = data.get("patients_in_several_splits")
    if leakage:
        count = f"{several} patient(s)" if isinstance(several, int) else "some patients"
        return (f"`{mode}`, **not patient-level**: {count} have images in more than one split, "
                "so test images may come from patients seen in training.")
    if leakage is False:
        return f"`{mode}`, **patient-level**: no patient has images in more than one split."
    if mode == "given":
        return ("the data set's own train/val/test folders (`given`); "
                + ("images of a patient are kept together." if data.get("group_by_patient")
                   else "whether a patient is in more than one split depends on the data set."))
    return (f"`{mode}`, image-level; the file names carry no patient id, so whether a patient "
            "is in more than one split cannot be checked.")


def _runs_table(arms: list[Arm], main: str) -> list[str]:
    lines = [f"| arm | seed | job | status | {main} | epochs | s/epoch | note |", "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for run in arm.runs:
            note = "" if run.completed else _one_line(_how_it_stopped(run, sentence=False))
            lines.append(
                f"| {arm.label} | {run.seed} | {run.job} | {run.status} | "
                f"{_show(main, run.metric(main) if run.completed else None)} | "
                f"{run.results.get('epochs_run', '')} | {_show('seconds_per_epoch', run.results.get('seconds_per_epoch'))} | {note} |"
            )
    return lines


def _how_it_stopped(run: Run, sentence: bool = True) -> str:
    """``failed during the pre-training data check: <the whole sentence>`` for a run that
    stopped (without the sentence: only the step); empty for a completed run."""
    if run.completed:
        return ""
    if run.status == "unfinished":
        return "unfinished: its results.json still says running (killed, or still running)"
    if run.status == "not started":
        return "not started: no results.json"
    head = f"{run.status} {describe_step(run.failed_at)}"
    return f"{head}: {run.error}" if run.error and sentence else head


def _not_completed(runs: list[Run]) -> list[str]:
    """One line per way of stopping (status, step and sentence), with the jobs that
    stopped that way, in job order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if not run.completed:
            groups.setdefault(_one_line(_how_it_stopped(run)), []).append(run)
    lines = []
    for how, members in groups.items():
        jobs = ", ".join(str(run.job) for run in members)
        noun = "job" if len(members) == 1 else "jobs"
        lines.append(f"- {noun} {jobs} ({len(members)} of {len(runs)}): {how}")
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _metric_table(arms: list[Arm], metrics: list[str], table: pd.DataFrame) -> list[str]:
    lines = ["| metric | arm | runs | ours | paper | ours − paper | 95% CI (test images) |",
             "|---|---|---|---|---|---|---|"]
    for metric in metrics:
        for arm in arms:
            rows = table[(table["arm"] == arm.label) & (table["metric"] == metric)]
            summary = rows[rows["row"] != "run"].iloc[0]
            if _missing(summary["value"]) and _missing(summary["paper"]):
                continue
            runs = ", ".join(_show(metric, v) for v in rows[rows["row"] == "run"]["value"])
            ours = _show(metric, summary["value"])
            if summary["row"] == "best run":
                ours += " (best run)"
            elif not _missing(summary["sd"]):
                ours += f" ± {_show(metric, summary['sd'])}"
            paper = _show(metric, summary["paper"])
            if not _missing(summary["paper_sd"]):
                paper += f" ± {_show(metric, summary['paper_sd'])}"
            ci = ("" if _missing(summary["ci95_low"])
                  else f"{_show(metric, summary['ci95_low'])} to {_show(metric, summary['ci95_high'])}")
            lines.append(f"| {metric} | {arm.label} | {runs} | {ours} | {paper} | "
                         f"{_show(metric, summary['difference'], signed=True)} | {ci} |")
    return lines


def _comparisons(arms: list[Arm], main: str, reference: dict) -> list[str]:
    lines = [(f"Test: Welch's two-sample t-test (unequal variances) on the runs' {main}, "
             "two-sided, each pair of arms, p < 0.05 called a difference, no correction for "
             "multiple comparisons. With 3 runs per arm only large, consistent gaps reach it."), ""]
    if len(arms) < 2:
        values = [r.metric(main) for r in arms[0].completed] if arms else []
        mean, sd = mean_sd(values)
        spread = (f"{main} {_show(main, mean)} ± {_show(main, sd)} over {len(values)} runs"
                  if sd is not None else f"{len(values)} completed run(s)")
        return [(f"One arm only ({spread}): there is nothing to compare. The SD is the "
                            "run-to-run noise any future change must beat.")]
    for first, second in itertools.combinations(arms, 2):
        a = [r.metric(main) for r in first.completed]
        b = [r.metric(main) for r in second.completed]
        lines.append("- " + _sentence(welch(first.label, a, second.label, b), main, "ours"))
    paper_lines = []
    for first, second in itertools.combinations(arms, 2):
        a, b = (_paper_runs(arm.reference.get(main)) for arm in (first, second))
        if len(a) >= 2 and len(b) >= 2:
            paper_lines.append("- " + _sentence(welch(first.label, a, second.label, b), main, "paper"))
    if paper_lines:
        lines += ["", f"The same test on the paper's own published runs of {main}:", "", *paper_lines]
    return lines


def _sentence(comparison, metric: str, whose: str) -> str:
    gap = _show(metric, comparison.difference, signed=True)
    unit = " points" if _is_rate(metric) else ""
    head = f"{comparison.first} vs {comparison.second}: {gap}{unit} {metric}"
    if comparison.p_value is None:
        return (f"{head}: cannot be tested ({comparison.n_first} vs {comparison.n_second} runs; "
                "the test needs at least 2 completed runs per arm and some spread).")
    verdict = ("larger than run-to-run noise" if comparison.distinguishable
               else f"not distinguishable from run-to-run noise with {comparison.n_first} vs "
                    f"{comparison.n_second} runs")
    p_value = "p < 0.001" if comparison.p_value < 0.001 else f"p = {comparison.p_value:.3f}"
    return f"{head} (Welch {p_value}): {verdict}."


def _run_intervals(arms: list[Arm], table: pd.DataFrame) -> list[str]:
    rows = table[(table["row"] == "run") & table["ci95_low"].notna()]
    if rows.empty:
        return ["No completed run with test predictions."]
    metrics = list(dict.fromkeys(rows["metric"]))
    lines = ["| arm | seed | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for (arm, seed), group in rows.groupby(["arm", "seed"], sort=False):
        cells = []
        for metric in metrics:
            row = group[group["metric"] == metric]
            if row.empty:
                cells.append("")
                continue
            row = row.iloc[0]
            cells.append(f"{_show(metric, row['value'])} [{_show(metric, row['ci95_low'])}, "
                         f"{_show(metric, row['ci95_high'])}]")
        lines.append(f"| {arm} | {seed} | " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------- formatting


def _paper_runs(reference) -> list[float]:
    return [float(v) for v in reference.get("runs", [])] if isinstance(reference, dict) else []


def _is_rate(metric: str) -> bool:
    name = metric.partition("/")[2]
    return name.split("_")[0] in RATES


def _show(metric: str, value, signed: bool = False) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    if _is_rate(metric):
        text = f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    elif metric == "seconds_per_epoch":
        text = f"{value:+.1f}" if signed else f"{value:.1f}"
    else:
        text = f"{value:+.4f}" if signed else f"{value:.4f}"
    return text


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _whole_numbers(column: pd.Series) -> pd.Series:
    """``column`` as nullable integers (``0``, not ``0.0``; blank stays blank) when every
    value in it is a whole number; otherwise unchanged."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() != column.notna().sum() or (numbers.dropna() % 1 != 0).any():
        return column
    return numbers.astype("Int64")


def _finite(value):
    return None if value is None or not math.isfinite(value) else value


def _float(value):
    return None if value is None else float(value)
