"""The five studies' experiment configs, their smoke sweeps, the sweep report, and the
no-work-lost rules (divergence, failures, re-running a sweep). About 3-4 minutes on a
2-core CPU: every experiment's whole sweep runs once in smoke mode, in one subprocess each,
with timm's tiny ``test_resnet`` standing in for the paper's network (same protocol, arms,
seeds, data flow and report; the real networks are covered by tests/test_models.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIG_DIR, REPO, TINY_RUN, multirun_mode_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from scipy import stats
from sklearn.metrics import roc_auc_score

from medrepro.core.run_folder import class_key
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.report.statistics import metrics_from_predictions, prediction_arrays
from medrepro.jobs.report.summary import write_report
from medrepro.lightning_modules.losses import build_loss

EXPERIMENTS = {  # name -> (arms, real data config)
    "cardiomegaly_inception": (1, "cardiomegaly"),
    "brain_mri_inception": (1, "brain_mri"),
    "pneumonia_xception_batch_size": (4, "pneumonia"),
    "pneumonia_inception_lr": (4, "pneumonia"),
    "covid3_vgg16_loss": (4, "covid3"),  # CXR and medrepro's ENH, two losses each
}
SEEDS = 3
FAST = ["model.name=test_resnet", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
        "~callbacks.run_plots", "~callbacks.failure_gallery", "hydra.callbacks.sweep_report.resamples=200"]


def compose_experiment(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_sets_the_protocol_the_sweep_and_the_reference(name):
    arms, data = EXPERIMENTS[name]
    cfg = compose_experiment(name, "data.root=/data")
    choices = cfg.hydra.runtime.choices
    assert choices.data == data and cfg.task_name == name
    assert cfg.model.pretrained is True and cfg.test_checkpoint == "last"
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params.pop("seed") == ["0", "1", "2"]
    assert int(np.prod([len(v) for v in params.values()] or [1])) == arms
    reference = OmegaConf.to_container(cfg.reference)
    # the paper itself (authors and year), not a path that exists only in the team's checkout
    assert re.search(r"\b20[12]\d\b", reference["citation"]) and "shared" not in reference["citation"]
    assert reference["main_metric"]
    # every paper arm names real metrics; the arms run now match the sweep's size
    known = {"train", "val", "test"}
    for arm in reference["arms"]:
        assert all(m.partition("/")[0] in known or m == "seconds_per_epoch" for m in arm["metrics"])
    assert len(reference["arms"]) == arms


def test_experiment_settings_follow_the_papers():
    xception = compose_experiment("pneumonia_xception_batch_size", "data.root=/d")
    assert (xception.model.name, xception.data.image_size, xception.trainer.max_epochs) == ("legacy_xception", 224, 200)
    assert xception.hydra.sweeper.params["trainer.batch_size"] == "4,8,16,32"
    lr = compose_experiment("pneumonia_inception_lr", "data.root=/d")
    assert (lr.optimizer._target_, lr.trainer.batch_size, lr.trainer.max_epochs) == ("torch.optim.Adam", 8, 60)
    cardio = compose_experiment("cardiomegaly_inception", "data.root=/d")
    assert (cardio.optimizer._target_, cardio.optimizer.lr, cardio.trainer.batch_size) == ("torch.optim.RMSprop", 1e-4, 32)
    assert cardio.data.positive_class == "normal" and cardio.loss.kind == "bce"
    brain = compose_experiment("brain_mri_inception", "data.root=/d")
    assert brain.hydra.runtime.choices.augment == "random_crop"
    covid = compose_experiment("covid3_vgg16_loss", "data.root=/d")
    assert covid.model.name == "vgg16" and covid.hydra.sweeper.params.loss == "ce_onehot,ce"
    assert covid.hydra.sweeper.params["data.preprocess.enhance"] == "none,enh"
    assert OmegaConf.to_container(covid.data, resolve=True)["channels"] == 1  # CXR
    enh = compose_experiment("covid3_vgg16_loss", "data.root=/d", "data.variant=enh")
    assert OmegaConf.to_container(enh.data, resolve=True)["channels"] == 3


def test_one_hot_and_integer_cross_entropy_are_each_computed_their_own_way():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    one_hot_loss = build_loss(3, kind="ce_onehot")
    integer_loss = build_loss(3, kind="ce")
    # independent oracle: numpy log-softmax picked at the true class
    z = logits.detach().numpy()
    log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(6), labels.numpy()].mean()
    assert one_hot_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    assert integer_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    # one-hot targets are really built: smoothing spreads s/C over the classes like Keras
    smoothed = build_loss(3, kind="ce_onehot", label_smoothing=0.3)(logits, labels).item()
    target = np.eye(3)[labels.numpy()] * 0.7 + 0.1
    assert smoothed == pytest.approx(-(target * log_softmax).sum(1).mean(), rel=1e-12)
    assert F.cross_entropy(logits, labels, label_smoothing=0.3).item() == pytest.approx(smoothed, rel=1e-12)
    assert build_loss(3, kind="ce_onehot").num_outputs(3) == 3


def test_bootstrap_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    for n_classes in (2, 3):
        truth = rng.integers(0, n_classes, 60)
        scores = rng.random((60, n_classes)).round(1) + np.eye(n_classes)[truth] * 0.5
        probabilities = scores / scores.sum(1, keepdims=True)
        predicted = probabilities.argmax(1)
        samples = rng.integers(0, 60, (5, 60))
        values = metrics_from_predictions(truth, predicted, probabilities, list("abc"[:n_classes]), samples)
        for b, sample in enumerate(samples):
            t, p = truth[sample], probabilities[sample]
            auroc = (roc_auc_score(t, p[:, 1]) if n_classes == 2
                     else roc_auc_score(t, p, multi_class="ovr", average="macro"))
            assert values["auroc"][b] == pytest.approx(auroc, abs=1e-12)
            assert values["acc"][b] == pytest.approx((predicted[sample] == t).mean())


def test_divergence_stops_the_job_early_and_is_recorded(tmp_path, demo_dir):
    run_dir = tmp_path / "run"
    cfg = multirun_mode_config(["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet",
                                "optimizer=sgd", "optimizer.lr=1e30", "trainer.max_epochs=5",
                                f"paths.cache_dir={tmp_path / 'cache'}"], run_dir, demo_dir)
    returned = run_job(cfg)  # no exception: the sweep would go on
    assert returned is not None and math.isnan(returned)  # a sweeper records a failed trial
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged"
    stopped = re.search(r"by epoch (\d+), batch (\d+)", results["error"])
    assert stopped and int(stopped.group(1)) < 5, results["error"]  # long before max_epochs
    assert "lower optimizer.lr" in results["error"]


def test_an_unexpected_exception_in_a_multirun_job_is_recorded_as_failed(tmp_path, demo_dir):
    run_dir = tmp_path / "run"
    cfg = multirun_mode_config(["data=demo_cardiomegaly", *TINY_RUN, "+model.no_such_argument=1"],
                               run_dir, demo_dir)
    assert math.isnan(run_job(cfg))  # the sweep goes on (a sweeper: a failed trial)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "no_such_argument" in results["error"]


def smoke_sweep(name: str, sweep_dir: Path, demo_dir: Path, *extra: str):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", f"experiment={name}", "debug=smoke", *FAST,
         f"paths.demo_dir={demo_dir}", f"paths.cache_dir={demo_dir / 'cache'}",
         f"hydra.sweep.dir={sweep_dir}", *extra],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, demo_dir):
    done = {}

    def get(name: str) -> Path:
        if name not in done:
            sweep_dir = tmp_path_factory.mktemp(name)
            finished = smoke_sweep(name, sweep_dir, demo_dir)
            assert finished.returncode == 0, finished.stderr[-3000:]
            done[name] = sweep_dir
        return done[name]

    return get


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_sweep_reports_every_arm_every_run_and_the_paper(name, sweeps):
    arms, _ = EXPERIMENTS[name]
    sweep_dir = sweeps(name)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == arms * SEEDS
    statuses = [json.loads((job / "results.json").read_text())["status"] for job in jobs]
    assert statuses == ["completed"] * len(jobs)

    table = pd.read_csv(sweep_dir / "summary.csv")
    reference = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").reference)
    labels = [a["label"] for a in reference["arms"]][:arms]
    assert list(dict.fromkeys(table["arm"])) == labels
    runs = table[table["row"] == "run"]
    assert runs.groupby("arm")["seed"].apply(lambda s: sorted(set(s))).to_dict() == {a: [0, 1, 2] for a in labels}
    for arm in reference["arms"][:arms]:
        for metric, value in arm["metrics"].items():
            summary = table[(table["arm"] == arm["label"]) & (table["metric"] == metric) & (table["row"] != "run")]
            paper = value if not isinstance(value, dict) else value.get("mean", value.get("best"))
            assert summary["paper"].iloc[0] == pytest.approx(paper), (arm["label"], metric)
            assert summary["difference"].iloc[0] == pytest.approx(summary["value"].iloc[0] - paper)
    test_rows = runs[runs["metric"] == "test/acc"]
    assert test_rows["ci95_low"].le(test_rows["value"] + 1e-9).all()
    assert test_rows["ci95_high"].ge(test_rows["value"] - 1e-9).all()

    text = (sweep_dir / "summary.md").read_text()
    assert reference["citation"] in text and ("Positive class" in text or "Classes:" in text)
    split_line = next(line for line in text.splitlines() if line.startswith("- **Split:**"))
    assert "patient-level" in split_line or "no patient id" in split_line
    assert "Welch" in text or "One arm only" in text
    for label in labels:
        assert f"| {label} | 0 |" in text and f"| {label} | 2 |" in text
    for figure in ("learning_curves.png", "roc_curves.png", "parameter_vs_metric.png"):
        assert (sweep_dir / figure).stat().st_size > 10_000
    assert len(list(sweep_dir.glob("confusion_*.png"))) == arms


@pytest.mark.parametrize("name", ["pneumonia_xception_batch_size", "covid3_vgg16_loss"])
def test_report_recomputes_each_runs_test_metrics_from_its_predictions(name, sweeps):
    """predictions.csv through the report's numpy metrics = torchmetrics during training."""
    for job in sorted(p for p in sweeps(name).iterdir() if p.is_dir() and p.name.isdigit()):
        results = json.loads((job / "results.json").read_text())
        classes = results["data"]["classes"]
        arrays = prediction_arrays(pd.read_csv(job / "predictions.csv"), classes)
        values = metrics_from_predictions(*arrays, [class_key(c) for c in classes])
        for metric in ("acc", "precision", "recall", "f1", "specificity", "auroc", "mse"):
            expected = results["test"][metric]
            # NaN (e.g. an AUROC of a one-class test split) must be NaN on both sides
            assert values[metric][0] == pytest.approx(expected, abs=1e-5, nan_ok=True), metric


