"""``model_card.md``: what a trained model is and is not, for a reviewer or a colleague,
written into every run folder and eval folder from the folder's own files (results.json,
predictions.csv) and the command that made it (after Mitchell et al., "Model Cards for
Model Reporting", 2019: details, intended use, data, metrics with uncertainty,
limitations).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import pandas as pd

from medrepro.core.run_folder import PREDICTIONS_CSV, SPLIT_CSV, read_results, write_atomic
from medrepro.jobs.report.run_metrics import (
    RESAMPLES,
    auroc_estimate,
    auroc_rows,
    initialisation,
    patient_ids,
    proportion_row,
    read_table,
)
from medrepro.jobs.report.statistics import prediction_arrays

log = logging.getLogger(__name__)
MODEL_CARD = "model_card.md"
SMALL_TEST_SET = 100  # fewer test images: intervals are wide (said under Limitations)


def write_model_card(run_dir: str | Path, command: str | None = None) -> Path | None:
    """Write ``model_card.md`` into ``run_dir`` (a training run or an eval folder) from its
    results.json and predictions.csv; ``command`` reproduces it (``None``: the command
    that is running). Never fails the job: a card that cannot be written is logged."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    if not results:
        return None
    try:
        predictions = read_table(run_dir / PREDICTIONS_CSV)
        patients = patient_ids(predictions, read_table(run_dir / SPLIT_CSV))
        text = model_card_text(results, predictions, command or current_command(), patients)
        return write_atomic(run_dir / MODEL_CARD, text)
    except Exception as error:  # noqa: BLE001  (a by-product: the run's results stand)
        log.warning("model_card.md was not written (%s: %s).", type(error).__name__, error)
        return None


def current_command() -> str:
    """The command line that reproduces this job: the script and its Hydra overrides (a
    sweep's job: the job's own overrides)."""
    from hydra.core.hydra_config import HydraConfig

    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train.py"
    try:
        hydra_cfg = HydraConfig.get()
        overrides = list(hydra_cfg.overrides.task)
        script = f"{hydra_cfg.job.name}.py"
    except ValueError:  # not inside a Hydra job
        overrides = sys.argv[1:]
    return " ".join(["python", script, *(shlex.quote(o) for o in overrides)])


def model_card_text(results: dict, predictions: pd.DataFrame | None, command: str,
                    patients: list | None = None) -> str:
    """The card's markdown; ``patients``: the patient id of each row of ``predictions``
    (``None`` where unknown), which the AUROC bootstrap resamples."""
    config = results.get("config") or {}
    evaluation = results.get("evaluation")
    training = (evaluation or {}).get("training_config") or config
    data = results.get("data") or {}
    model = training.get("model") or {}
    classes = list(data.get("classes") or (evaluation or {}).get("classes") or [])
    title = f"{model.get('name', 'model')} on {data.get('name') or 'a data set'}"
    kind = "Evaluation of a trained model" if evaluation else "Training run"
    lines = [f"# Model card: {title}", "",
             (f"{kind}; written by medrepro from this folder's results.json and predictions.csv "
             f"(status: {results.get('status')}, finished {results.get('finished_at', 'n/a')})."), ""]
    lines += _model_section(results, training, model, classes, evaluation)
    lines += _intended_use(training, data)
    lines += _data_section(data, evaluation)
    lines += _metrics_section(predictions, classes, patients)
    lines += _limitations(results, training, data, predictions, evaluation)
    lines += _reproduce(results, command)
    return "\n".join(lines) + "\n"


