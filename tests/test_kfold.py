"""k-fold cross-validation (``data.split.mode=kfold``, ``cv=kfold``): issue 15.

On generated records (patients with one to three images, images without a patient id, a
patient with images of two classes, planted copies linking images of different patients,
transitively), for every combination of ``group_by_patient`` and ``group_duplicates``:

* the test split is the one ``data.split.mode=ratios`` makes with the same ratios and seed,
  the same in every fold;
* the folds equal scikit-learn's ``StratifiedGroupKFold(n_splits, shuffle=True,
  random_state=seed)`` run here on the images outside the test split, with groups computed
  here (union-find over the patient ids and the planted links, written out below);
* every image outside the test split is validated on in exactly one fold and trains in
  the others; no group (patient or copies) is in two splits of a fold; each fold's
  validation count of every class is within one image of its share.

The mistakes (fold out of range, too few folds, more folds than a class has groups, a fold
outside k-fold mode) end with one sentence. The config group ``cv=kfold`` expands, through
Hydra's own sweeper, into one job per fold, multiplied with an experiment's arms and seeds
(also under ``debug=smoke``, whose split it must not undo). One real ``python train.py -m
cv=kfold data.split.folds=2`` on the demo pneumonia phantoms (patients with several images)
runs two jobs whose test sets are identical and whose validation sets partition the rest
(marked slow: about 30 s on an idle 2-core machine). The rest: about 12 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIG_DIR, REPO, TINY_TRAINING
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from sklearn.model_selection import StratifiedGroupKFold

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import ImageRecord
from medrepro.datamodules.splitting.split import make_split

CLASSES = ["a", "b", "c"]
RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}
FOLDS = 4


# --- generated records and their groups, worked out here -----------------------------------------

def generated_records() -> list[ImageRecord]:
    """90 patients with 1-3 images each (classes a:b:c = 3:1:1 by patient), every 7th
    image-holder without a patient id, and patient 5 with an extra image of class c."""
    records = []
    for p in range(90):
        label = "a" if p % 5 < 3 else "b" if p % 5 == 3 else "c"
        patient = None if p % 7 == 6 else f"pat{p:02d}"
        for k in range(1 + p % 3):
            records.append(ImageRecord(f"/d/{label}/p{p:02d}_{k}.png", label, patient))
    records.append(ImageRecord("/d/c/p05_extra.png", "c", "pat05"))
    return records


# copies across patients: a chain of three patients (transitive), a copy of an image
# without patient id, and a pair within class c
LINKS = [("/d/a/p01_0.png", "/d/a/p40_0.png"), ("/d/a/p40_0.png", "/d/a/p77_1.png"),
         ("/d/a/p06_0.png", "/d/a/p10_0.png"), ("/d/c/p04_0.png", "/d/c/p14_1.png"),
         ("/d/b/p03_0.png", "/d/b/p08_2.png")]


def oracle_groups(records, by_patient: bool, links) -> dict[str, str]:
    """Each path's group, named by the group's smallest path: a plain union-find over the
    links and (with ``by_patient``) the images of each patient id."""
    parent = {r.path: r.path for r in records}

    def root(path):
        while parent[path] != path:
            path = parent[path]
        return path

    def join(x, y):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)

    edges = list(links)
    if by_patient:
        first = {}
        for r in records:
            if r.patient_id is not None:
                edges.append((first.setdefault(r.patient_id, r.path), r.path))
    for x, y in edges:
        join(x, y)
    return {r.path: root(r.path) for r in records}


def oracle_val_folds(frame: pd.DataFrame, groups: dict[str, str], seed: int) -> list[set[str]]:
    """scikit-learn's folds over the rows outside the test split (in path order)."""
    rest = frame[frame["split"] != "test"].sort_values("path")
    splitter = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    folds = splitter.split(np.zeros(len(rest)), rest["label"], rest["path"].map(groups))
    return [set(rest["path"].iloc[val]) for _, val in folds]


