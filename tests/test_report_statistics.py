"""The sweep report's statistics (summary.md / summary.csv), each against an independent
oracle: the bootstrap over patients against a resampling of patients written here (its own
random numbers; a Monte Carlo window), Wilson against scipy's binomtest, DeLong's interval
and the paired DeLong test against the `pauc` package, Holm against a hand computation,
the interval of an arm's mean against the formula computed here, and the pooled
out-of-fold AUROC of a k-fold arm against scikit-learn on the concatenated files.

The sweeps are hand-made run folders (results.json, predictions.csv, val_predictions.csv,
split.csv, .hydra/overrides.yaml, metrics.csv), reported in-process by ``write_report``.

Sweep "arms": three learning rates x three seeds, every run tested on the same 40 images
of 26 patients (14 with two images, 10 with one, 2 images without a patient id), rows of
each predictions.csv in their own order. A patient's images are right or wrong together, so
a bootstrap of images would be narrower than the bootstrap over patients. Arm "lr 0.001"
scores 57.5 %, 80.0 % and 60.0 % (the issue's brain MRI arm; the old report gave it
58.3 % to 74.2 %).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pauc
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medrepro.jobs.report.summary import write_report

CLASSES = ["benign", "malignant"]  # malignant is label 1
ACCURACIES = {"lr 0.001": (0.575, 0.800, 0.600), "lr 0.01": (0.850, 0.875, 0.900),
              "lr 0.1": (0.700, 0.725, 0.650)}
LR = {"lr 0.001": 0.001, "lr 0.01": 0.01, "lr 0.1": 0.1}
PAPER_RUNS = {"lr 0.001": [0.70, 0.74, 0.72], "lr 0.01": [0.88, 0.90, 0.89],
              "lr 0.1": [0.71, 0.69, 0.75]}
RESAMPLES = 3000  # the report's
OWN = 6000  # ours
MC_SDS = 4.5


# --------------------------------------------------------------------------- the test set


def held_out_images() -> pd.DataFrame:
    """40 test images: patients p00-p13 with two images, p14-p23 with one, two without an
    id; 20 of each class, a patient's images of one class."""
    rows = []
    for p in range(24):
        label = CLASSES[p % 2]
        for k in range(2 if p < 14 else 1):
            rows.append((f"/data/test/{label}/p{p:02d}_{k}.png", label, f"p{p:02d}"))
    rows += [("/data/test/benign/anon_0.png", "benign", None),
             ("/data/test/malignant/anon_1.png", "malignant", None)]
    frame = pd.DataFrame(rows, columns=["path", "label", "patient_id"])
    assert len(frame) == 40 and (frame["label"] == "malignant").sum() == 20
    return frame


def group_of(frame: pd.DataFrame) -> np.ndarray:
    """One integer per image: its patient, or its own group without an id."""
    ids = [pid if isinstance(pid, str) else f"image:{path}"
           for pid, path in zip(frame["patient_id"], frame["path"])]
    return pd.factorize(pd.Series(ids))[0]


def run_predictions(images: pd.DataFrame, accuracy: float, seed: int) -> pd.DataFrame:
    """Exactly ``accuracy`` of the images right at 0.5, whole patients right or wrong
    together; rows shuffled."""
    rng = np.random.default_rng(seed)
    groups = group_of(images)
    target = round(accuracy * len(images))
    right = np.zeros(len(images), bool)
    order = rng.permutation(groups.max() + 1)
    multi = [g for g in order if (groups == g).sum() > 1]
    single = [g for g in order if (groups == g).sum() == 1]
    for g in [*multi, *single]:
        if right.sum() + (groups == g).sum() <= target:
            right[groups == g] = True
    assert right.sum() == target
    truth = (images["label"] == "malignant").to_numpy(int)
    predicted = np.where(right, truth, 1 - truth)
    margin = rng.uniform(0.02, 0.48, groups.max() + 1)[groups] + rng.uniform(0, 0.01, len(images))
    positive = np.round(np.where(predicted == 1, 0.5 + margin, 0.5 - margin), 6)
    frame = pd.DataFrame({
        "path": images["path"], "label": images["label"], "label_index": truth,
        "probability": positive, "prob_benign": np.round(1 - positive, 6),
        "prob_malignant": positive, "predicted": [CLASSES[p] for p in predicted],
        "predicted_index": predicted,
    })
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def write_run(folder: Path, overrides: list[str], config: dict, results: dict,
              predictions: pd.DataFrame | None, split: pd.DataFrame,
              val_predictions: pd.DataFrame | None = None, history: pd.DataFrame | None = None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "results.json").write_text(json.dumps({"config": config, **results}))
    split.to_csv(folder / "split.csv", index=False)
    if predictions is not None:
        predictions.to_csv(folder / "predictions.csv", index=False)
    if val_predictions is not None:
        val_predictions.to_csv(folder / "val_predictions.csv", index=False)
    if history is not None:
        history.to_csv(folder / "metrics.csv", index=False)