def test_rerunning_a_sweep_skips_completed_jobs_and_reruns_the_rest(sweeps, demo_dir):
    sweep_dir = sweeps("cardiomegaly_inception")
    before = {job: json.loads((sweep_dir / job / "results.json").read_text()) for job in "012"}
    failed = {**before["1"], "status": "failed", "error": "killed"}
    (sweep_dir / "1" / "results.json").write_text(json.dumps(failed))
    again = smoke_sweep("cardiomegaly_inception", sweep_dir, demo_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    after = {job: json.loads((sweep_dir / job / "results.json").read_text()) for job in "012"}
    assert after["0"] == before["0"] and after["2"] == before["2"]  # untouched
    assert after["1"]["status"] == "completed" and after["1"]["started_at"] >= before["1"]["started_at"]
    assert after["1"]["finished_at"] != failed["finished_at"]
    logs = "".join(p.read_text() for p in (sweep_dir / "0").glob("*.log"))
    assert "Skipped" in logs and "Skipped" not in "".join(p.read_text() for p in (sweep_dir / "1").glob("*.log"))


def test_report_says_whether_arms_differ_with_the_papers_own_runs(tmp_path):
    """Fake run folders for study 4's arms; the report applies Welch's test to the paper's
    published runs too (oracle: scipy)."""
    reference = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / "pneumonia_inception_lr.yaml").reference)
    ours = {0.001: [0.95, 0.951, 0.949], 0.0001: [0.80, 0.81, 0.805]}  # far apart, tight
    job = 0
    for lr, accuracies in ours.items():
        for seed, accuracy in enumerate(accuracies):
            folder = tmp_path / str(job)
            (folder / ".hydra").mkdir(parents=True)
            (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
            (folder / "results.json").write_text(json.dumps({
                "status": "completed", "config": {"seed": seed, "task_name": "lr", "optimizer": {"lr": lr},
                                                  "reference": reference},
                "val": {"acc": accuracy}, "test": {"acc": accuracy},
                "data": {"classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
                         "split_mode": "given", "group_by_patient": True, "patient_leakage_possible": None},
            }))
            job += 1
    text = write_report(tmp_path, resamples=10).read_text()
    assert "lr 0.001 vs lr 0.0001: +14.50 points val/acc" in text
    assert stats.ttest_ind(ours[0.001], ours[0.0001], equal_var=False).pvalue < 0.001
    assert "(Welch p < 0.001): larger than run-to-run noise" in text
    paper = {a["label"]: a["metrics"]["val/acc"]["runs"] for a in reference["arms"]}
    paper_p = stats.ttest_ind(paper["lr 0.001"], paper["lr 0.0001"], equal_var=False).pvalue
    assert f"lr 0.001 vs lr 0.0001: +3.02 points val/acc (Welch p = {paper_p:.3f}): not distinguishable" in text
    assert "images of a patient are kept together" in text


def test_the_readmes_smoke_command_runs_without_a_sweep_folder_given(tmp_path, demo_dir):
    """``python train.py -m experiment=NAME debug=smoke`` as the README writes it (no
    ``hydra.sweep.dir``): the sweep's folder is outputs/smoke_<experiment>/multiruns/<time>
    below the folder the command runs in (here one seed of the sweep, to stay quick)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "experiment=brain_mri_inception",
         "debug=smoke", "seed=0", *FAST, f"paths.demo_dir={demo_dir}",
         f"paths.cache_dir={demo_dir / 'cache'}"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "smoke_brain_mri_inception" / "multiruns").iterdir()
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "completed"
    assert (sweep / "summary.md").is_file() and not (sweep / "1").exists()
