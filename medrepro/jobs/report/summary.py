"""Write ``summary.md`` and ``summary.csv`` (and the figures) into a sweep folder.

The numbers come from the modules beside this one: test_sets (the runs' test predictions,
resampled by patient), intervals (Wilson, DeLong, bootstrap, arm means), table
(summary.csv), comparisons (Welch, paired DeLong, Holm), calibration_report, kfold_report
and front_matter (deviations, allowed checks, epochs, data flow)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from medrepro.core.run_folder import GALLERY_FOLDER, REPORT_MD
from medrepro.jobs.job_steps import describe_step
from medrepro.jobs.report import plots
from medrepro.jobs.report.arms import Arm, group_arms
from medrepro.jobs.report.calibration_report import (
    calibration_bins,
    calibration_lines,
    operating_point_lines,
    test_probabilities,
)
from medrepro.jobs.report.comparisons import paired_delong_lines, welch_lines
from medrepro.jobs.report.formatting import is_rate, missing, one_line, show, show_interval
from medrepro.jobs.report.front_matter import (
    allowed_check_lines,
    data_flow_lines,
    deviation_lines,
    epoch_lines,
)
from medrepro.jobs.report.guideline_checklist import checklist_table, section_link
from medrepro.jobs.report.intervals import (
    ARM_ONE_RUN,
    ARM_SEPARATE,
    ARM_SHARED,
    BOOTSTRAP,
    DELONG,
    WILSON,
)
from medrepro.jobs.report.kfold_report import kfold_lines, pooled_out_of_fold, pooled_rows
from medrepro.jobs.report.paper_comparison import paper_comparison_sentence
from medrepro.jobs.report.runs import Run, load_runs
from medrepro.jobs.report.table import CSV_COLUMNS, Intervals, all_intervals, summary_table
from medrepro.jobs.report.test_sets import BOOTSTRAP_SEED, ArmTestSet, arm_test_set
from medrepro.statistics.bootstrap import GROUPED_BOOTSTRAP_METHOD
from medrepro.statistics.delong import DELONG_INTERVAL_METHOD, PAIRED_DELONG_METHOD
from medrepro.statistics.multiple_testing import holm_method
from medrepro.statistics.proportions import WILSON_METHOD

STANDARD_METRICS = (
    "val/acc", "val/loss", "test/acc", "test/precision", "test/recall", "test/f1",
    "test/specificity", "test/auroc", "test/mse", "test/loss", "seconds_per_epoch",
)
# the report's sections (headings) and the checklist keys each answers
DEVIATIONS = "Deviations from the experiment and checks that were allowed"
EPOCHS = "Which epoch each number comes from"
DATA_FLOW = "Data flow"
ARMS = "Every arm beside the paper"
PAPER = "The paper's numbers against our intervals"
WELCH = "Do the arms differ by more than run-to-run noise?"
PAIRED = "Paired DeLong tests on the same test images"
RUN_INTERVALS = "95% confidence intervals per run"
OPERATING_POINT = "Operating point"
CALIBRATION = "Calibration"
KFOLD = "Cross-validation (k-fold)"
METHODS = "Statistical methods"
CHECKLIST = "Reporting checklist (CLAIM 2024, TRIPOD+AI)"
FAILURES = "Failure analysis"


def write_report(sweep_dir: str | Path, resamples: int = 1000) -> Path:
    """Report on every run of ``sweep_dir``; return the path of summary.md."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    config = next((r.config for r in runs if r.config), {})
    reference = config.get("reference") or {}
    arms = group_arms(runs, reference)
    classes = _classes(runs)
    binary = len(classes) == 2
    metrics = _metrics(arms)
    test_sets = {arm.label: arm_test_set(arm, classes, resamples) for arm in arms}
    intervals = all_intervals(test_sets, binary)
    table = summary_table(arms, metrics, intervals)
    pooled = {arm.label: pooled_out_of_fold(arm, classes, resamples) for arm in arms if arm.kfold}
    extra = [row for results in pooled.values() for row in pooled_rows(results)]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra, columns=CSV_COLUMNS)], ignore_index=True)
    table.to_csv(sweep_dir / "summary.csv", index=False)
    bins = calibration_bins(test_sets)
    figures = _figures(arms, classes, reference, sweep_dir)
    reliability = _reliability_figures(test_sets, bins, sweep_dir)
    parts = _Parts(sweep_dir, config, reference, runs, arms, classes, metrics, table, intervals,
                   test_sets, pooled, resamples, bins)
    text = _markdown(parts, figures, reliability)
    path = sweep_dir / "summary.md"
    path.write_text(text)
    return path