def kfold(records, fold, seed=0, **settings) -> pd.DataFrame:
    return make_split(records, CLASSES, "kfold", ratios=RATIOS, seed=seed, folds=FOLDS,
                      fold=fold, links=LINKS, **settings)


def paths_in(manifest: pd.DataFrame, split: str) -> set[str]:
    return set(manifest.loc[manifest["split"] == split, "path"])


@pytest.mark.parametrize("by_patient", [True, False], ids=["patients", "images"])
@pytest.mark.parametrize("copies", [True, False], ids=["copies grouped", "copies not grouped"])
@pytest.mark.parametrize("seed", [0, 7])
def test_folds_hold_out_the_ratios_test_split_and_equal_scikit_learns(by_patient, copies, seed):
    records = generated_records()
    settings = {"group_by_patient": by_patient, "group_duplicates": copies}
    groups = oracle_groups(records, by_patient, LINKS if copies else [])
    single = make_split(records, CLASSES, "ratios", ratios=RATIOS, seed=seed, links=LINKS, **settings)
    test = paths_in(single, "test")
    expected_val = oracle_val_folds(single, groups, seed)
    everything = {r.path for r in records}
    labels = {r.path: r.label for r in records}
    validated = []
    for fold in range(FOLDS):
        manifest = kfold(records, fold, seed, **settings)
        assert set(manifest["path"]) == everything and manifest["path"].is_unique
        assert paths_in(manifest, "test") == test  # the same test images in every fold
        val = paths_in(manifest, "val")
        assert val == expected_val[fold]
        assert paths_in(manifest, "train") == everything - test - val  # no image unused
        # no patient (when grouping by patient) nor group of copies in two splits
        assert manifest.groupby(manifest["path"].map(groups))["split"].nunique().max() == 1
        # stratified: each class's validation count is its count outside the test split
        # over the folds, within one image (as close as whole groups allow here)
        rest = everything - test
        for label in CLASSES:
            n_class = sum(labels[p] == label for p in rest)
            n_val = sum(labels[p] == label for p in val)
            assert abs(n_val - n_class / FOLDS) <= 1, (fold, label, n_val, n_class)
        validated.append(val)
    # every image outside the test split is validated on in exactly one fold
    assert sorted(p for val in validated for p in val) == sorted(everything - test)
    if by_patient:  # a patient's images (with and without copies) never straddle two splits
        frame = kfold(records, 0, seed, **settings)
        known = frame.dropna(subset=["patient_id"])
        assert known.groupby("patient_id")["split"].nunique().max() == 1


def test_the_grouping_settings_change_the_folds():
    """The oracle comparison above has teeth: grouping by patient or by copies changes
    the folds (so a split that ignored a setting would not equal scikit-learn's)."""
    records = generated_records()
    vals = {(p, c): paths_in(kfold(records, 0, group_by_patient=p, group_duplicates=c), "val")
            for p in (True, False) for c in (True, False)}
    assert len({frozenset(v) for v in vals.values()}) == 4
    # without patient grouping, some patient is split across train and val
    frame = kfold(records, 0, group_by_patient=False, group_duplicates=False)
    used = frame[frame["split"] != "test"].dropna(subset=["patient_id"])
    assert used.groupby("patient_id")["split"].nunique().max() == 2


def test_another_seed_draws_another_test_split_and_other_folds():
    records = generated_records()
    zero, one = kfold(records, 0, seed=0), kfold(records, 0, seed=1)
    assert paths_in(zero, "test") != paths_in(one, "test")
    assert paths_in(zero, "val") != paths_in(one, "val")