def _model_section(results, training, model, classes, evaluation) -> list[str]:
    data = training.get("data") or {}
    positive = classes[1] if len(classes) == 2 else None
    start = initialisation(model)
    tested = results.get("tested_checkpoint") or {}
    checkpoint = (evaluation or {}).get("checkpoint") or tested.get("file") or "the final weights"
    epoch = (evaluation or {}).get("epoch") or tested.get("epoch")
    monitor = (results.get("checkpoint") or {}).get("monitor") or \
        ((training.get("callbacks") or {}).get("model_checkpoint") or {}).get("monitor")
    enhance = (data.get("preprocess") or {}).get("enhance", "none")
    threshold = model.get("threshold", 0.5)
    lines = ["## Model", "",
             f"- Architecture: timm `{model.get('name')}`, {start}.",
             f"- Input: {data.get('channels', 1)}-channel images resized to {data.get('image_size')} px"
             + (" with the local-phase enhancement (ENH, 3 channels)" if enhance == "enh" else "")
             + "; the normalisation is part of the model.",
             f"- Classes (output order): {', '.join(classes)}"
             + (f"; positive class: {positive}." if positive else "."),
             f"- Checkpoint: {checkpoint}" + (f" (after epoch {epoch}" if epoch else "")
             + (f", chosen by {monitor} on the validation set)." if monitor and epoch else
                (")." if epoch else ".")),
             (f"- Loss: {(training.get('loss') or {}).get('kind', 'auto')}; optimiser: "
             f"{(training.get('optimizer') or {}).get('_target_', '?').rsplit('.', 1)[-1]} "
             f"(lr {(training.get('optimizer') or {}).get('lr', '?')}); "
             f"epochs run: {results.get('epochs_run', (evaluation or {}).get('epoch', '?'))}."),
             ]
    if positive:
        lines.append(f"- Operating threshold: {positive} is predicted when its probability is at "
                     f"least {_threshold_words(results, threshold)}.")
    else:
        lines.append("- Decision rule: the class of highest probability.")
    return [*lines, ""]


def _threshold_words(results: dict, configured) -> str:
    """The threshold and how it was set (results.json ``operating_point`` where recorded)."""
    point = results.get("operating_point") or {}
    if point.get("threshold") is None:
        return f"{configured} (pre-specified in model.threshold, not tuned on the test set)"
    if point.get("chosen_on") == "validation":
        return (f"{point['threshold']:.4g} (chosen on the validation set by the rule "
                f"{point.get('rule')}, then applied unchanged to the test set)")
    return f"{point['threshold']:.4g} (pre-specified in model.threshold, not tuned on the test set)"


def _intended_use(training, data) -> list[str]:
    name = data.get("name") or "the data set"
    return ["## Intended use", "",
            (f"- Research use: reproducing and extending the published study on {name}, comparing "
            "architectures and training settings, and teaching."),
            ("- Not for clinical use: it is not a medical device, was not validated prospectively "
            "or on the population, scanners, views and image types a clinic sees, and must not "
            "inform the diagnosis, triage or treatment of any patient."),
            ("- Not for images unlike its training data (other modalities, body parts, views, "
            "paediatric vs adult, other classes): its outputs there mean nothing."), ""]


def _data_section(data, evaluation) -> list[str]:
    lines = ["## Data", "",
             f"- Data set: {data.get('name')} ({data.get('root')})"
             + (f", variant {data.get('variant')}" if data.get("variant") else "") + "."]
    if evaluation:
        lines.append(f"- Evaluated split: {evaluation.get('split')} (the model was trained on "
                     f"{evaluation.get('trained_on')}).")
        if evaluation.get("class_map"):
            mapped = ", ".join(f"{k} -> {v}" for k, v in evaluation["class_map"].items())
            lines.append(f"- Class map (data set -> model): {mapped}.")
        if evaluation.get("left_out"):
            left = ", ".join(f"{k}: {v}" for k, v in evaluation["left_out"].items())
            lines.append(f"- Left out (classes the model does not know): {left} image(s).")
    mode = data.get("split_mode")
    grouped = data.get("group_by_patient")
    lines.append(f"- Split: mode {mode}; "
                 + ("patient-level (all images of a patient in one split)." if grouped else
                    "image-level (patients are not grouped: images of one patient may be in "
                    "training and in test)." if data.get("patient_leakage_possible") else
                    "by the data set's own folders." if mode == "given" else "image-level."))
    counts = data.get("split_counts") or {}
    if counts:
        classes = sorted({c for row in counts.values() for c in row})
        lines += ["", "| split | " + " | ".join(classes) + " |",
                  "|---|" + "---:|" * len(classes)]
        lines += [f"| {split} | " + " | ".join(str(row.get(c, 0)) for c in classes) + " |"
                  for split, row in counts.items()]
        lines.append("")
    lines.append(f"- Leakage check: {_leakage_words(data)}")
    return [*lines, ""]


def _leakage_words(data) -> str:
    parts = []
    groups = data.get("duplicate_groups")
    if groups is not None:
        parts.append(f"{groups} group(s) of copies ({data.get('files_in_duplicate_groups', 0)} files) "
                     "kept within one split each")
    if data.get("conflicting_labels"):
        parts.append(f"{len(data['conflicting_labels'])} group(s) of copies under two labels left out")
    if data.get("patients_in_several_splits"):
        parts.append(f"{data['patients_in_several_splits']} patient(s) in several splits")
    allowed = [key for key in ("allowed_leakage", "leakage") if data.get(key)]
    if allowed:
        parts.append("training went on despite leakage (data.checks.allow_leakage=true)")
    if data.get("skipped_unreadable"):
        parts.append(f"{len(data['skipped_unreadable'])} unreadable file(s) skipped")
    if not parts:
        return "not run for this folder (no file facts recorded)."
    return "; ".join(parts) + "."