class _Parts:
    """What the markdown is written from."""

    def __init__(self, sweep_dir, config, reference, runs, arms, classes, metrics, table,
                 intervals, test_sets, pooled, resamples, bins):
        self.sweep_dir, self.config, self.reference, self.runs = sweep_dir, config, reference, runs
        self.arms, self.classes, self.metrics, self.table = arms, classes, metrics, table
        self.intervals: Intervals = intervals
        self.test_sets: dict[str, ArmTestSet] = test_sets
        self.pooled, self.resamples, self.bins = pooled, resamples, bins
        self.binary = len(classes) == 2
        self.main = reference.get("main_metric") or "test/acc"


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


def _reliability_figures(test_sets: dict[str, ArmTestSet], bins: int, folder: Path) -> dict[str, str]:
    """Arm label -> file name of its reliability diagram."""
    names = {}
    for label, test_set in test_sets.items():
        runs = [(f"seed {t.run.seed}" + ("" if t.run.fold is None else f" fold {t.run.fold}")
                 + f" (job {t.run.job})", t.truth, test_probabilities(t)) for t in test_set.runs]
        path = plots.plot_reliability_diagram(label, runs, bins,
                                              folder / f"reliability_{plots.slug(label)}.png")
        if path is not None:
            names[label] = path.name
    return names


# --------------------------------------------------------------------------- markdown


def _markdown(parts: _Parts, figures, reliability) -> str:
    runs, arms = parts.runs, parts.arms
    status_counts = pd.Series([r.status for r in runs]).value_counts().to_dict()
    lines = [
        f"# {parts.config.get('task_name', parts.sweep_dir.name)}: reproduction report",
        "",
        (f"Sweep folder `{parts.sweep_dir}`, {len(runs)} runs "
         f"({', '.join(f'{n} {s}' for s, n in status_counts.items())}), "
         f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}."),
    ]
    flagged = deviation_lines(runs) + allowed_check_lines(runs)
    if flagged:
        lines += ["", f"## {DEVIATIONS}", "", *flagged]
    lines += ["", *_data_facts(runs, parts.classes)]
    reference = parts.reference
    if reference:
        lines += ["", f"**Paper:** {reference.get('citation', '')}"]
        if reference.get("note"):
            lines += ["", f"**About the paper's numbers:** {reference['note']}"]
    lines += ["", ("Rates (accuracy, precision, recall, F1, specificity) are in %, differences in "
                   "percentage points; AUROC, loss and MSE as fractions; seconds per epoch in s. "
                   "SD is the sample SD over runs (ddof 1). Failed or diverged runs are listed but "
                   "left out of means. Precision is the PPV, recall the sensitivity.")]
    lines += ["", f"## {EPOCHS}", "", *epoch_lines(runs)]
    lines += ["", f"## {DATA_FLOW}", "", *data_flow_lines(runs, parts.classes)]
    lines += ["", "## Runs", "", *_runs_table(arms, parts.main)]
    not_completed = _not_completed(runs)
    if not_completed:
        lines += ["", "## Runs that did not complete", "", *not_completed]
    lines += ["", f"## {ARMS}", "", *_arm_table_intro(parts), "", *_metric_table(parts)]
    lines += ["", f"## {PAPER}", "", *_paper_comparison(parts)]
    lines += ["", f"## {WELCH}", "", *welch_lines(arms, parts.main)]
    paired = paired_delong_lines(arms, parts.test_sets, parts.binary)
    if paired:
        lines += ["", f"## {PAIRED}", "", *paired]
    lines += ["", f"## {RUN_INTERVALS} (Wilson, DeLong, bootstrap over patients)", "",
              *_run_intervals(parts)]
    lines += ["", f"## {OPERATING_POINT}", "",
              *operating_point_lines(parts.test_sets, parts.binary, parts.classes)]
    lines += ["", f"## {CALIBRATION}", "", *calibration_lines(parts.test_sets, parts.bins, reliability)]
    lines += ["", f"## {FAILURES}", "", *_failure_lines(arms, parts.sweep_dir)]
    kfold_arms = [arm for arm in arms if arm.kfold]
    if kfold_arms:
        lines += ["", f"## {KFOLD}", ""]
        for arm in kfold_arms:
            lines += [*kfold_lines(arm, parts.pooled.get(arm.label, []), parts.intervals.runs), ""]
    lines += ["", f"## {METHODS}", "", *_methods(parts)]
    if figures:
        lines += ["", "## Figures", ""]
        for title, path in figures:
            lines += [f"**{title}**", "", f"![{title}]({path.name})", ""]
    lines += ["", f"## {CHECKLIST}", "",
              ("Each item of CLAIM (2024 update) and TRIPOD+AI (2024) points to the section of "
               "this report that answers it, or says what the author must add; the per-run "
               "report.md of each run folder answers the items about data, model and failure "
               "analysis in more detail."), "",
              *checklist_table(_checklist_answers(flagged, bool(kfold_arms)))]
    return "\n".join(lines).rstrip() + "\n"


