"""The run report's sections before the test numbers: deviations from the experiment, what
the pre-training checks allowed, the data flow (STARD), the model, how it was selected,
and which epoch each reported number comes from."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from medrepro.core.records import SPLITS
from medrepro.core.run_folder import RESULTS_JSON, read_results
from medrepro.jobs.report.allowed_checks import allowed_checks
from medrepro.jobs.report.protocol_deviations import MISSING, run_folder_deviations
from medrepro.jobs.report.run_contents import RunContents
from medrepro.jobs.report.run_metrics import initialisation
from medrepro.statistics.bootstrap import group_keys

DEVIATIONS = "Deviations from the experiment"
ALLOWED = "What the pre-training checks allowed"
DATA_FLOW = "Data flow (STARD)"
MODEL = "Model"
MODEL_SELECTION = "Model selection"
EPOCHS = "Which epoch each number comes from"
UNUSED = "unused"
CELL_CHARACTERS = 90  # a longer value is cut in the deviations table
EPOCH_METRICS = ("loss", "acc", "auroc", "recall", "specificity", "precision", "f1")


# --------------------------------------------------------------------------- deviations


def deviation_record(run: RunContents) -> dict:
    """``experiment``, ``deviations`` and where they come from (``of``): this run's
    results.json, the evaluated model's training run, or the folder's .hydra/ files."""
    results = run.results
    if "deviations" in results:
        return {"experiment": results.get("experiment"), "deviations": results["deviations"],
                "of": "this run"}
    if run.evaluation:
        training_run = run.evaluation.get("training_run")
        training = read_results(training_run) if training_run else None
        if training and "deviations" in training:
            return {"experiment": training.get("experiment"), "deviations": training["deviations"],
                    "of": f"the evaluated model's training run ({training_run}/{RESULTS_JSON})"}
        return {"experiment": None, "deviations": None, "of": None,
                "unknown": "the evaluated model's training run records none"}
    try:
        record = run_folder_deviations(run.folder, results.get("config") or {})
    except Exception as error:  # noqa: BLE001  (an old folder whose experiment is gone)
        return {"experiment": None, "deviations": None, "of": None,
                "unknown": f"{type(error).__name__}: {error}"}
    return {**record, "of": "this run (from its .hydra/ files)"}


def deviation_lines(record: dict) -> list[str]:
    lines = [f"## {DEVIATIONS}", ""]
    experiment, found = record.get("experiment"), record.get("deviations")
    if record.get("unknown"):
        return [*lines, f"Not known: {record['unknown']}.", ""]
    if experiment is None:
        return [*lines, ("No experiment config (experiment=null): nothing to compare with a "
                        "paper's protocol."), ""]
    source = f"conf/experiment/{experiment}.yaml"
    if not found:
        return [*lines, (f"None: {record['of']} used every protocol setting of experiment "
                         f"`{experiment}` ({source}); its swept settings (seed, arm) are its own."), ""]
    lines.append(f"**{len(found)} setting(s) of {record['of']} differ from experiment "
                 f"`{experiment}`** ({source}): the paper's numbers were obtained without "
                 "these changes, so a comparison with them is not like for like. Not counted: "
                 "the experiment's swept settings (seed, arm), paths and bookkeeping.")
    lines += ["", "| setting | experiment | this run |", "|---|---|---|"]
    lines += [f"| `{d['key']}` | {cell(d['experiment'])} | {cell(d['run'])} |" for d in found]
    return [*lines, ""]


def cell(value) -> str:
    """A config value in a markdown table cell (compact JSON, cut when long)."""
    if value == MISSING:
        return "(not set)"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    if len(text) > CELL_CHARACTERS:
        text = text[:CELL_CHARACTERS - 1] + "…"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


# --------------------------------------------------------------------------- allowed checks


def run_allowed_checks(run: RunContents) -> tuple[dict | None, str]:
    """results.json's ``allowed_checks`` (computed from the folder for older runs) and
    whose they are; an eval folder: its model's training run's (``None`` if unknown)."""
    if run.evaluation:
        training_run = run.evaluation.get("training_run")
        training = read_results(training_run) if training_run else None
        checks = (training or {}).get("allowed_checks")
        return checks, "the evaluated model's training run"
    return run.results.get("allowed_checks") or allowed_checks(run.results, run.split), "this run"


def allowed_lines(run: RunContents) -> list[str]:
    checks, whose = run_allowed_checks(run)
    if checks is None:
        return [f"## {ALLOWED}", "", f"Not known: {whose} records no allowed_checks.", ""]
    leak, skip = checks["allow_leakage"], checks["skip_unreadable"]
    n_test = None if run.evaluation else test_images(run)
    of_test = f" of the {n_test} test images" if n_test is not None else " of its test images"
    lines = [f"## {ALLOWED}", ""]
    if run.evaluation:
        lines += [("What the checks allowed when the evaluated model was trained (its run's "
                  "test split):"), ""]
    if leak["set"]:
        parts = [(f"{leak['test_images_with_copy_in_training']}{of_test} have an exact or near "
                 "copy in training")]
        if leak["groups_across_splits"]:
            parts.append(f"{leak['files_across_splits']} files in {leak['groups_across_splits']} "
                         "group(s) of copies lie in more than one split")
        if leak.get("groups_with_different_labels"):
            parts.append(f"{leak['groups_with_different_labels']} group(s) of copies carry "
                         "different labels")
        if leak["patients_in_several_splits"]:
            parts.append(f"{leak['patients_in_several_splits']} patient(s) have images in "
                         "several splits")
        lines.append("- **Trained despite leakage (data.checks.allow_leakage=true):** "
                     + "; ".join(parts) + ". Test metrics on copies of training images are "
                     "optimistic.")
    shared = leak.get("test_images_of_patients_in_training")
    if shared:
        lines.append(f"- **{shared}{of_test} belong to patients with images in training** "
                     + ("(image-level split: data.split.group_by_patient=false)"
                        if not run.data.get("group_by_patient") else "")
                     + ": images of one patient are correlated, so these test metrics are "
                     "optimistic.")
    if skip["set"]:
        lines.append(f"- **Trained without unreadable files (data.checks.skip_unreadable=true):** "
                     f"{skip['skipped']} file(s) skipped (listed under Data flow).")
    if not any(line.startswith("- ") for line in lines):
        lines.append("Nothing: the run passed the pre-training checks without "
                     "data.checks.allow_leakage or data.checks.skip_unreadable.")
    return [*lines, ""]


def test_images(run: RunContents) -> int | None:
    if run.split is not None:
        return int((run.split["split"] == "test").sum())
    counts = (run.data.get("split_counts") or {}).get("test")
    return int(sum(counts.values())) if counts else None


# --------------------------------------------------------------------------- data flow


def data_flow_lines(run: RunContents) -> list[str]:
    data = run.data
    lines = [f"## {DATA_FLOW}", ""]
    name = data.get("name") or "the data set"
    lines.append(f"Data set: {name}" + (f" ({data['root']})" if data.get("root") else "")
                 + (f", variant {data['variant']}" if data.get("variant") else "") + ".")
    lines += ["", *split_table(run), ""]
    lines += ["Files left out and why:", "", *excluded_lines(run), ""]
    lines += ["Partition:", "", *partition_lines(run), ""]
    return lines


def split_table(run: RunContents) -> list[str]:
    """Images (patients) per split and class; patients are distinct patient ids, an image
    without an id counting as a patient of its own."""
    classes = run.classes
    split = run.split
    if split is None:
        counts = run.data.get("split_counts") or {}
        if not counts:
            return ["No split.csv and no split counts were recorded."]
        classes = classes or sorted({c for row in counts.values() for c in row})
        rows = ["| split | " + " | ".join(f"{c} images" for c in classes) + " | all images |",
                "|---|" + "---:|" * (len(classes) + 1)]
        for name, row in counts.items():
            rows.append(f"| {name} | " + " | ".join(str(row.get(c, 0)) for c in classes)
                        + f" | {sum(row.values())} |")
        return ["Images per split and class (split.csv is missing: no patient counts).", "", *rows]
    has_ids = "patient_id" in split and split["patient_id"].notna().any()
    classes = classes or sorted(split["label"].unique())
    order = [s for s in (*SPLITS, UNUSED) if s in set(split["split"])]
    order += [s for s in split["split"].unique() if s not in order]
    rows = ["| split | " + " | ".join(f"{c}: images (patients)" for c in classes)
            + " | all: images (patients) |", "|---|" + "---:|" * (len(classes) + 1)]
    for name in order:
        members = split[split["split"] == name]
        cells = [_images_patients(members[members["label"] == c]) for c in classes]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_images_patients(members)} |")
    note = ("Patients: distinct patient ids of split.csv (an image without an id counts as a "
            "patient of its own)." if has_ids else
            "The data set gives no patient ids: each image counts as a patient of its own.")
    return [note, "", *rows]


def _images_patients(frame: pd.DataFrame) -> str:
    ids = frame["patient_id"].tolist() if "patient_id" in frame else None
    patients = len(set(group_keys(ids, len(frame)).tolist())) if len(frame) else 0
    return f"{len(frame)} ({patients})"


def excluded_lines(run: RunContents) -> list[str]:
    data = run.data
    lines = []
    skipped = data.get("skipped_unreadable") or []
    if skipped:
        why = Counter(str(item.get("problem")) for item in skipped)
        lines.append(f"- {len(skipped)} unreadable file(s) skipped (data.checks.skip_unreadable=true): "
                     + ", ".join(f"{n} {problem}" for problem, n in why.items()) + "; e.g. "
                     + ", ".join(str(item.get("path")) for item in skipped[:3]) + ".")
    conflicts = data.get("conflicting_labels") or []
    if conflicts:
        files = sum(len(group) if isinstance(group, list) else len(group.get("files") or [])
                    for group in conflicts)
        lines.append(f"- {files} file(s) in {len(conflicts)} group(s) of copies filed under "
                     "different classes left out (data.duplicates.exclude_conflicting_labels=true).")
    if run.split is not None:
        unused = run.split[run.split["split"] == UNUSED]
        if len(unused):
            per_class = ", ".join(f"{n} {c}" for c, n in unused["label"].value_counts().sort_index().items())
            lines.append(f"- {len(unused)} image(s) `unused` ({per_class}): in no split (the split's "
                         "counts or ratios leave them out).")
    shortfall = data.get("split_shortfall") or []
    if shortfall:
        lines.append(f"- The split fell short of its targets in {len(shortfall)} place(s) "
                     "(results.json data.split_shortfall).")
    moved = data.get("moved_from_given_split") or []
    if moved:
        lines.append(f"- {len(moved)} file(s) moved from their given split to keep copies together.")
    evaluation = run.evaluation or {}
    for label, count in (evaluation.get("left_out") or {}).items():
        lines.append(f"- {count} image(s) of class {label} left out (the model does not know it).")
    if run.test is not None:
        n_test = test_images(run)
        if n_test is not None and len(run.test.truth) != n_test and not evaluation:
            lines.append(f"- Only {len(run.test.truth)} of the {n_test} test images were predicted "
                         "(trainer.limit_test_batches): every test number below is on those.")
    return lines or ["- None."]


def partition_lines(run: RunContents) -> list[str]:
    data = run.data
    split_cfg = ((run.config.get("data") or {}).get("split") or {})
    mode = data.get("split_mode") or split_cfg.get("mode")
    lines = [f"- Mode: {mode}" + (f" (seed {run.config.get('seed')})" if mode != "given" else "")
             + "."]
    if mode == "kfold" and data.get("folds"):
        fold = data.get("fold")
        lines.append(f"- Cross-validation: fold {int(fold) + 1} of {data['folds']} "
                     f"(data.split.fold={fold}) is the validation set, the other folds train; the "
                     "test set is held out and the same in every fold.")
    if data.get("group_by_patient"):
        lines.append("- Level: patient (all images of a patient lie in one split).")
    else:
        lines.append("- Level: image (data.split.group_by_patient=false: images of one patient "
                     "may lie in several splits).")
    if data.get("group_duplicates") is not None:
        if data.get("group_duplicates"):
            lines.append(f"- Copies (identical or confirmed near-identical images) kept in one split: "
                         f"{data.get('duplicate_groups', 0)} group(s), "
                         f"{data.get('files_in_duplicate_groups', 0)} files.")
        else:
            lines.append("- Copies are not kept together (data.split.group_duplicates=false).")
    if data.get("patients_in_several_splits"):
        lines.append(f"- {data['patients_in_several_splits']} patient(s) have images in several splits.")
    if run.evaluation:
        lines.append(f"- Evaluated split: {run.evaluation.get('split')} (eval.split); the model "
                     f"was trained on {run.evaluation.get('trained_on')}.")
    return lines


# --------------------------------------------------------------------------- model


def model_lines(run: RunContents) -> list[str]:
    config = run.config
    model = config.get("model") or {}
    data = config.get("data") or {}
    trainer = config.get("trainer") or {}
    optimizer = config.get("optimizer") or {}
    start = initialisation(model)
    augment = [str(t.get("_target_", "?")).rsplit(".", 1)[-1]
               for t in ((config.get("augment") or {}).get("transforms") or []) if isinstance(t, dict)]
    return [f"## {MODEL}", "",
            (f"- Architecture: timm `{model.get('name')}`, {start}; classes (output order): "
            f"{', '.join(run.classes)}."),
            f"- Input: {data.get('channels', '?')} channel(s), {data.get('image_size')} px"
            + (f", enhancement {(data.get('preprocess') or {}).get('enhance')}"
               if (data.get("preprocess") or {}).get("enhance", "none") != "none" else "") + ".",
            (f"- Training: loss {(config.get('loss') or {}).get('kind', 'auto')}, optimiser "
            f"{str(optimizer.get('_target_', '?')).rsplit('.', 1)[-1]} (learning rate "
            f"{optimizer.get('lr', '?')}, weight decay {optimizer.get('weight_decay', '?')}), batch "
            f"{trainer.get('batch_size', '?')}, at most {trainer.get('max_epochs', '?')} epochs, "
            f"augmentation: {', '.join(augment) or 'none'}; one model (no ensemble); seed "
            f"{config.get('seed')}."), ""]


def model_selection_lines(run: RunContents) -> list[str]:
    config = run.config
    results = run.results
    callbacks = config.get("callbacks") or {}
    checkpointing = callbacks.get("model_checkpoint") or {}
    lines = [f"## {MODEL_SELECTION}", ""]
    if run.evaluation:
        evaluation = run.evaluation
        lines.append(f"- Evaluated checkpoint: {evaluation.get('checkpoint')} (after epoch "
                     f"{evaluation.get('epoch')} of its training run).")
    monitor = (results.get("checkpoint") or {}).get("monitor") or checkpointing.get("monitor")
    mode = checkpointing.get("mode")
    which = config.get("test_checkpoint", "best")
    tested = results.get("tested_checkpoint") or {}
    if which == "best":
        lines.append(f"- Tested checkpoint: the best by {monitor} on the validation set"
                     + (f" ({mode})" if mode else "") + " (test_checkpoint=best).")
    else:
        lines.append(f"- Tested checkpoint: the last epoch's weights (test_checkpoint={which}); "
                     f"{monitor} on the validation set picked the best checkpoint, not tested.")
    if tested or run.evaluation:
        epoch = run.tested_epoch
        lines.append(f"- It holds the weights after epoch {epoch}"
                     + (f" ({tested.get('file')})" if tested.get("file") else
                        " (the weights in memory after the fit)" if tested else "") + ".")
    max_epochs = (config.get("trainer") or {}).get("max_epochs")
    epochs_run = results.get("epochs_run")
    if epochs_run is not None:
        lines.append(f"- Epochs run: {epochs_run} of at most {max_epochs}.")
    stopping = callbacks.get("early_stopping")
    if stopping:
        stopped = epochs_run is not None and max_epochs is not None and epochs_run < max_epochs
        lines.append(f"- Early stopping on {stopping.get('monitor')} (patience "
                     f"{stopping.get('patience')}): "
                     + (f"stopped after epoch {epochs_run}." if stopped else "did not stop the run."))
    else:
        lines.append("- Early stopping: not used.")
    lines.append("- The test set played no part in choosing the checkpoint, the threshold or "
                 "the temperature.")
    return [*lines, ""]


# --------------------------------------------------------------------------- epochs


def epoch_lines(run: RunContents) -> list[str]:
    """The train, val and test values at the tested checkpoint's epoch, each column saying
    its epoch and source; the final epoch's validation values beside them where different."""
    lines = [f"## {EPOCHS}", ""]
    results = run.results
    tested = run.tested_epoch
    history = run.history
    columns: list[tuple[str, dict]] = []
    train_epoch, train_values = _train_row(history, tested)
    if train_values:
        source = "tested epoch" if train_epoch == tested else "final epoch: the tested epoch is not in metrics.csv"
        columns.append((f"train (metrics.csv, epoch {train_epoch}, {source})", train_values))
    if results.get("val"):
        columns.append((f"val (tested checkpoint, epoch {tested})", results["val"]))
    final = results.get("epochs_run")
    if results.get("val_final_epoch") and final is not None and final != tested:
        columns.append((f"val (final epoch {final})", results["val_final_epoch"]))
    if results.get("test"):
        columns.append((f"test (tested checkpoint, epoch {tested})", results["test"]))
    if not columns:
        return [*lines, "No metrics were recorded.", ""]
    names = [m for m in EPOCH_METRICS if any(m in values for _, values in columns)]
    lines.append("Every number of this report comes from the column it is listed in; train/* "
                 "values are averages over the training epoch (with augmentation), val/* and "
                 "test/* the tested checkpoint's.")
    lines += ["", "| metric | " + " | ".join(title for title, _ in columns) + " |",
              "|---|" + "---:|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_number(values.get(name)) for _, values in columns) + " |")
    return [*lines, ""]


def _train_row(history: pd.DataFrame | None, epoch: int | None) -> tuple[int | None, dict]:
    if history is None or "epoch" not in history or not len(history):
        return None, {}
    epochs = history["epoch"].astype(int)
    chosen = epoch if epoch in set(epochs) else int(epochs.iloc[-1])
    row = history[epochs == chosen].iloc[-1]
    values = {c.partition("/")[2]: row[c] for c in history.columns if c.startswith("train/")}
    return chosen, values


def _number(value) -> str:
    if value is None:
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(number) else f"{number:.4f}"


def folder_name(run: RunContents) -> str:
    return Path(run.folder).name