def sklearn_metrics(frame: pd.DataFrame) -> dict:
    truth = frame["label_index"].to_numpy()
    predicted = frame["predicted_index"].to_numpy()
    tp = int(((truth == 1) & (predicted == 1)).sum())
    fp = int(((truth == 0) & (predicted == 1)).sum())
    fn = int(((truth == 1) & (predicted == 0)).sum())
    tn = int(((truth == 0) & (predicted == 0)).sum())
    return {"acc": (tp + tn) / len(truth), "precision": tp / (tp + fp), "recall": tp / (tp + fn),
            "specificity": tn / (tn + fp), "f1": 2 * tp / (2 * tp + fp + fn),
            "auroc": roc_auc_score(truth, frame["prob_malignant"])}


DATA = {"classes": CLASSES, "positive_class": "malignant", "split_mode": "ratios",
        "split_counts": {"train": {"benign": 30, "malignant": 30}, "val": {"benign": 5, "malignant": 5},
                         "test": {"benign": 20, "malignant": 20}}}
REFERENCE = {"citation": "Hand-made sweep of tests/test_report_statistics.py", "main_metric": "test/acc",
             "arms": [{"label": label, "value": LR[label], "when": {"optimizer.lr": LR[label]},
                       "metrics": {"test/acc": {"runs": PAPER_RUNS[label]}, "train/acc": 0.9}}
                      for label in LR]}


@pytest.fixture(scope="module")
def arms_sweep(tmp_path_factory):
    """Sweep "arms" (see the module's docstring) and its report; job 0 records a tested
    epoch of 1 of 2, deviations from the experiment and leakage it was allowed to train with."""
    sweep = tmp_path_factory.mktemp("arms")
    images = held_out_images()
    split = images.assign(split="test")
    predictions = {}
    job = 0
    for label, accuracies in ACCURACIES.items():
        for seed, accuracy in enumerate(accuracies):
            frame = run_predictions(images, accuracy, seed=10 * job + 1)
            predictions[job] = frame
            config = {"seed": seed, "task_name": "hand_made", "optimizer": {"lr": LR[label]},
                      "test_checkpoint": "best", "reference": REFERENCE}
            results = {"status": "completed", "data": DATA, "test": sklearn_metrics(frame),
                       "val": {"acc": 0.8}, "epochs_run": 2, "experiment": "hand_made",
                       "deviations": [{"key": "model.pretrained", "experiment": True, "run": False}],
                       "allowed_checks": {"allow_leakage": {"set": job < 2, "test_images_with_copy_in_training": 11 + 4 * job,
                                                            "files_across_splits": 20, "groups_across_splits": 9,
                                                            "patients_in_several_splits": 0},
                                          "skip_unreadable": {"set": False, "skipped": 0}}}
            if job == 0:
                results["tested_checkpoint"] = {"which": "best", "file": "x.ckpt", "epoch": 1}
            history = pd.DataFrame({"epoch": [1, 2], "train/acc": [0.61, 0.93], "train/loss": [0.7, 0.2],
                                    "val/acc": [0.8, 0.7], "val/loss": [0.5, 0.6]})
            write_run(sweep / str(job), [f"optimizer.lr={LR[label]}", f"seed={seed}"], config, results,
                      frame, split, history=history)
            job += 1
    write_report(sweep, resamples=RESAMPLES)
    return {"sweep": sweep, "images": images, "predictions": predictions,
            "table": pd.read_csv(sweep / "summary.csv"), "text": (sweep / "summary.md").read_text()}