def _checklist_answers(flagged: list[str], kfold: bool) -> dict[str, str]:
    answers = {
        "data_flow": section_link(DATA_FLOW), "split": section_link(DATA_FLOW),
        "model_selection": section_link(EPOCHS), "epochs": section_link(EPOCHS),
        "discrimination": section_link(ARMS), "operating_point": section_link(OPERATING_POINT),
        "calibration": section_link(CALIBRATION), "statistics_methods": section_link(METHODS),
        "paper_comparison": section_link(PAPER), "failure_analysis": section_link(FAILURES),
    }
    if kfold:
        answers["split"] += ", " + section_link(KFOLD)
    if flagged:
        answers["deviations"] = section_link(DEVIATIONS)
    return answers


def _failure_lines(arms: list[Arm], sweep_dir: Path) -> list[str]:
    """Per completed run: its misclassified test images (predictions.csv at the run's
    operating point) and links to its failure gallery and report.md, where they are."""
    lines = [("Misclassified test images of each run (at its operating point), with its failure "
              "gallery (the most confident errors and correct cases with their Grad-CAM maps) and "
              "its report.md (the most confident errors by name)."), "",
             "| arm | seed | job | misclassified | gallery | report |", "|---|---|---|---|---|---|"]
    rows = 0
    for arm in arms:
        for run in arm.completed:
            if run.predictions is None or not len(run.predictions):
                continue
            wrong = int((run.predictions["label"] != run.predictions["predicted"]).sum())
            folder = run.folder.relative_to(sweep_dir).as_posix()
            pictures = sorted((run.folder / GALLERY_FOLDER).glob("*.png"))
            gallery = ", ".join(f"[{p.stem}]({folder}/{GALLERY_FOLDER}/{p.name})" for p in pictures)
            report = f"[report.md]({folder}/{REPORT_MD})" if (run.folder / REPORT_MD).is_file() else ""
            lines.append(f"| {arm.label} | {run.seed} | {run.job} | {wrong} of {len(run.predictions)} "
                         f"| {gallery or '–'} | {report or '–'} |")
            rows += 1
    return lines if rows else ["No completed run with test predictions."]


def _runs_table(arms: list[Arm], main: str) -> list[str]:
    kfold = any(arm.kfold for arm in arms)
    fold_head, fold_rule = ("fold | ", "---|") if kfold else ("", "")
    lines = [f"| arm | seed | {fold_head}job | status | {main} | epochs | tested epoch | s/epoch | note |",
             f"|---|---|{fold_rule}---|---|---|---|---|---|---|"]
    for arm in arms:
        for run in arm.runs:
            note = "" if run.completed else one_line(_how_it_stopped(run, sentence=False))
            fold = f"{'' if run.fold is None else run.fold} | " if kfold else ""
            tested = "" if run.tested_epoch is None else run.tested_epoch
            lines.append(
                f"| {arm.label} | {run.seed} | {fold}{run.job} | {run.status} | "
                f"{show(main, run.metric(main) if run.completed else None)} | "
                f"{run.results.get('epochs_run', '')} | {tested} | "
                f"{show('seconds_per_epoch', run.results.get('seconds_per_epoch'))} | {note} |"
            )
    return lines


