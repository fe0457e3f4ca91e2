"""report.md, the per-run report: its sections in the guidelines' order, and every number
recomputed here with independent code (scikit-learn's AUROC, pauc's DeLong interval, the
Wilson interval from its formula, a bootstrap over patients written with numpy).

Most numbers are checked on a hand-built run folder whose test images come from patients
with four images each and nearly the same score per patient, so that the bootstrap over
patients is much wider than a bootstrap over images would be. The real run of the session
(``trained_run``) and an eval.py folder check that the jobs write the report.

The bootstrap interval's ends are compared as in tests/test_report_numbers.py: an end at
quantile q of the report's B_report resamples must lie between our quantiles at
q ± 4.5 sqrt(q (1 - q) (1 / B_report + 1 / B_own)) of our own B_own resamples.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pauc
import pytest
from conftest import REPO, checkpoint_tested_by
from scipy import stats
from sklearn.metrics import roc_auc_score

from medrepro.jobs.report.run_report import write_run_report

SECTIONS = [  # the order the issue asks for
    "Deviations from the experiment", "What the pre-training checks allowed", "Data flow (STARD)",
    "Model", "Model selection", "Discrimination", "Operating point", "Calibration",
    "Failure analysis", "Which epoch each number comes from", "Statistical methods", "Reproduce",
    "Reporting checklist (CLAIM 2024, TRIPOD+AI)",
]
CLASSES = ["NORMAL", "PNEUMONIA"]
THRESHOLD = 0.3  # the planted operating point, "chosen on validation"
REPORT_RESAMPLES = 4000
OWN_RESAMPLES = 20000
MC_SDS = 4.5


def _headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.MULTILINE)


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _row(section: str, name: str) -> list[str]:
    line = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _interval(cell: str) -> tuple[float, float]:
    low, high = re.findall(r"[-\d.]+", cell)[:2]
    return float(low), float(high)


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# --------------------------------------------------------------------------- hand-built folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A run folder written by hand: 9 positive and 11 negative test patients with 4
    images each plus 3 negative images without a patient id; a patient's images score
    alike; threshold 0.3 chosen on validation; metrics.csv of 3 epochs, the tested
    checkpoint from epoch 2; the paper's test/acc and test/auroc in the config."""
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(7)
    rows = []
    for label, patients, centre in ((1, 9, 0.62), (0, 11, 0.38)):
        for p in range(patients):
            level = np.clip(rng.normal(centre, 0.2), 0.02, 0.98)
            for i in range(4):
                score = float(np.clip(level + rng.normal(0, 0.01), 0.001, 0.999))
                rows.append((f"/d/test/{CLASSES[label]}/p{label}{p}_{i}.png", label, f"P{label}-{p}", score))
    for i in range(3):
        rows.append((f"/d/test/NORMAL/loose{i}.png", 0, None, float(rng.uniform(0.05, 0.6))))
    frame = pd.DataFrame(rows, columns=["path", "label_index", "patient_id", "prob_PNEUMONIA"])
    frame["label"] = [CLASSES[i] for i in frame["label_index"]]
    frame["prob_NORMAL"] = 1 - frame["prob_PNEUMONIA"]
    frame["probability"] = frame[["prob_NORMAL", "prob_PNEUMONIA"]].max(axis=1)
    frame["predicted_index"] = (frame["prob_PNEUMONIA"] >= THRESHOLD).astype(int)
    frame["predicted"] = [CLASSES[i] for i in frame["predicted_index"]]
    frame[["path", "label", "label_index", "probability", "prob_NORMAL", "prob_PNEUMONIA",
           "predicted", "predicted_index"]].to_csv(folder / "predictions.csv", index=False)
    split = frame[["path", "label", "patient_id"]].assign(split="test")
    train = pd.DataFrame({"path": [f"/d/train/{c}/t{i}.png" for c in CLASSES for i in range(6)],
                          "label": [c for c in CLASSES for _ in range(6)],
                          "patient_id": [f"T{i // 2}{c}" for c in CLASSES for i in range(6)],
                          "split": "train"})
    val = pd.DataFrame({"path": ["/d/val/a.png", "/d/val/b.png"], "label": CLASSES,
                        "patient_id": ["V1", "V2"], "split": "val"})
    split = pd.concat([train, val, split], ignore_index=True)
    split.to_csv(folder / "split.csv", index=False)
    history = pd.DataFrame({"epoch": [1, 2, 3], "epoch_seconds": [1.0, 1.0, 1.0],
                            "train/loss": [0.9, 0.61, 0.42], "train/acc": [0.55, 0.71, 0.83],
                            "val/loss": [0.8, 0.6, 0.7], "val/acc": [0.5, 0.5, 0.5]})
    history.to_csv(folder / "metrics.csv", index=False)
    results = {
        "status": "completed", "finished_at": "2026-01-01T00:00:00+00:00",
        "experiment": "hand_built", "deviations": [
            {"key": "model.pretrained", "experiment": True, "run": False}],
        "config": {
            "seed": 3, "test_checkpoint": "best",
            "model": {"name": "test_resnet", "pretrained": False, "threshold": "youden"},
            "data": {"image_size": 64, "channels": 1, "checks": {}},
            "trainer": {"max_epochs": 3, "batch_size": 8},
            "callbacks": {"model_checkpoint": {"monitor": "val/loss", "mode": "min"}},
            "reference": {"citation": "A planted paper", "arms": [
                {"label": "paper", "when": {}, "metrics": {"test/acc": 0.97, "test/auroc": 0.5}}]},
        },
        "data": {"name": "planted", "classes": CLASSES, "split_mode": "ratios",
                 "group_by_patient": True, "group_duplicates": True, "duplicate_groups": 0,
                 "files_in_duplicate_groups": 0},
        "epochs_run": 3,
        "tested_checkpoint": {"which": "best", "file": "checkpoints/best-epoch002.ckpt", "epoch": 2},
        "val": {"loss": 0.6, "acc": 0.5}, "val_final_epoch": {"loss": 0.7, "acc": 0.5},
        "test": {"loss": 0.65, "acc": 0.6},
        "operating_point": {"rule": "youden", "threshold": THRESHOLD, "chosen_on": "validation",
                            "val": {"sensitivity": 0.8, "specificity": 0.7}},
    }
    (folder / "results.json").write_text(json.dumps(results))
    report = write_run_report(folder, resamples=REPORT_RESAMPLES).read_text()
    return folder, frame, split, report