def test_the_data_sets_own_folders_are_pooled():
    """A data set with train/val/test folders: k-fold ignores them, like ratios does."""
    records = [ImageRecord(f"/{s}/{c}/{i}.png", c, None, s)
               for s, n in (("train", 30), ("val", 4), ("test", 10)) for c in ("a", "b") for i in range(n)]
    manifest = make_split(records, ["a", "b"], "kfold", ratios=RATIOS, folds=3, fold=1)
    single = make_split(records, ["a", "b"], "ratios", ratios=RATIOS)
    assert paths_in(manifest, "test") == paths_in(single, "test")
    assert {p.split("/")[1] for p in paths_in(manifest, "test")} == {"train", "val", "test"}
    assert pd.crosstab(manifest["split"], manifest["label"]).loc["test"].tolist() == [9, 9]  # 0.2 * 44 = 8.8


# --- mistakes: one sentence each ---------------------------------------------------------------

@pytest.mark.parametrize(("mode", "folds", "fold", "words"), [
    ("kfold", 5, 5, ("data.split.fold must be a whole number from 0 to 4 (the folds of data.split.folds=5 "
                    "are numbered from 0), not 5.")),
    ("kfold", 5, -1, "data.split.fold must be a whole number from 0 to 4"),
    ("kfold", 5, 1.5, "not 1.5."),
    ("kfold", 1, 0, "data.split.folds must be a whole number of folds, 2 or more, such as 5, not 1."),
    ("kfold", True, 0, "data.split.folds must be a whole number of folds"),
    ("kfold", 5, None, ("data.split.mode=kfold needs data.split.fold, the fold validated on (0 to 4): "
                       "run every fold with python train.py -m cv=kfold, or one with data.split.fold=0.")),
    ("ratios", 5, 2, ("data.split.fold=2 applies only to data.split.mode=kfold, and the split mode is "
                     "ratios: add data.split.mode=kfold (or cv=kfold), or drop data.split.fold.")),
], ids=["fold 5 of 5", "fold -1", "fold 1.5", "folds 1", "folds true", "no fold", "fold outside kfold"])
def test_fold_settings_mistakes(mode, folds, fold, words):
    with pytest.raises(ConfigError) as error:
        make_split(generated_records(), CLASSES, mode, ratios=RATIOS, folds=folds, fold=fold)
    assert words in str(error.value)


def test_more_folds_than_a_class_has_groups():
    """The groups of each class outside the test split, counted here; as many folds as the
    smallest class has groups work, one more is refused."""
    records = generated_records()
    single = make_split(records, CLASSES, "ratios", ratios=RATIOS, group_by_patient=True, links=LINKS)
    groups = oracle_groups(records, True, LINKS)
    rest = single[single["split"] != "test"]
    per_class = {label: rest.loc[rest["label"] == label, "path"].map(groups).nunique()
                 for label in CLASSES}
    fewest = min(per_class.values())
    assert fewest < 20  # class b or c: about 18 patients, 14 or so outside the test split
    make_split(records, CLASSES, "kfold", ratios=RATIOS, group_by_patient=True, links=LINKS,
               folds=fewest, fold=fewest - 1)
    with pytest.raises(DataError) as error:
        make_split(records, CLASSES, "kfold", ratios=RATIOS, group_by_patient=True, links=LINKS,
                   folds=fewest + 1, fold=0)
    smallest = [label for label in CLASSES if per_class[label] == fewest]
    assert str(error.value) in [
        f"data.split.folds={fewest + 1} needs every class in at least {fewest + 1} groups of "
        "images outside the test split (an image with its copies and, with group_by_patient, its "
        f"patient's other images), but '{label}' is in only {fewest}; lower data.split.folds or "
        "add images." for label in smallest]


# --- the one command: cv=kfold ----------------------------------------------------------------