def _arm_table_intro(parts: _Parts) -> list[str]:
    lines = [("Each run's value, the mean ± SD over runs, the paper's value and our mean minus "
              "the paper's, and the 95% CI of the number shown: for a mean, the interval of an "
              "arm's mean over its runs, which holds the run-to-run variation and the test-set "
              "sampling (never narrower than its runs' spread warrants); for a best run, that "
              "run's own interval (Wilson, DeLong or the bootstrap over patients; see "
              f"*{RUN_INTERVALS}*). The epoch column gives the runs' epochs the row comes from "
              f"(see *{EPOCHS}*). How each arm's interval was formed:"), ""]
    for arm in parts.arms:
        test_set = parts.test_sets.get(arm.label)
        detail = parts.intervals.arm_details.get(arm.label, {})
        example = detail.get("acc") or next(iter(detail.values()), None)
        if test_set is None or not test_set.runs or example is None:
            lines.append(f"- {arm.label}: no completed run with test predictions: no interval.")
            continue
        n = len(test_set.runs)
        if test_set.shared:
            first = test_set.runs[0]
            where = (f"{n} run(s) tested on the same {first.n_images} images "
                     f"({first.n_patients} patients); {parts.resamples} resamples of them by "
                     "patient, drawn once for the arm and shared by its runs")
        else:
            where = (f"{n} runs tested on different test sets (e.g. a split per seed); each "
                     "run's own test set resampled by patient for its own interval")
        lines.append(f"- {arm.label}: {where}. {example.method}")
    return lines