def test_sections_in_order(planted, trained_run):
    _, _, _, report = planted
    headings = _headings(report)
    assert headings[:10] == SECTIONS[:10]
    assert headings[10:] == ["Paper comparison", *SECTIONS[10:]]
    real = (trained_run / "report.md").read_text()  # written by the training job itself
    assert _headings(real) == SECTIONS  # no experiment: no paper comparison


def test_data_flow_table_counts_images_and_patients(planted):
    _, _, split, report = planted
    section = _section(report, "Data flow (STARD)")
    for name in ("train", "val", "test"):
        members = split[split["split"] == name]
        cells = _row(section, name)
        for index, label in enumerate(CLASSES):
            rows = members[members["label"] == label]
            patients = rows["patient_id"].nunique() + int(rows["patient_id"].isna().sum())
            assert cells[1 + index] == f"{len(rows)} ({patients})", (name, label)
    test = split[split["split"] == "test"]
    assert _row(section, "test")[3] == "83 (23)"  # 80 images of 20 patients, 3 without an id
    assert test["patient_id"].nunique() + test["patient_id"].isna().sum() == 23


def test_auroc_value_and_delong_interval(planted):
    _, frame, _, report = planted
    section = _section(report, "Discrimination")
    truth, scores = frame["label_index"].to_numpy(), frame["prob_PNEUMONIA"].to_numpy()
    value, interval = _row(section, "AUROC (DeLong)")[1:3]
    assert float(value) == pytest.approx(roc_auc_score(truth, scores), abs=5e-4)
    low, high = pauc.ci_auc(pauc.ROC(truth, scores, direction="<"), conf_level=0.95)
    assert _interval(interval) == pytest.approx((low, high), abs=5e-4)


def _own_patient_bootstrap(frame: pd.DataFrame, resamples: int) -> np.ndarray:
    """AUROC over resamples of the patients of each class (an image without an id is a
    patient of its own), each drawn patient with all their images."""
    ids = frame["patient_id"].where(frame["patient_id"].notna(), "image:" + frame["path"])
    images = {pid: np.flatnonzero(ids.to_numpy() == pid) for pid in ids.unique()}
    label_of = {pid: int(frame["label_index"].to_numpy()[rows[0]]) for pid, rows in images.items()}
    by_class = [[pid for pid in images if label_of[pid] == c] for c in (0, 1)]
    scores = frame["prob_PNEUMONIA"].to_numpy()
    rng = np.random.default_rng(12345)
    values = np.empty(resamples)
    for b in range(resamples):
        drawn = [np.concatenate([images[p] for p in rng.choice(group, len(group))]) for group in by_class]
        negative, positive = scores[drawn[0]], scores[drawn[1]]
        greater = (positive[:, None] > negative[None, :]).mean()
        ties = (positive[:, None] == negative[None, :]).mean()
        values[b] = greater + 0.5 * ties
    return values


