"""Deviations from the experiment config and what the pre-training checks allowed.

Expected deviations are read off the yaml files by hand (conf/experiment/
brain_mri_inception.yaml, conf/data/brain_mri.yaml, conf/debug/smoke.yaml,
conf/augment/random_crop.yaml), never from the code's output. The allowed-check counts come
from a hand-built results.json and split.csv with planted groups of copies and patients.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO
from conftest import compose_config as compose_job_config

from medrepro.jobs.report.allowed_checks import allowed_checks
from medrepro.jobs.report.protocol_deviations import (
    compose_config,
    deviations,
    experiment_config,
    resolved_settings,
    run_folder_deviations,
)
from medrepro.jobs.report.run_report import write_run_report

BRAIN = "brain_mri_inception"


def _deviations(overrides: list[str], tmp_path) -> dict[str, tuple]:
    experiment = next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment="))
    cfg = compose_job_config(overrides, tmp_path)
    found = deviations(cfg, experiment, overrides)
    return {d["key"]: (d["experiment"], d["run"]) for d in found}


def test_the_experiment_alone_has_no_deviation(tmp_path):
    assert _deviations([f"experiment={BRAIN}"], tmp_path) == {}
    # the swept seed (0,1,2) and any other seed are the protocol's
    assert _deviations([f"experiment={BRAIN}", "seed=2"], tmp_path) == {}
    assert _deviations([f"experiment={BRAIN}", "seed=7"], tmp_path) == {}
    # bookkeeping is not protocol
    assert _deviations([f"experiment={BRAIN}", "trainer.enable_progress_bar=false",
                        "data.loader.num_workers=0", "task_name=mine"], tmp_path) == {}


def test_an_arm_of_the_sweep_is_not_a_deviation_but_another_value_is(tmp_path):
    # pneumonia_inception_lr: optimizer.lr 0.001, swept over 0.1,0.01,0.001,0.0001
    base = ["experiment=pneumonia_inception_lr"]
    assert _deviations([*base, "optimizer.lr=0.01", "seed=1"], tmp_path) == {}
    assert _deviations([*base, "optimizer.lr=0.5"], tmp_path) == {"optimizer.lr": (0.001, 0.5)}


def test_image_size_and_weights_exactly(tmp_path):
    found = _deviations([f"experiment={BRAIN}", "model.pretrained=false", "data.image_size=128"],
                        tmp_path)
    # data.image_size feeds the random crop's size and the last Resize of the brain MRI
    # pre-processing (conf/augment/random_crop.yaml, conf/data/brain_mri.yaml)
    assert set(found) == {"model.pretrained", "data.image_size", "augment.transforms",
                          "data.preprocess.steps"}
    assert found["model.pretrained"] == (True, False)
    assert found["data.image_size"] == (299, 128)
    crop_before, crop_after = (steps[0]["size"] for steps in found["augment.transforms"])
    assert (crop_before, crop_after) == ([299, 299], [128, 128])
    resize_before, resize_after = (steps[-1] for steps in found["data.preprocess.steps"])
    assert (resize_before["height"], resize_after["height"]) == (299, 128)


def test_smoke_mode_lists_what_it_changes(tmp_path):
    found = _deviations([f"experiment={BRAIN}", "debug=smoke", "model.pretrained=false"], tmp_path)
    expected = {  # conf/debug/smoke.yaml against the experiment and conf/data/brain_mri.yaml
        "model.pretrained": (True, False),
        "data.image_size": (299, 80),
        "trainer.max_epochs": (50, 1),
        "trainer.limit_train_batches": (1.0, 2),
        "trainer.limit_val_batches": (1.0, 2),
        "trainer.precision": ("auto", "32-true"),
        "data.name": ("brain_mri", "demo_brain_mri"),
        "data.split.mode": ("paper", "ratios"),
        "data.split.ratios.train": (0.7, 0.5),
        "data.split.ratios.val": (0.15, 0.25),
        "data.split.ratios.test": (0.15, 0.25),
    }
    for key, values in expected.items():
        assert found.get(key) == values, key
    # the demo data's source is another class than the paper's: one deviation, with the
    # settings of each side that differ (conf/data/brain_mri.yaml's source without its
    # title and download hint; conf/data/demo_brain_mri.yaml's with smoke.yaml's sizes)
    assert found["data.source"] == (
        {"_target_": "medrepro.datamodules.sources.published.PublishedSource",
         "demo": "demo_brain_mri", "nestings": ["", "brain_tumor_dataset"],
         "fixed_layout": "class_folders"},
        {"_target_": "medrepro.datamodules.sources.demo.DemoSource", "dataset": "brain_mri",
         "image_size": 96, "images_per_class": 16, "seed": 0})
    assert not [k for k in found if k.startswith("data.source.")]
    not_protocol = ("paths.", "hydra.", "task_name", "data.root", "data.cache", "logger",
                    "data.loader.num_workers", "trainer.enable_progress_bar",
                    "trainer.accelerator", "trainer.devices", "seed", "augment.seed")
    assert not [k for k in found if k.startswith(not_protocol)]


@pytest.mark.parametrize("experiment, job", [
    (BRAIN, ["seed=2"]),
    ("pneumonia_inception_lr", ["optimizer.lr=0.0001", "seed=1", "model.pretrained=false"]),
    ("pneumonia_xception_batch_size", ["trainer.batch_size=32", "seed=0"]),
    ("covid3_vgg16_loss", ["loss=ce_onehot", "data.preprocess.enhance=enh", "seed=2"]),
])
def test_the_experiments_config_for_a_job_is_hydras_composition(experiment, job):
    """The experiment's config with a job's swept values (set on the experiment composed
    once per process, or composed with a group choice) equals Hydra composing
    ``experiment=NAME`` with those values; the job's other settings are left out."""
    made = resolved_settings(experiment_config(experiment, job))
    swept = [o for o in job if not o.startswith("model.")]
    composed = resolved_settings(compose_config([f"experiment={experiment}", *swept]))
    assert {k: v for k, v in made.items() if k != "hydra"} == \
        {k: v for k, v in composed.items() if k != "hydra"}
    seed = next(int(o.split("=")[1]) for o in job if o.startswith("seed="))
    assert made["seed"] == seed  # the run-to-run setting is the job's


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, demo_dir):
    """``python train.py experiment=brain_mri_inception debug=smoke`` (one job, a tiny
    model): deviations recorded by the running Hydra job."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"experiment={BRAIN}", "debug=smoke",
         "model.name=test_resnet", "data.image_size=32", "~callbacks.failure_gallery",
         f"paths.demo_dir={demo_dir}", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=run_dir.parent, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_a_running_job_records_its_deviations(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["experiment"] == BRAIN
    found = {d["key"]: (d["experiment"], d["run"]) for d in results["deviations"]}
    assert found["model.name"] == ("inception_v3", "test_resnet")
    assert found["model.pretrained"] == (True, False)
    assert found["data.image_size"] == (299, 32)
    assert found["trainer.max_epochs"] == (50, 1)
    assert "callbacks.failure_gallery" not in str(found)  # a run-folder writer, not protocol
    # the same list from the folder's .hydra/ files, composed outside the job
    again = run_folder_deviations(smoke_run, results["config"])
    assert again == {"experiment": BRAIN, "deviations": results["deviations"]}
    report = (smoke_run / "report.md").read_text()
    top = report.split("## What the pre-training checks allowed")[0]
    assert f"setting(s) of this run differ from experiment `{BRAIN}`" in top
    assert "| `model.pretrained` | `true` | `false` |" in top
    assert "| `data.image_size` | `299` | `32` |" in top
    assert "## Paper comparison" in report and "Paper arm: paper protocol." in report


# --------------------------------------------------------------------------- allowed checks


def _file(path, split, label="a"):
    return {"path": path, "label": label, "split": split}


def _leaky_folder(tmp_path):
    """results.json (allow_leakage and skip_unreadable on) and split.csv with planted copies
    and patients; the counts a reader must get are worked out by hand below."""
    groups = [
        [_file("t1", "train"), _file("x1", "test"), _file("x2", "test")],  # 2 test copies of training
        [_file("v1", "val"), _file("x3", "test")],  # val and test only: no training copy
        [_file("t2", "train"), _file("v2", "val")],  # no test file
    ]
    results = {
        "status": "completed",
        "config": {"data": {"checks": {"allow_leakage": True, "skip_unreadable": True}}},
        "data": {
            "name": "planted", "classes": ["a", "b"], "split_mode": "ratios", "group_by_patient": True,
            "allowed_leakage": {
                "identical_files_across_splits": [
                    {"files": g, "cross_split": True, "labels_differ": False} for g in groups],
                "identical_files_with_different_labels": [
                    {"files": [_file("x4", "test"), _file("x5", "test", "b")], "cross_split": False,
                     "labels_differ": True}],
                "patients_in_several_splits": [
                    {"patient_id": "p1", "images_per_split": {"train": 1, "test": 2}}],
            },
            "skipped_unreadable": [
                {"path": "bad1", "label": "a", "split": "train", "problem": "truncated", "detail": ""},
                {"path": "bad2", "label": "b", "split": "test", "problem": "not an image", "detail": ""},
            ],
        },
    }
    split = pd.DataFrame(
        [("t1", "a", "p1", "train"), ("t2", "a", None, "train"), ("v1", "a", "p3", "val"),
         ("v2", "a", "p4", "val"), ("x1", "a", "p1", "test"), ("x2", "a", "p1", "test"),
         ("x3", "a", None, "test"), ("x4", "a", "p5", "test"), ("x5", "b", "p6", "test"),
         ("x6", "b", "p7", "test"), ("u1", "b", "p1", "unused")],
        columns=["path", "label", "patient_id", "split"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "results.json").write_text(json.dumps(results))
    split.to_csv(tmp_path / "split.csv", index=False)
    return results, split


def test_allowed_checks_counts_planted_groups(tmp_path):
    results, split = _leaky_folder(tmp_path)
    checks = allowed_checks(results, split)
    assert checks == {
        "allow_leakage": {
            "set": True,
            "test_images_with_copy_in_training": 2,  # x1, x2 (x3's group has no training file)
            "files_across_splits": 7,  # 3 + 2 + 2
            "groups_across_splits": 3,
            "groups_with_different_labels": 1,
            "patients_in_several_splits": 1,
            # x1 and x2 are p1's, who has t1 in training; x3 and t2 have no id (each its own)
            "test_images_of_patients_in_training": 2,
        },
        "skip_unreadable": {"set": True, "skipped": 2},
    }
    nothing = allowed_checks({"config": {"data": {"checks": {}}}, "data": {}}, None)
    assert nothing["allow_leakage"]["set"] is False
    assert nothing["allow_leakage"]["test_images_with_copy_in_training"] == 0
    assert nothing["allow_leakage"]["test_images_of_patients_in_training"] is None


def test_the_report_says_what_was_allowed_at_the_top(tmp_path):
    _leaky_folder(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())  # as the training job records it
    results["allowed_checks"] = allowed_checks(results, pd.read_csv(tmp_path / "split.csv"))
    (tmp_path / "results.json").write_text(json.dumps(results))
    recorded = json.loads((tmp_path / "results.json").read_text())["allowed_checks"]
    assert recorded["allow_leakage"]["test_images_with_copy_in_training"] == 2
    report = write_run_report(tmp_path).read_text()
    top = report.split("## Data flow")[0]
    assert ("Trained despite leakage (data.checks.allow_leakage=true):** 2 of the 6 test images "
            "have an exact or near copy in training") in top
    assert "7 files in 3 group(s) of copies lie in more than one split" in top
    assert "2 of the 6 test images belong to patients with images in training" in top
    assert "skip_unreadable=true):** 2 file(s) skipped" in top
    flow = report.split("## Data flow (STARD)")[1].split("## Model")[0]
    assert "2 unreadable file(s) skipped" in flow and "1 truncated" in flow and "1 not an image" in flow
    assert "1 image(s) `unused`" in flow