# --------------------------------------------------------------------------- the oracles


def patient_weights(images: pd.DataFrame, resamples: int, seed: int) -> np.ndarray:
    """[B, N]: how often each image is in each resample of patients, drawn per class
    (a patient's class: its images' label) with replacement, as many as the class has."""
    groups = group_of(images)
    classes = pd.Series(images["label"].to_numpy()).groupby(groups).first().to_numpy()
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, groups.max() + 1))
    for label in CLASSES:
        members = np.flatnonzero(classes == label)
        drawn = members[rng.integers(0, len(members), (resamples, len(members)))]
        for b in range(resamples):
            counts[b] += np.bincount(drawn[b], minlength=groups.max() + 1)
    return counts[:, groups]


def weighted_metrics(frame: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """acc, f1 and the AUROC (pairwise comparisons, ties one half) of each resample."""
    truth = frame["label_index"].to_numpy().astype(bool)
    predicted = frame["predicted_index"].to_numpy().astype(bool)
    score = frame["prob_malignant"].to_numpy()
    tp = weights @ (truth & predicted)
    fp = weights @ (~truth & predicted)
    fn = weights @ (truth & ~predicted)
    kernel = (score[truth][:, None] > score[~truth][None, :]) + 0.5 * (
        score[truth][:, None] == score[~truth][None, :])
    w_pos, w_neg = weights[:, truth], weights[:, ~truth]
    auroc = ((w_pos @ kernel) * w_neg).sum(1) / (w_pos.sum(1) * w_neg.sum(1))
    return {"acc": weights @ (truth == predicted) / weights.sum(1),
            "f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1), "auroc": auroc}


def window(draws: np.ndarray, q: float) -> tuple[float, float]:
    sd = math.sqrt(q * (1 - q) * (1 / RESAMPLES + 1 / len(draws)))
    return tuple(np.percentile(draws, [100 * max(q - MC_SDS * sd, 0), 100 * min(q + MC_SDS * sd, 1)]))


def holm_by_hand(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def jobs_of(label: str) -> list[int]:
    start = list(ACCURACIES).index(label) * 3
    return [start, start + 1, start + 2]


def csv_row(table: pd.DataFrame, arm: str, metric: str, row: str, job: int | None = None) -> pd.Series:
    rows = table[(table["arm"] == arm) & (table["metric"] == metric) & (table["row"] == row)]
    if job is not None:
        rows = rows[rows["job"] == job]
    assert len(rows) == 1, (arm, metric, row, job)
    return rows.iloc[0]


# --------------------------------------------------------------------------- the tests


def test_per_run_bootstrap_resamples_patients_not_images(arms_sweep):
    """bootstrap_low/high of acc, F1 and AUROC of every run against our own resampling of
    patients; an image bootstrap's interval is clearly narrower and would fail."""
    images, table = arms_sweep["images"], arms_sweep["table"]
    weights = patient_weights(images, OWN, seed=12345)
    image_weights = np.random.default_rng(7).multinomial(40, np.full(40, 1 / 40), OWN).astype(float)
    ratios = []
    for job, frame in arms_sweep["predictions"].items():
        aligned = frame.set_index("path").loc[images["path"]].reset_index()
        draws = weighted_metrics(aligned, weights)
        image_draws = weighted_metrics(aligned, image_weights)
        arm = next(label for label in ACCURACIES if job in jobs_of(label))
        for name in ("acc", "f1", "auroc"):
            row = csv_row(table, arm, f"test/{name}", "run", job)
            for reported, q in ((row["bootstrap_low"], 0.025), (row["bootstrap_high"], 0.975)):
                low, high = window(draws[name], q)
                assert low - 1e-9 <= reported <= high + 1e-9, (job, name, q, reported, low, high)
            width = np.subtract(*np.percentile(draws[name], [97.5, 2.5]))
            image_width = np.subtract(*np.percentile(image_draws[name], [97.5, 2.5]))
            ratios.append(image_width / width)
    # correlated images make the patient interval wider (the design effect of 14 two-image
    # patients of 26: about 1.5 in variance, 0.82 in width)
    assert np.mean(ratios) < 0.9, np.mean(ratios)


def test_wilson_and_delong_intervals_per_run(arms_sweep):
    """ci95 of accuracy, PPV, sensitivity, specificity (Wilson) against scipy's binomtest,
    of the AUROC (DeLong) against pauc; NPV of the operating-point table likewise."""
    table, text = arms_sweep["table"], arms_sweep["text"]
    for job, frame in arms_sweep["predictions"].items():
        arm = next(label for label in ACCURACIES if job in jobs_of(label))
        truth, predicted = frame["label_index"].to_numpy(), frame["predicted_index"].to_numpy()
        counts = {"acc": ((truth == predicted).sum(), len(truth)),
                  "precision": (((truth == 1) & (predicted == 1)).sum(), (predicted == 1).sum()),
                  "recall": (((truth == 1) & (predicted == 1)).sum(), (truth == 1).sum()),
                  "specificity": (((truth == 0) & (predicted == 0)).sum(), (truth == 0).sum())}
        for name, (k, n) in counts.items():
            row = csv_row(table, arm, f"test/{name}", "run", job)
            oracle = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson")
            assert row["ci_method"] == "Wilson"
            assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((oracle.low, oracle.high), abs=1e-9)
        roc = pauc.ROC(truth, frame["prob_malignant"].to_numpy(), direction="<")
        low, high = pauc.ci_auc(roc, conf_level=0.95)
        row = csv_row(table, arm, "test/auroc", "run", job)
        assert row["ci_method"] == "DeLong"
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((max(low, 0), min(high, 1)), abs=1e-9)
        # the operating point: NPV [Wilson] in %
        k, n = int(((truth == 0) & (predicted == 0)).sum()), int((predicted == 0).sum())
        oracle = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        line = next(line for line in text.splitlines() if re.match(rf"\| {re.escape(arm)} \| \d+ \| {job} \| 0\.5 ", line))
        npv = line.strip("|").split(" | ")[-1]
        value, low_text, high_text = map(float, re.match(r"\s*(\S+) \[(\S+), (\S+)\]", npv).groups())
        assert value == pytest.approx(100 * k / n, abs=0.005)
        assert (low_text, high_text) == pytest.approx((100 * oracle.low, 100 * oracle.high), abs=0.005)


def test_the_arm_interval_holds_both_the_test_set_and_the_run_to_run_variation(arms_sweep):
    """Arm lr 0.001 (57.5, 80.0, 60.0 % on 40 images): its interval contains every run's
    value (the old image bootstrap gave 58.3 to 74.2 %) and is mean ± t·SE with SE² = s²/3
    + c, c the covariance of two runs' accuracies over shared patient resamples (ours), t
    of Welch-Satterthwaite degrees of freedom."""
    table, images = arms_sweep["table"], arms_sweep["images"]
    weights = patient_weights(images, OWN, seed=999)
    for arm in ACCURACIES:
        for name in ("acc", "auroc"):
            jobs = jobs_of(arm)
            frames = [arms_sweep["predictions"][j].set_index("path").loc[images["path"]].reset_index()
                      for j in jobs]
            values = np.array([sklearn_metrics(f)[name] for f in frames])
            draws = np.stack([weighted_metrics(f, weights)[name] for f in frames])
            covariance = np.cov(draws)
            c = max(0.0, (covariance.sum() - np.trace(covariance)) / 6)
            between = values.var(ddof=1) / 3
            se = math.sqrt(between + c)
            df = se**4 * 2 / between**2
            half = stats.t.ppf(0.975, df) * se
            row = csv_row(table, arm, f"test/{name}", "mean")
            assert row["value"] == pytest.approx(values.mean(), abs=1e-9)
            assert row["ci_method"].startswith("mean over runs: run-to-run variation + shared test set")
            # c from 3000 and from 6000 resamples: a few % apart (Monte Carlo)
            assert row["ci95_low"] == pytest.approx(max(0, values.mean() - half), abs=0.03 * half)
            assert row["ci95_high"] == pytest.approx(min(1, values.mean() + half), abs=0.03 * half)
            assert row["ci95_low"] <= values.min() and row["ci95_high"] >= values.max()
    row = csv_row(table, "lr 0.001", "test/acc", "mean")
    assert row["ci95_low"] < 0.575 and row["ci95_high"] > 0.80
    text = arms_sweep["text"]
    assert "3 run(s) tested on the same 40 images (26 patients)" in text


def test_paired_delong_per_seed_and_seed_averaged_with_holm(arms_sweep):
    """Every pair of the three arms: per seed on the two runs' aligned probabilities and on
    the seed-averaged probabilities, against pauc's paired DeLong test; Holm within each
    family (a seed, or the averages) by hand."""
    text, images = arms_sweep["text"], arms_sweep["images"]
    body = text.split("## Paired DeLong tests on the same test images")[1].split("\n## ")[0]
    assert "adjusted by Holm's method" in body
    rows = {}
    for line in body.splitlines():
        if line.startswith("| lr "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0], cells[1].split(" (")[0]] = cells
    truth = (images["label"] == "malignant").to_numpy(int)

    def scores(job):
        return arms_sweep["predictions"][job].set_index("path").loc[images["path"], "prob_malignant"].to_numpy()

    labels = list(ACCURACIES)
    families = {f"seed {s}": {label: scores(jobs_of(label)[s]) for label in labels} for s in range(3)}
    families["seed-averaged"] = {label: np.mean([scores(j) for j in jobs_of(label)], axis=0) for label in labels}
    assert len(rows) == 3 * 4
    for family, by_arm in families.items():
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
        results = [pauc.compare(pauc.ROC(truth, by_arm[a], direction="<"),
                                pauc.ROC(truth, by_arm[b], direction="<"), method="delong", paired=True)
                   for a, b in pairs]
        adjusted = holm_by_hand([r.p_value for r in results])
        for (a, b), result, p_holm in zip(pairs, results, adjusted):
            cells = rows[f"{a} vs {b}", family]
            assert float(cells[2]) == pytest.approx(roc_auc_score(truth, by_arm[a]), abs=5e-5)
            assert float(cells[4]) == pytest.approx(result.estimate, abs=5e-5)
            assert float(cells[5]) == pytest.approx(result.stat, abs=0.005 + 1e-9)
            for shown, expected in ((cells[6], result.p_value), (cells[7], p_holm)):
                if shown.startswith("<"):
                    assert expected < 0.001
                else:
                    assert float(shown) == pytest.approx(expected, abs=0.0005 + 1e-9), (family, a, b)


def test_welch_between_arms_is_holm_adjusted_with_three_arms(arms_sweep):
    """Welch's p of each pair (scipy) and its Holm-adjusted value (by hand), for our runs
    and for the paper's; the verdict follows the adjusted p; the paper's separation in
    words."""
    text = arms_sweep["text"]
    body = text.split("## Do the arms differ by more than run-to-run noise?")[1].split("\n## ")[0]
    ours_part, _, paper_part = body.partition("The same test on the paper's own published runs")
    labels = list(ACCURACIES)
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    for part, source in ((ours_part, ACCURACIES), (paper_part, PAPER_RUNS)):
        raw = [stats.ttest_ind(source[a], source[b], equal_var=False).pvalue for a, b in pairs]
        adjusted = holm_by_hand(raw)
        for (a, b), p, p_holm in zip(pairs, raw, adjusted):
            line = next(line for line in part.splitlines() if line.startswith(f"- {a} vs {b}: "))
            match = re.search(r"\(Welch p (=|<) (\S+); Holm-adjusted p (=|<) (\S+)\): (.*)\.$", line)
            assert match, line
            for sign, shown, expected in ((match[1], match[2], p), (match[3], match[4], p_holm)):
                if sign == "<":
                    assert expected < 0.001
                else:
                    assert float(shown) == pytest.approx(expected, abs=0.0005 + 1e-12), line
            verdict = "larger than run-to-run" if p_holm < 0.05 else "not distinguishable"
            assert match[5].startswith(verdict), line
    raw = [stats.ttest_ind(PAPER_RUNS[a], PAPER_RUNS[b], equal_var=False).pvalue for a, b in pairs]
    adjusted = holm_by_hand(raw)
    words = next(line for line in paper_part.splitlines() if line.startswith("**What the paper's own data can tell"))
    for (a, b), p in zip(pairs, adjusted):
        mentioned = f"{a} from {b} (p = {p:.3f}" if p >= 0.001 else f"{a} from {b} (p < 0.001"
        assert mentioned in words
        side = words.split("cannot separate")[1] if "cannot separate" in words else ""
        assert (mentioned in side) == (p >= 0.05), words


def test_the_top_says_deviations_allowed_checks_and_epochs(arms_sweep):
    """Deviations and allowed leakage with their counts above everything else; job 0's
    train/acc read at its tested epoch 1 (0.61, not the final 0.93), and said so."""
    text, table = arms_sweep["text"], arms_sweep["table"]
    top = text.split("## Which epoch")[0]
    assert "`model.pretrained`: experiment `true`, run `false` (jobs 0, 1, 2, 3, 4, 5, 6, 7, 8 (9 of 9))" in top
    assert "`data.checks.allow_leakage=true`, jobs 0, 1 (2 of 9)): 11 to 15 test image(s)" in top
    assert text.index("Trained despite leakage") < text.index("## Runs")
    row = csv_row(table, "lr 0.001", "train/acc", "run", 0)
    assert row["value"] == pytest.approx(0.61) and row["epoch"] == 1
    assert csv_row(table, "lr 0.001", "test/acc", "run", 0)["epoch"] == 1
    assert csv_row(table, "lr 0.001", "train/acc", "run", 1)["epoch"] == 2  # not recorded: final
    assert "job 0: 1" in text and "read at the final epoch" in text


def test_the_paper_comparison_in_words_follows_the_interval(arms_sweep):
    table, text = arms_sweep["table"], arms_sweep["text"]
    for arm, runs in PAPER_RUNS.items():
        row = csv_row(table, arm, "test/acc", "mean")
        paper = float(np.mean(runs))
        where = ("inside" if row["ci95_low"] <= paper <= row["ci95_high"]
                 else "above" if paper > row["ci95_high"] else "below")
        line = next(line for line in text.splitlines() if line.startswith(f"- {arm} (mean): test/acc:"))
        assert f"the paper's {100 * paper:.1f} % lies {where} our 95 % CI" in line


# --------------------------------------------------------------------------- k-fold


@pytest.fixture(scope="module")
def kfold_sweep(tmp_path_factory):
    """One configuration, seed 0, three folds (``data.split.fold=0,1,2``): each fold
    validates on its own 20 images (val_predictions.csv, patients with up to 2 images) and
    is tested on the same 40 test images."""
    sweep = tmp_path_factory.mktemp("kfold")
    images = held_out_images()
    rng = np.random.default_rng(5)
    oof = []
    for fold in range(3):
        val = pd.DataFrame({"path": [f"/data/pool/f{fold}_{i}.png" for i in range(20)],
                            "label": [CLASSES[i % 2] for i in range(20)],
                            "patient_id": [f"q{fold}_{i // 2 * 2 + i % 2 if i < 10 else i}" for i in range(20)]})
        val_predictions = run_predictions(val, [0.7, 0.8, 0.75][fold], seed=100 + fold)
        test_frame = run_predictions(images, [0.6, 0.675, 0.7][fold], seed=200 + fold)
        oof.append(val_predictions.assign(patient_id=val.set_index("path").loc[val_predictions["path"], "patient_id"].to_numpy()))
        split = pd.concat([images.assign(split="test"), val.assign(split="val")])
        data = {**DATA, "split_mode": "kfold", "fold": fold, "folds": 3}
        results = {"status": "completed", "data": data, "test": sklearn_metrics(test_frame),
                   "val": {"acc": float((val_predictions["label"] == val_predictions["predicted"]).mean()),
                           "auroc": roc_auc_score(val_predictions["label_index"], val_predictions["prob_malignant"])},
                   "tested_checkpoint": {"which": "best", "epoch": 2}}
        config = {"seed": 0, "task_name": "kfold", "data": {"split": {"mode": "kfold", "fold": fold, "folds": 3}}}
        write_run(sweep / str(fold), ["data.split.mode=kfold", f"data.split.fold={fold}", "seed=0"],
                  config, results, test_frame, split, val_predictions)
    del rng
    write_report(sweep, resamples=RESAMPLES)
    return {"sweep": sweep, "oof": pd.concat(oof, ignore_index=True),
            "table": pd.read_csv(sweep / "summary.csv"), "text": (sweep / "summary.md").read_text()}


def test_kfold_folds_form_one_arm_with_pooled_out_of_fold_predictions(kfold_sweep):
    """The folds are one arm; the pooled out-of-fold AUROC is scikit-learn's on the three
    val_predictions.csv concatenated, with pauc's DeLong interval and a bootstrap over
    patients that matches ours; per-fold rows and the mean ± SD over folds."""
    table, text, oof = kfold_sweep["table"], kfold_sweep["text"], kfold_sweep["oof"]
    assert table["arm"].nunique() == 1
    (arm,) = table["arm"].unique()
    truth = oof["label_index"].to_numpy()
    scores = oof["prob_malignant"].to_numpy()
    row = csv_row(table, arm, "oof/auroc", "pooled out-of-fold")
    assert row["value"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    low, high = pauc.ci_auc(pauc.ROC(truth, scores, direction="<"))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((low, min(high, 1)), abs=1e-9)
    assert int(row["n_runs"]) == 3
    draws = weighted_metrics(oof, patient_weights(oof, OWN, seed=31))["auroc"]
    for reported, q in ((row["bootstrap_low"], 0.025), (row["bootstrap_high"], 0.975)):
        lo, hi = window(draws, q)
        assert lo - 1e-9 <= reported <= hi + 1e-9
    acc = csv_row(table, arm, "oof/acc", "pooled out-of-fold")
    k = int((oof["label_index"] == oof["predicted_index"]).sum())
    wilson = stats.binomtest(k, 60).proportion_ci(method="wilson")
    assert acc["value"] == pytest.approx(k / 60) and (acc["ci95_low"], acc["ci95_high"]) == pytest.approx((wilson.low, wilson.high))
    section = text.split("## Cross-validation (k-fold)")[1].split("\n## ")[0]
    fold_rows = [line for line in section.splitlines() if re.match(r"\| 0 \| \d \| \d \| completed", line)]
    assert len(fold_rows) == 3
    tests = [0.6, 0.675, 0.7]
    assert f"test/acc {100 * np.mean(tests):.2f} ± {100 * np.std(tests, ddof=1):.2f}" in section
    assert f"AUROC {roc_auc_score(truth, scores):.4f}, 95 % CI {low:.4f} to {min(high, 1):.4f} (DeLong)" in section


def test_failure_analysis_counts_each_runs_errors_and_links_its_gallery(arms_sweep):
    """Each run's misclassified test images (counted here from its predictions.csv) and
    links to its gallery pictures and report.md where the run folder has them."""
    sweep = arms_sweep["sweep"]
    (sweep / "0" / "gallery").mkdir(exist_ok=True)
    (sweep / "0" / "gallery" / "false_positives.png").write_bytes(b"png")
    (sweep / "0" / "report.md").write_text("# Run report\n")
    text = write_report(sweep, resamples=RESAMPLES).read_text()
    section = text.split("## Failure analysis")[1].split("\n## ")[0]
    for job, frame in arms_sweep["predictions"].items():
        wrong = int((frame["label"] != frame["predicted"]).sum())
        row = next(line for line in section.splitlines() if f"| {job} | {wrong} of {len(frame)} |" in line)
        if job == 0:
            assert "[false_positives](0/gallery/false_positives.png)" in row
            assert "[report.md](0/report.md)" in row
        else:
            assert row.endswith("| – | – |")
    assert "| CLAIM 2024 | 38 | Results | Failure analysis of misclassified cases | [Failure analysis](#failure-analysis) |" in text
