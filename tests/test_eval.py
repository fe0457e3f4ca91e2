"""eval.py: a trained checkpoint tested on its own test split (the very numbers of its
training run), on another data set (external validation), with the training's
pre-processing whatever the data option says, and with one sentence for every mistake."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, checkpoint_tested_by
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from medrepro.core.errors import UserError
from medrepro.datamodules.sources.class_mapping import ClassMappedSource
from medrepro.datamodules.sources.folder import FolderSource
from medrepro.jobs.trained_model import load_trained_model


def _eval(tmp_path, name, *overrides, check=True):
    folder = tmp_path / name
    done = subprocess.run([sys.executable, str(REPO / "eval.py"), *overrides,
                           f"hydra.run.dir={folder}", "trainer.enable_progress_bar=false"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return folder, done


@pytest.fixture(scope="module")
def own_split_eval(trained_run, demo_dir, tmp_path_factory):
    """eval.py on the checkpoint the run tested and its own data set, named with a
    data.image_size that differs from the training's (it must be ignored)."""
    checkpoint = checkpoint_tested_by(trained_run)
    folder, _ = _eval(tmp_path_factory.mktemp("eval"), "own", f"ckpt_path={checkpoint}",
                      "data=demo_pneumonia", "data.source.image_size=96",
                      "data.source.images_per_class=24", f"paths.demo_dir={demo_dir}",
                      "data.image_size=200")
    return folder


def test_eval_on_the_training_split_repeats_the_training_runs_test(trained_run, own_split_eval):
    trained = pd.read_csv(trained_run / "predictions.csv")
    evaluated = pd.read_csv(own_split_eval / "predictions.csv")
    assert evaluated["path"].tolist() == trained["path"].tolist()
    assert evaluated["label"].tolist() == trained["label"].tolist()
    for column in ("prob_NORMAL", "prob_PNEUMONIA"):
        np.testing.assert_allclose(evaluated[column], trained[column], atol=1e-6)
    train_results = json.loads((trained_run / "results.json").read_text())
    results = json.loads((own_split_eval / "results.json").read_text())
    assert results["status"] == "completed"
    for key in ("auroc", "acc", "loss"):
        assert results["test"][key] == pytest.approx(train_results["test"][key], abs=1e-6)
    # the training's pre-processing, not the override: the model was trained at 48 px
    assert results["data"]["image_size"] == 48
    for name in ("confusion_matrix.png", "roc_curve.png"):
        assert (own_split_eval / "plots" / name).is_file()
    gallery = pd.read_csv(own_split_eval / "gallery" / "gallery.csv")
    assert set(gallery["path"]) <= set(evaluated["path"]) and len(gallery)


def test_eval_records_where_the_model_came_from(trained_run, own_split_eval):
    results = json.loads((own_split_eval / "results.json").read_text())
    evaluation = results["evaluation"]
    assert evaluation["checkpoint"] == str(checkpoint_tested_by(trained_run).resolve())
    assert evaluation["training_run"] == str(trained_run.resolve())
    assert evaluation["training_config"]["model"]["name"] == "test_resnet"
    assert evaluation["classes"] == ["NORMAL", "PNEUMONIA"]
    assert evaluation["split"] == "test" and evaluation["left_out"] == {}


def test_the_model_card_states_the_metrics_with_wilson_intervals(own_split_eval):
    card = (own_split_eval / "model_card.md").read_text()
    predictions = pd.read_csv(own_split_eval / "predictions.csv")
    correct = int((predictions["label"] == predictions["predicted"]).sum())
    low, high = binomtest(correct, len(predictions)).proportion_ci(method="wilson")
    row = f"| accuracy | {correct / len(predictions):.3f} | {low:.3f} to {high:.3f} | {correct}/{len(predictions)} |"
    assert row in card
    for heading in ("## Intended use", "## Data", "## Metrics", "## Limitations", "## Reproduce"):
        assert heading in card
    assert "Not for clinical use" in card
    assert "python eval.py ckpt_path=" in card
    assert "trained from scratch" in card and "48 px" in card