def test_auroc_bootstrap_resamples_patients(planted):
    _, frame, _, report = planted
    cells = _row(_section(report, "Discrimination"), "AUROC (bootstrap over patients)")
    assert cells[3] == "23 patients"
    low, high = _interval(cells[2])
    ours = _own_patient_bootstrap(frame, OWN_RESAMPLES)
    for end, q in ((low, 0.025), (high, 0.975)):
        slack = MC_SDS * math.sqrt(q * (1 - q) * (1 / REPORT_RESAMPLES + 1 / OWN_RESAMPLES))
        lowest, highest = np.quantile(ours, [max(q - slack, 0), min(q + slack, 1)])
        assert lowest - 5e-4 <= end <= highest + 5e-4, (end, q, lowest, highest)
    assert f"({REPORT_RESAMPLES} resamples)" in _section(report, "Statistical methods")


def test_operating_point_table_and_wilson_intervals(planted):
    _, frame, _, report = planted
    section = _section(report, "Operating point")
    assert "at least 0.3, chosen on the validation set by the rule youden" in section
    truth = frame["label_index"].to_numpy() == 1
    predicted = frame["prob_PNEUMONIA"].to_numpy() >= THRESHOLD
    tp, fn = int((truth & predicted).sum()), int((truth & ~predicted).sum())
    fp, tn = int((~truth & predicted).sum()), int((~truth & ~predicted).sum())
    assert _row(section, "PNEUMONIA (positive)")[1:4] == [f"{tp} (TP)", f"{fn} (FN)", str(tp + fn)]
    assert _row(section, "NORMAL (negative)")[1:4] == [f"{fp} (FP)", f"{tn} (TN)", str(fp + tn)]
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("PPV", tp, tp + fp), ("NPV", tn, tn + fn), ("accuracy", tp + tn, len(truth))):
        cell = _row(section, name)[1]
        low, high = _wilson(k, n)
        assert cell == (f"{100 * k / n:.1f} % (95 % CI {100 * low:.1f} to {100 * high:.1f} %; {k}/{n})"), name


def test_epochs_say_where_each_number_comes_from(planted):
    _, _, _, report = planted
    section = _section(report, "Which epoch each number comes from")
    header = _row(section, "metric")
    assert header[1] == "train (metrics.csv, epoch 2, tested epoch)"
    assert header[2] == "val (tested checkpoint, epoch 2)"
    assert header[3] == "val (final epoch 3)"
    assert _row(section, "loss")[1:] == ["0.6100", "0.6000", "0.7000", "0.6500"]  # train at epoch 2, not 3


def test_calibration_from_predictions_when_unrecorded(planted):
    _, frame, _, report = planted
    brier = float(np.mean((frame["prob_PNEUMONIA"] - frame["label_index"]) ** 2))
    assert _row(_section(report, "Calibration"), "test")[3] == f"{brier:.4f}"


def test_paper_comparison_in_words(planted):
    _, frame, _, report = planted
    section = _section(report, "Paper comparison")
    correct = int((frame["label_index"] == frame["predicted_index"]).sum())
    low, high = _wilson(correct, len(frame))
    where = "inside" if low <= 0.97 <= high else ("above" if 0.97 > high else "below")
    assert (f"test/acc: the paper's 97.0 % lies {where} our 95 % CI, {100 * low:.1f} to "
            f"{100 * high:.1f} %") in section
    truth, scores = frame["label_index"].to_numpy(), frame["prob_PNEUMONIA"].to_numpy()
    d_low, d_high = pauc.ci_auc(pauc.ROC(truth, scores, direction="<"), conf_level=0.95)
    assert d_low > 0.5  # the planted scores separate the classes
    assert f"test/auroc: the paper's 0.500 lies below our 95 % CI, {d_low:.3f} to {d_high:.3f}" in section
    assert "differs from the experiment in 1 setting(s)" in section
    top = _section(report, "Deviations from the experiment")
    assert "| `model.pretrained` | `true` | `false` |" in top