def _metric_table(parts: _Parts) -> list[str]:
    table = parts.table
    lines = ["| metric | arm | runs | ours | paper | ours − paper | 95% CI | CI method | epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for metric in parts.metrics:
        for arm in parts.arms:
            rows = table[(table["arm"] == arm.label) & (table["metric"] == metric)]
            summary = rows[rows["row"].isin(["mean", "best run"])].iloc[0]
            if missing(summary["value"]) and missing(summary["paper"]):
                continue
            run_rows = rows[rows["row"] == "run"]
            runs = ", ".join(show(metric, v) for v in run_rows["value"])
            ours = show(metric, summary["value"])
            if summary["row"] == "best run":
                ours += " (best run)"
            elif not missing(summary["sd"]):
                ours += f" ± {show(metric, summary['sd'])}"
            paper = show(metric, summary["paper"])
            if not missing(summary["paper_sd"]):
                paper += f" ± {show(metric, summary['paper_sd'])}"
            ci = show_interval(metric, summary["ci95_low"], summary["ci95_high"])
            method = summary["ci_method"] if isinstance(summary["ci_method"], str) else ""
            epochs = _epochs(run_rows) if metric != "seconds_per_epoch" else "all"
            lines.append(f"| {metric} | {arm.label} | {runs} | {ours} | {paper} | "
                         f"{show(metric, summary['difference'], signed=True)} | {ci} | {method} | {epochs} |")
    return lines


def _epochs(rows: pd.DataFrame) -> str:
    """The epochs of the completed runs' values: one number when they agree, each run's
    otherwise (– where a run does not record it); empty when none does."""
    done = rows[rows["status"] == "completed"]
    values = ["–" if pd.isna(v) else str(int(v)) for v in done["epoch"]]
    unique = set(values)
    if unique <= {"–"}:
        return ""
    return values[0] if len(unique) == 1 else ", ".join(values)


def _paper_comparison(parts: _Parts) -> list[str]:
    """In words, for each published number: inside, above or below our 95 % CI."""
    table = parts.table
    lines = []
    for arm in parts.arms:
        for metric in arm.reference:
            rows = table[(table["arm"] == arm.label) & (table["metric"] == metric)
                         & table["row"].isin(["mean", "best run"])]
            if rows.empty or missing(rows.iloc[0]["paper"]):
                continue
            row = rows.iloc[0]
            ours = None if missing(row["value"]) else float(row["value"])
            low = None if missing(row["ci95_low"]) else float(row["ci95_low"])
            high = None if missing(row["ci95_high"]) else float(row["ci95_high"])
            kind = "best run" if row["row"] == "best run" else "mean"
            sentence = paper_comparison_sentence(metric, float(row["paper"]), ours, low, high,
                                                 is_rate(metric))
            lines.append(f"- {arm.label} ({kind}): {sentence}")
    if not lines:
        return ["The experiment gives no published numbers to compare with."]
    return [("Where the paper's number lies against the 95% CI of our number (the arm's mean, "
             "or our best run where the paper reports its best run). val/* and train/* have "
             "no interval here: the report computes intervals from the test predictions."),
            "", *lines]


def _run_intervals(parts: _Parts) -> list[str]:
    table = parts.table
    rows = table[(table["row"] == "run") & table["ci95_low"].notna()]
    if rows.empty:
        return ["No completed run with test predictions."]
    metrics = list(dict.fromkeys(rows["metric"]))
    methods = {m: rows.loc[rows["metric"] == m, "ci_method"].iloc[0] for m in metrics}
    lines = [("Each cell: the run's value [95% CI] by the method under the metric's name; "
              "for AUROC the bootstrap over patients is given beside DeLong's interval."), "",
             "| arm | seed | job | " + " | ".join(f"{m} ({methods[m]})" for m in metrics)
             + (" | test/auroc (bootstrap over patients) |" if "test/auroc" in metrics else " |"),
             "|---|---|---|" + "---|" * (len(metrics) + ("test/auroc" in metrics))]
    for (arm, job), group in rows.groupby(["arm", "job"], sort=False):
        cells = []
        for metric in metrics:
            row = group[group["metric"] == metric]
            if row.empty:
                cells.append("")
                continue
            row = row.iloc[0]
            cells.append(f"{show(metric, row['value'])} [{show_interval(metric, row['ci95_low'], row['ci95_high'], ', ')}]")
        if "test/auroc" in metrics:
            row = group[group["metric"] == "test/auroc"]
            cells.append("" if row.empty else
                         f"[{show_interval('test/auroc', row.iloc[0]['bootstrap_low'], row.iloc[0]['bootstrap_high'], ', ')}]")
        seed = group["seed"].iloc[0]
        lines.append(f"| {arm} | {seed} | {job} | " + " | ".join(cells) + " |")
    return lines


def _methods(parts: _Parts) -> list[str]:
    bootstrap = GROUPED_BOOTSTRAP_METHOD.format(level=0.95, resamples=parts.resamples)
    lines = [
        (f"- **{WILSON}** (accuracy; two classes: also sensitivity = recall, specificity, "
        f"PPV = precision, NPV): {WILSON_METHOD.format(level=0.95)}"),
        f"- **{DELONG}** (two-class AUROC): {DELONG_INTERVAL_METHOD.format(level=0.95)}",
        (f"- **{BOOTSTRAP}** (F1, MSE, per-class and multi-class macro metrics, and beside "
        f"every other interval in summary.csv's bootstrap_low/high): {bootstrap} Patient ids "
        f"come from each run folder's split.csv, matched to predictions.csv by path; the "
        f"resamples are seeded ({BOOTSTRAP_SEED}), so the report is the same when written again."),
        (f"- **{ARM_SHARED}**: the interval of an arm's mean over runs tested on one test set; "
        "the runs' sample variance (run-to-run) plus the test-set variance they share (the "
        "covariance of two runs' values over the shared patient resamples), t with "
        "Welch-Satterthwaite degrees of freedom (medrepro.statistics.arm_interval), clipped "
        "to [0, 1]."),
        (f"- **{ARM_SEPARATE}**: runs tested on different test sets (a split per seed): mean ± "
        "t(k−1)·s/√k, their spread already holds the test-set sampling; clipped to [0, 1]."),
        (f"- **{ARM_ONE_RUN}**: an arm with one run: its value ± z·SE of its test-set bootstrap; "
        "the run-to-run variation is unknown."),
        ("- **Welch's t-test** (arms across seeds): the runs' values of two arms, unequal "
         "variances, two-sided; it asks whether the arms differ by more than run-to-run noise."),
        (f"- **Paired DeLong test** (two arms tested on the same images): {PAIRED_DELONG_METHOD} "
        "Per seed (the runs of equal seed, and fold) and on the seed-averaged probabilities "
        "(each image's positive-class probability averaged over an arm's runs, aligned by path)."),
        ("- **Holm's correction** (more than two arms): " + holm_method(
            len(parts.arms) * (len(parts.arms) - 1) // 2).replace(" comparisons", " pairwise comparisons")
         if len(parts.arms) > 2 else "- **Holm's correction**: not needed with two arms (one comparison)."),
    ]
    return lines


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
            groups.setdefault(one_line(_how_it_stopped(run)), []).append(run)
    lines = []
    for how, members in groups.items():
        jobs = ", ".join(str(run.job) for run in members)
        noun = "job" if len(members) == 1 else "jobs"
        lines.append(f"- {noun} {jobs} ({len(members)} of {len(runs)}): {how}")
    return lines