def test_a_pneumonia_model_evaluated_on_the_matching_classes_of_covid3(trained_run, demo_dir, tmp_path):
    """External validation: the covid3 phantoms' normal and pneumonia images under the
    model's NORMAL and PNEUMONIA; the COVID-19 images are left out and counted."""
    per_class = 12
    folder, _done = _eval(
        tmp_path, "external", f"ckpt_path={checkpoint_tested_by(trained_run)}", "data=demo_covid3",
        f"paths.demo_dir={demo_dir}", "data.source.image_size=64",
        f"data.source.images_per_class={per_class}", "eval.split=all",
        "eval.class_map={normal: NORMAL, pneumonia: PNEUMONIA}")
    results = json.loads((folder / "results.json").read_text())
    assert results["evaluation"]["left_out"] == {"COVID-19": per_class}
    assert results["data"]["split_counts"] == {"test": {"NORMAL": per_class, "PNEUMONIA": per_class}}
    predictions = pd.read_csv(folder / "predictions.csv")
    assert len(predictions) == 2 * per_class
    assert set(predictions["label"]) == {"NORMAL", "PNEUMONIA"}
    assert all("/normal/" in p for p in predictions.loc[predictions["label"] == "NORMAL", "path"])
    expected = roc_auc_score(predictions["label"] == "PNEUMONIA", predictions["prob_PNEUMONIA"])
    assert results["test"]["auroc"] == pytest.approx(expected, abs=1e-5)
    assert "COVID-19: 12" in (folder / "model_card.md").read_text()


def test_the_model_is_rebuilt_from_the_checkpoint_alone(trained_run, tmp_path):
    """A checkpoint copied out of its run folder still says how its images are read."""
    copy = tmp_path / "shared.ckpt"
    copy.write_bytes(checkpoint_tested_by(trained_run).read_bytes())
    trained = load_trained_model(copy)
    assert trained.run_dir is None
    assert trained.class_names == ["NORMAL", "PNEUMONIA"]
    assert trained.image_size == 48 and trained.channels == 1
    reference = torch.load(copy, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in trained.classifier.state_dict().items():
        torch.testing.assert_close(value, reference[key])


def test_class_mapping_keeps_known_classes_and_counts_the_rest(tmp_path, class_folders):
    source = ClassMappedSource(FolderSource(class_folders), ["NORMAL", "dog"], {"cat": "NORMAL"})
    records = source.records()
    assert sorted({r.label for r in records}) == ["NORMAL", "dog"] and len(records) == 20
    only_dogs = ClassMappedSource(FolderSource(class_folders), ["NORMAL", "dog"])
    assert len(only_dogs.records()) == 10 and only_dogs.left_out == {"cat": 10}
    with pytest.raises(UserError, match="none of the model's classes .*eval.class_map="):
        ClassMappedSource(FolderSource(class_folders), ["NORMAL", "PNEUMONIA"]).records()
    with pytest.raises(UserError, match="maps to COVID, which the model does not have"):
        ClassMappedSource(FolderSource(class_folders), ["NORMAL", "dog"], {"cat": "COVID"})


def test_unsafe_or_missing_checkpoints_stop_with_one_sentence(tmp_path):
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode()}, pickled)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path, words in ((pickled, "loads safely as plain data"), (text, "loads safely as plain data"),
                        (tmp_path / "absent.ckpt", "no such file"), (None, "ckpt_path is required")):
        with pytest.raises(UserError, match=words):
            load_trained_model(path)
    assert not marker.exists()


def test_eval_stops_with_one_sentence_for_a_data_set_without_the_models_classes(
        trained_run, class_folders, tmp_path):
    _, done = _eval(tmp_path, "wrong", f"ckpt_path={checkpoint_tested_by(trained_run)}", "data=folder",
                    f"data.root={class_folders}", "eval.split=all", check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: The data set has none of the model's classes (NORMAL, PNEUMONIA)")
    assert "eval.class_map=" in last