def _metrics_section(predictions, classes, patients=None) -> list[str]:
    lines = ["## Metrics", ""]
    if predictions is None or not len(predictions) or not classes:
        return [*lines, "No test predictions were recorded.", ""]
    truth, predicted, probabilities = prediction_arrays(predictions, classes)
    n = len(truth)
    lines.append(f"On {n} test images. 95 % intervals: Wilson score intervals for the "
                 "proportions; for AUROC, DeLong's interval (binary tasks) and the percentile "
                 f"bootstrap over patients ({RESAMPLES} resamples; the patients of each class "
                 "drawn with replacement with all their images; an image without a patient id "
                 "counts as a patient of its own).")
    lines += ["", "| metric | value | 95 % CI | counts |", "|---|---:|---|---|"]
    correct = int((truth == predicted).sum())
    lines.append(proportion_row("accuracy", correct, n))
    if len(classes) == 2:
        positives, negatives = truth == 1, truth == 0
        tp = int((predicted[positives] == 1).sum())
        tn = int((predicted[negatives] == 0).sum())
        fp, fn = int(negatives.sum()) - tn, int(positives.sum()) - tp
        lines += [proportion_row("sensitivity", tp, tp + fn), proportion_row("specificity", tn, tn + fp),
                  proportion_row("PPV", tp, tp + fp), proportion_row("NPV", tn, tn + fn)]
    else:
        for index, name in enumerate(classes):
            members = truth == index
            lines.append(proportion_row(f"recall {name}", int((predicted[members] == index).sum()),
                                         int(members.sum())))
    lines += auroc_rows(auroc_estimate(truth, probabilities, patients))
    return [*lines, ""]


def _limitations(results, training, data, predictions, evaluation) -> list[str]:
    model = training.get("model") or {}
    notes = []
    if not model.get("pretrained") and not model.get("weights"):
        notes.append("Trained from scratch; the published studies started from ImageNet weights.")
    size = (training.get("data") or {}).get("image_size")
    if size:
        notes.append(f"Images are seen at {size} px; detail finer than that is lost.")
    name = str(data.get("name") or "")
    if name.startswith("demo_"):
        notes.append("The data are generated phantoms (medrepro's demo data), not patients: the "
                     "figures show that the pipeline works, not how a model performs on X-rays or MRIs.")
    else:
        notes.append("One data set from one source (site): performance on other hospitals' images "
                     "is unknown until evaluated there (python eval.py ... data.root=DIR).")
    n = len(predictions) if predictions is not None else 0
    if 0 < n < SMALL_TEST_SET:
        notes.append(f"Only {n} test images: the intervals above are wide, and differences "
                     "smaller than them cannot be told apart from chance.")
    if data.get("patient_leakage_possible"):
        notes.append("Images are not grouped by patient: a patient's images may be in training "
                     "and test, which flatters the test metrics.")
    if (training.get("data") or {}).get("checks", {}).get("allow_leakage"):
        notes.append("Trained with data.checks.allow_leakage=true: leakage the checks found was allowed.")
    if data.get("skipped_unreadable"):
        notes.append(f"{len(data['skipped_unreadable'])} unreadable file(s) were skipped.")
    if evaluation and evaluation.get("left_out"):
        notes.append("Classes the model does not know were left out of this evaluation.")
    if results.get("status") != "completed":
        notes.append(f"The run did not complete (status {results.get('status')}): {results.get('error', '')}")
    return ["## Limitations", "", *(f"- {n}" for n in notes), ""]


def _reproduce(results, command: str) -> list[str]:
    versions = results.get("versions") or {}
    device = results.get("device") or {}
    listed = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    where = device.get("gpu") or device.get("accelerator") or "?"
    reason = f" ({results['precision_reason']})" if results.get("precision_reason") else ""
    return ["## Reproduce", "", "```", command, "```", "",
            (f"Versions: {listed}. Device: {where}; precision {results.get('precision', '?')}{reason}; "
            f"seed {(results.get('config') or {}).get('seed')}."), ""]