def test_multi_class_report(tmp_path):
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(3)
    truth = np.repeat([0, 1, 2], 8)
    logits = rng.normal(0, 1, (24, 3)) + 1.5 * np.eye(3)[truth]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    table = pd.DataFrame({"path": [f"/x/{i}.png" for i in range(24)],
                          "label": [classes[t] for t in truth], "label_index": truth,
                          "probability": probabilities.max(1),
                          **{f"prob_{c}": probabilities[:, i] for i, c in enumerate(classes)},
                          "predicted": [classes[i] for i in probabilities.argmax(1)],
                          "predicted_index": probabilities.argmax(1)})
    table.to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "results.json").write_text(json.dumps(
        {"status": "completed", "config": {"model": {"name": "m"}}, "operating_point": None,
         "data": {"name": "three", "classes": classes, "split_counts": {"test": {c: 8 for c in classes}}}}))
    report = write_run_report(tmp_path, resamples=200).read_text()
    section = _section(report, "Discrimination")
    assert "AUROC (DeLong)" not in section
    value = float(_row(section, "AUROC (bootstrap over patients)")[1])
    assert value == pytest.approx(roc_auc_score(truth, probabilities, multi_class="ovr"), abs=5e-4)
    operating = _section(report, "Operating point")
    assert "Multi-class task" in operating
    recall_b = int(((truth == 1) & (probabilities.argmax(1) == 1)).sum())
    assert f"{100 * recall_b / 8:.1f} % (95 % CI" in _row(operating, "b")[1]


# --------------------------------------------------------------------------- the jobs write it


def test_the_training_job_writes_report_and_allowed_checks(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    assert results["experiment"] is None and results["deviations"] is None
    assert results["allowed_checks"]["allow_leakage"]["set"] is False
    report = (trained_run / "report.md").read_text()
    assert "No experiment config (experiment=null)" in report
    predictions = pd.read_csv(trained_run / "predictions.csv")
    auroc = roc_auc_score(predictions["label"] == "PNEUMONIA", predictions["prob_PNEUMONIA"])
    assert float(_row(_section(report, "Discrimination"), "AUROC (DeLong)")[1]) == pytest.approx(auroc, abs=5e-4)
    checklist = _section(report, "Reporting checklist (CLAIM 2024, TRIPOD+AI)")
    assert len(re.findall(r"^\| CLAIM 2024 \| \d+ \|", checklist, flags=re.MULTILINE)) == 44
    assert "| CLAIM 2024 | 21 | Methods: data partitions | Level at which partitions are disjoint | " \
           "[Data flow (STARD)](#data-flow-stard) |" in checklist
    card = (trained_run / "model_card.md").read_text()  # the card shares the report's numbers
    assert f"| AUROC (DeLong) | {auroc:.3f} |" in card


@pytest.mark.slow
def test_eval_writes_a_report(trained_run, demo_dir, tmp_path):
    folder = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"ckpt_path={checkpoint_tested_by(trained_run)}",
         "data=demo_pneumonia", "data.source.image_size=96", "data.source.images_per_class=24",
         f"paths.demo_dir={demo_dir}", f"hydra.run.dir={folder}", "trainer.enable_progress_bar=false",
         "~callbacks.failure_gallery"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (folder / "report.md").read_text()
    assert report.startswith("# Run report: test_resnet on demo_pneumonia")
    assert "Evaluation of a trained model" in report
    assert "- Evaluated split: test (eval.split)" in report
    # the deviations and allowed checks are the training run's: no experiment, nothing allowed
    assert "No experiment config (experiment=null)" in _section(report, "Deviations from the experiment")
    allowed = _section(report, "What the pre-training checks allowed")
    assert "Nothing: the run passed" in allowed


def test_report_command_rewrites_a_run_folders_report(trained_run, tmp_path):
    """``python report.py RUN_DIR`` on one run folder writes its report.md again (from the
    folder's files alone: a copy elsewhere works), where the sweep report needs a multirun."""
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run", symlinks=True)
    (run / "report.md").unlink()
    done = subprocess.run([sys.executable, str(REPO / "report.py"), str(run), "--resamples", "200"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"Report: {run / 'report.md'}"
    report = (run / "report.md").read_text()
    predictions = pd.read_csv(run / "predictions.csv")
    auroc = roc_auc_score(predictions["label_index"], predictions["probability"])
    assert f"{auroc:.3f}" in report
