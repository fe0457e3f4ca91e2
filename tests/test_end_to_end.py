"""Whole runs on generated demo data with a tiny budget: the run folder a user gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY_RUN, TINY_TRAINING, compose_config
from native_bf16 import cpu_runs_bf16_natively
from PIL import Image
from sklearn.metrics import roc_auc_score

from medrepro.jobs.job_runner import run_job
from medrepro.jobs.training import train
from medrepro.lightning_modules.backbone import create_backbone


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    demo = tmp_path_factory.mktemp("demo")
    cfg = compose_config(["data=demo_pneumonia", *TINY_RUN], run_dir, demo_dir=demo)
    metrics = train(cfg)
    return run_dir, metrics, cfg


def test_run_folder_has_every_file(finished_run):
    run_dir, _, _ = finished_run
    for name in ("results.json", "metrics.csv", "predictions.csv", "split.csv",
                 "checkpoints/last.ckpt", "plots/learning_curves.png",
                 "plots/confusion_matrix.png", "plots/roc_curve.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))
    for png in (run_dir / "plots").glob("*.png"):
        with Image.open(png) as image:
            assert image.size[0] > 300 and image.size[1] > 300


def test_results_json_is_complete_and_consistent_with_predictions(finished_run):
    run_dir, metrics, _cfg = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["config"]["model"]["name"] == "inception_v3"
    assert results["config"]["trainer"]["batch_size"] == 4
    assert results["versions"]["torch"] == torch.__version__.split("+")[0]
    # trainer.precision=auto: bfloat16 where oneDNN computes in it natively
    expected_precision = "bf16-mixed" if cpu_runs_bf16_natively() else "32-true"
    assert results["device"]["accelerator"] == "cpu" and results["precision"] == expected_precision
    assert results["data"]["classes"] == ["NORMAL", "PNEUMONIA"]
    assert results["data"]["positive_class"] == "PNEUMONIA"
    assert results["seconds_per_epoch"] > 0 and results["epochs_run"] == 1
    assert set(results["val"]) >= {"acc", "auroc", "loss", "mse", "specificity", "f1_normal"}
    predictions = pd.read_csv(run_dir / "predictions.csv")
    split = pd.read_csv(run_dir / "split.csv")
    assert sorted(predictions["path"]) == sorted(split.loc[split["split"] == "test", "path"])
    truth = (predictions["label"] == "PNEUMONIA").astype(int)
    test = results["test"]
    assert test["acc"] == pytest.approx((predictions["label"] == predictions["predicted"]).mean(), abs=1e-6)
    assert test["auroc"] == pytest.approx(roc_auc_score(truth, predictions["probability"]), abs=1e-5)
    assert test["mse"] == pytest.approx(((predictions["probability"] - truth) ** 2).mean(), abs=1e-5)
    assert ((predictions["probability"] >= 0.5) == (predictions["predicted"] == "PNEUMONIA")).all()
    matrix = np.array(results["confusion_matrix"]["test"]["rows_true_columns_predicted"])
    assert matrix.sum() == len(predictions) and np.trace(matrix) == (truth == (predictions["probability"] >= 0.5)).sum()
    assert metrics["test/acc"] == pytest.approx(test["acc"])


def test_metrics_csv_has_train_and_val_curves(finished_run):
    run_dir, _, _ = finished_run
    history = pd.read_csv(run_dir / "metrics.csv")
    assert list(history.columns[:6]) == ["epoch", "epoch_seconds", "train/loss", "train/acc", "val/loss", "val/acc"]
    assert history["epoch"].tolist() == [1]
    assert history["train/loss"].between(0, 50).all() and history["val/acc"].between(0, 1).all()


def test_split_is_given_and_patient_level(finished_run):
    run_dir, _, _ = finished_run
    split = pd.read_csv(run_dir / "split.csv")
    assert list(split.columns) == ["path", "label", "patient_id", "split"]
    assert (split["path"].str.split(os.sep).str[-3] == split["split"]).all()  # Kaggle folders kept
    assert split.groupby("patient_id")["split"].nunique().max() == 1


def test_a_medrepro_checkpoint_loads_as_model_weights(finished_run):
    run_dir, _, _ = finished_run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    model = create_backbone("inception_v3", 1, 1, weights=str(checkpoint))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    torch.testing.assert_close(model.fc.weight, state["backbone.fc.weight"])


def test_user_errors_stop_with_one_sentence(tmp_path, class_folders, capsys):
    (class_folders / "dog" / "broken.png").write_bytes(b"\x89PNG truncated")
    cases = {
        "model.name=inceptionv3": "Unknown model name 'inceptionv3'",
        "data.split.mode=counts": "data.split.mode=counts needs data.split.counts",
        "+data.split.counts.train.cat=50": "ask for 50 'cat' images",
        "data.split.ratios.train=0.9": "must add up to 1",
        "data.positive_class=bird": "not one of the classes",
        "data.channels=2": "data.channels must be 1 or 3",
        "trainer.limit_train_batches=1.0": "Cannot read image",  # every image is read
    }
    for override, message in cases.items():
        extra = ["data.split.mode=counts"] if override.startswith("+data.split.counts") else []
        if "limit_train" in override:
            extra = ["trainer.limit_val_batches=1.0"]
        cfg = compose_config(
            ["data=folder", f"data.root={class_folders}", *TINY_TRAINING, *extra, override], tmp_path / "run"
        )
        with pytest.raises(SystemExit) as stop:
            run_job(cfg)
        assert stop.value.code == 1
        error = capsys.readouterr().err
        assert message in error, (override, error)
        assert "Traceback" not in error


def cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=900, check=False,
    )


def test_cli_reports_missing_data_and_offline_pretrained_without_traceback(tmp_path, class_folders):
    missing = cli("data=folder", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'a'}")
    assert missing.returncode == 1
    assert "Data folder not found at" in missing.stderr and "Traceback" not in missing.stderr
    unset = cli("data=folder", f"hydra.run.dir={tmp_path / 'b'}")
    assert unset.returncode == 1 and "Set data.root" in unset.stderr
    offline = cli(
        "data=folder", f"data.root={class_folders}", "model.pretrained=true", f"hydra.run.dir={tmp_path / 'c'}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")},
    )
    assert offline.returncode == 1
    assert "model.pretrained=false" in offline.stderr and "model.weights=FILE" in offline.stderr
    assert "Traceback" not in offline.stderr
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert results["status"] == "failed" and "pretrained" in results["error"]


def test_multirun_gives_each_job_a_complete_run_folder(tmp_path, demo_dir):
    sweep = tmp_path / "sweep"
    done = cli(
        "-m", "data=demo_pneumonia", "trainer.batch_size=4,8", "seed=0,1",
        *[o for o in TINY_RUN if not o.startswith("trainer.batch_size")],
        "trainer.limit_test_batches=2", f"paths.demo_dir={demo_dir}", f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "completed"
        seen.add((results["config"]["trainer"]["batch_size"], results["config"]["seed"]))
        for name in ("metrics.csv", "predictions.csv", "split.csv", "checkpoints/last.ckpt"):
            assert (job / name).is_file()
    assert seen == {(4, 0), (4, 1), (8, 0), (8, 1)}