def sweep_jobs(overrides: list[str]) -> tuple[list[dict[str, str]], object]:
    """The jobs ``python train.py -m <overrides>`` launches: the composed
    ``hydra.sweeper.params`` plus the command line, expanded by Hydra's basic sweeper;
    also the composed job config."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + overrides
    parsed = OverridesParser.create().parse_overrides(arguments)
    [batch] = BasicSweeper.split_arguments(parsed, None)
    jobs = [dict(item.split("=", 1) for item in job) for job in batch]
    return jobs, cfg


def test_cv_kfold_sweeps_every_fold():
    jobs, cfg = sweep_jobs(["cv=kfold"])
    assert cfg.data.split.mode == "kfold" and cfg.data.split.folds == 5
    assert sorted(int(job["data.split.fold"]) for job in jobs) == [0, 1, 2, 3, 4]
    jobs, _ = sweep_jobs(["cv=kfold", "data.split.folds=3"])  # the sweep follows folds
    assert sorted(int(job["data.split.fold"]) for job in jobs) == [0, 1, 2]
    jobs, _ = sweep_jobs(["cv=kfold", "data.split.fold=2"])  # one fold from the command line
    assert [job["data.split.fold"] for job in jobs] == ["2"]


@pytest.mark.parametrize(("experiment", "arms"), [("brain_mri_inception", 1), ("pneumonia_inception_lr", 4)])
def test_cv_kfold_multiplies_an_experiments_sweep(experiment, arms):
    """arms x seeds x folds jobs, each combination once, and debug=smoke's ratios split
    does not replace the k-fold one."""
    jobs, cfg = sweep_jobs([f"experiment={experiment}", "debug=smoke", "cv=kfold"])
    assert cfg.data.split.mode == "kfold" and cfg.data.split.ratios.test == 0.25  # smoke's test share
    assert len(jobs) == arms * 3 * 5
    combos = {tuple(sorted(job.items())) for job in jobs}
    assert len(combos) == len(jobs)
    assert {job["seed"] for job in jobs} == {"0", "1", "2"}
    assert {job["data.split.fold"] for job in jobs} == {"0", "1", "2", "3", "4"}


# --- one real sweep ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_fold_sweep(tmp_path_factory) -> Path:
    """``python train.py -m cv=kfold data.split.folds=2`` on the demo pneumonia phantoms
    (given folders, patients with several images: grouped by patient), tiny training. The
    sweep report is left to its own tests."""
    tmp = tmp_path_factory.mktemp("kfold")
    sweep = tmp / "sweep"
    environment = {**os.environ, "MEDREPRO_DATA_DIR": str(tmp / "data"),
                   "MEDREPRO_CACHE_DIR": str(tmp / "cache")}
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "cv=kfold", "data.split.folds=2",
         "data=demo_pneumonia", "data.source.image_size=96", "data.source.images_per_class=16",
         "model.name=test_resnet", "model.pretrained=false", *TINY_TRAINING, "data.image_size=64",
         "data.loader.num_workers=0", f"hydra.sweep.dir={sweep}", "~hydra.callbacks.sweep_report"],
        capture_output=True, text=True, cwd=tmp, env=environment, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


@pytest.mark.slow  # about 30 s on an idle 2-core machine
def test_one_command_runs_every_fold(two_fold_sweep):
    splits = [pd.read_csv(two_fold_sweep / str(job) / "split.csv") for job in range(2)]
    assert not (two_fold_sweep / "2").exists()
    first, second = splits
    assert set(first["path"]) == set(second["path"])
    assert paths_in(first, "test") == paths_in(second, "test") != set()
    rest = set(first["path"]) - paths_in(first, "test")
    assert paths_in(first, "val") | paths_in(second, "val") == rest
    assert not paths_in(first, "val") & paths_in(second, "val")
    for split in splits:
        assert paths_in(split, "train") == rest - paths_in(split, "val")
        # Kaggle file names give the patient ids: each patient in one split
        assert split.groupby("patient_id")["split"].nunique().max() == 1
    for job, split in enumerate(splits):
        results = json.loads((two_fold_sweep / str(job) / "results.json").read_text())
        assert results["status"] == "completed"
        data = results["data"]
        assert (data["split_mode"], data["fold"], data["folds"]) == ("kfold", job, 2)
        assert data["group_by_patient"] is True
        counts = pd.crosstab(split["split"], split["label"])
        assert data["split_counts"]["val"] == counts.loc["val"].to_dict()
