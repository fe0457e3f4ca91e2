"""The leakage stops before training and the audit's labelling and format findings, on
planted data whose answers are known: a patient in two splits, identical files in two
splits, Kaggle's patients across its own folders, identical files under two classes, a PNG
named ``.jpg``. About 25 s (two tiny training runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hydra
import numpy as np
import pytest
from conftest import CONFIG_DIR, TINY_TRAINING, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image

from medrepro.core.errors import DataError
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.jobs.auditing import run_audit
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.training import train

UNGROUPED = ["data.split.group_duplicates=false"]
FAST = ["model.name=test_resnet", "data.loader.num_workers=0", "data.cache.enabled=false", *TINY_TRAINING]
PATIENT_REGEX = r"data.source.patient_id_regex='^(p\d+)_'"


def image(path: Path, seed: int, size: int = 32, fmt: str = "PNG") -> Path:
    """A small 8-bit image with its own coarse random structure (no two seeds alike, so
    neither the bytes nor the perceptual hashes of two planted files coincide by chance)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((4, 4)) * 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse.resize((size, size), Image.BICUBIC).save(path, fmt)
    return path


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def given_tree_with_split_patients(root: Path) -> Path:
    """``root/{train,val,test}/{a,b}/pN_K.png``, two images per patient, each patient in
    one split, except two planted ones: p1 (2 train images, 1 test) and p8 (2 val, 1 test)."""
    layout = {"train": {"a": [1, 2, 3], "b": [4, 5, 6]}, "val": {"a": [7], "b": [8]},
              "test": {"a": [9], "b": [10]}}
    seed = 0
    for split, classes in layout.items():
        for label, patients in classes.items():
            for patient in patients:
                for k in range(2):
                    seed += 1
                    image(root / split / label / f"p{patient}_{k}.png", seed)
    image(root / "test" / "a" / "p1_9.png", 901)
    image(root / "test" / "b" / "p8_9.png", 908)
    return root


def results(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def one_sentence(message: str) -> str:
    """The stop's message: one line, one sentence, and the fix it names."""
    assert "\n" not in message.strip() and message.strip().endswith("."), message
    assert "data.checks.allow_leakage=true" in message and "python audit.py" in message
    return message


def datamodule(tmp_path: Path, overrides: list[str]):
    cfg = compose_config([*overrides, "data.cache.enabled=false"], tmp_path / "dm_run")
    module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    module.setup("fit")
    return module


# --- a patient with images in two splits --------------------------------------------------

def test_given_split_moves_a_patient_in_two_folders_to_the_folder_holding_most(tmp_path):
    """A ``given`` split with patient grouping: each planted patient moves whole to the
    folder that holds most of their images (p1 to train, p8 to val), the run completes
    without allow_leakage, and results.json lists the moved files and the new counts."""
    root = given_tree_with_split_patients(tmp_path / "data")
    cfg = compose_config(["data=folder", f"data.root={root}", "data.split.mode=given",
                          "data.split.group_by_patient=true", PATIENT_REGEX, *FAST], tmp_path / "run")
    train(cfg)
    done = results(tmp_path / "run")
    assert done["status"] == "completed"
    data = done["data"]
    assert "allowed_leakage" not in data
    assert data["moved_from_given_split"] == [str(root / "test" / "a" / "p1_9.png"),
                                              str(root / "test" / "b" / "p8_9.png")]
    assert data["patients_in_several_splits"] == 0 and data["patient_leakage_possible"] is False
    # counted by hand from the layout: p1_9 joins train/a, p8_9 joins val/b
    assert data["split_counts"] == {"train": {"a": 7, "b": 6}, "val": {"a": 2, "b": 3},
                                    "test": {"a": 2, "b": 2}}


def test_checks_stop_a_patient_in_two_splits_of_a_patient_level_split(tmp_path):
    """The checks before training are a safety net behind the split: a given split kept as
    it is (``group_by_patient=false``: image-level, so patients in two folders are counted,
    not stopped), checked as a patient-level split, stops with one sentence naming the
    planted patients."""
    root = given_tree_with_split_patients(tmp_path / "data")
    base = ["data=folder", f"data.root={root}", "data.split.mode=given", PATIENT_REGEX,
            "data.split.group_by_patient=false"]
    module = datamodule(tmp_path, base)
    facts = check_before_training(module)  # image-level: counted, not stopped
    assert facts["patients_in_several_splits"] == 2 and facts["patient_leakage_possible"] is True
    module.split_settings["group_by_patient"] = True  # the check as a patient-level split sees it
    with pytest.raises(DataError) as stop:
        check_before_training(module)
    message = one_sentence(str(stop.value))
    assert re.match(r"Cross-split leakage: 2 patient\(s\) have images in more than one split "
                    r"\(e\.g\. p1 in (train, test|test, train)\)", message), message
    assert "identical" not in message


def test_image_level_counts_split_counts_patients_in_two_splits_without_stopping(tmp_path):
    """``group_by_patient=false`` (the papers' image-level split) is the user's choice: no
    stop, nothing "allowed", but the exact number of patients in several splits (recounted
    here from the manifest) and ``patient_leakage_possible: true``."""
    root = tmp_path / "data"
    for i in range(16):  # 4 patients per class, 4 images each
        for label, offset in (("a", 0), ("b", 100)):
            image(root / label / f"p{offset + i // 4}_{i}.png", offset + i)
    module = datamodule(tmp_path, [
        "data=folder", f"data.root={root}", PATIENT_REGEX, "data.split.mode=counts",
        "+data.split.counts={train: {a: 8, b: 8}, val: {a: 4, b: 4}, test: {a: 4, b: 4}}"])
    facts = check_before_training(module)
    splits_of = {}
    for path, split in zip(module.manifest["path"], module.manifest["split"]):
        splits_of.setdefault(Path(path).name.split("_")[0], set()).add(split)
    expected = sum(len(s) > 1 for s in splits_of.values())
    assert len(splits_of) == 8 and expected >= 1  # 16 images per class into 8/4/4 must mix
    assert facts["patients_in_several_splits"] == expected
    assert facts["patient_leakage_possible"] is True and "allowed_leakage" not in facts


# --- identical files in two splits --------------------------------------------------------

def identical_files_tree(root: Path) -> tuple[Path, Path]:
    """A given split with two cross-split groups of identical bytes (a pair train/test and
    a triple train/val/test) and one identical pair inside train (no leakage)."""
    seed = 0
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        for label in ("a", "b"):
            for i in range(n):
                seed += 1
                image(root / split / label / f"{label}{i}.png", seed)
    pair = copy(root / "train" / "a" / "a0.png", root / "test" / "a" / "renamed_a.png")
    copy(root / "train" / "b" / "b1.png", root / "val" / "b" / "other_name.png")
    copy(root / "train" / "b" / "b1.png", root / "test" / "b" / "third_name.png")
    copy(root / "train" / "a" / "a2.png", root / "train" / "a" / "a2_again.png")
    return root, pair


def test_identical_files_across_splits_stop_the_job_with_one_sentence(tmp_path, capsys):
    """With copies not grouped (``data.split.group_duplicates=false``, the data set's
    folders kept as they are), what ``python train.py`` does (:func:`run_job`): exit status
    1, the sentence on stderr without a traceback, and results.json ``failed`` with that
    sentence."""
    root, _ = identical_files_tree(tmp_path / "data")
    cfg = compose_config(["data=folder", f"data.root={root}", "data.split.mode=given", *UNGROUPED,
                          *FAST], tmp_path / "run")
    (tmp_path / "run").mkdir()  # Hydra makes the run folder before the job starts
    with pytest.raises(SystemExit) as stop:
        run_job(cfg)
    assert stop.value.code == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    sentence = stderr.strip().splitlines()[-1].removeprefix("Error: ")
    one_sentence(sentence)
    # 5 files in 2 groups (a pair train/test, a triple train/val/test; the pair inside train
    # is no leakage), and the example is two identical files that really are in two splits
    example = re.match(r"Cross-split leakage: 5 identical or near-identical files \(2 group\(s\) of "
                       r"copies\) are in more than one split \(e\.g\. (\S+) in (\w+) and (\S+) in (\w+)\);",
                       sentence)
    assert example, sentence
    first, first_split, second, second_split = example.groups()
    assert Path(first).read_bytes() == Path(second).read_bytes() and first != second
    assert first_split != second_split
    assert {Path(first).relative_to(root).parts[0], Path(second).relative_to(root).parts[0]} == {
        first_split, second_split}
    assert "patient" not in sentence
    written = results(tmp_path / "run")
    assert written["status"] == "failed" and written["error"] == sentence


def test_identical_files_across_splits_train_when_allowed_and_are_listed(tmp_path):
    """``data.checks.allow_leakage=true``: the run completes; results.json lists the two planted
    cross-split groups with their files (not the pair inside train), and says that patient
    ids are unknown (no patient regex)."""
    root, _ = identical_files_tree(tmp_path / "data")
    cfg = compose_config(["data=folder", f"data.root={root}", "data.split.mode=given", *UNGROUPED,
                          "data.checks.allow_leakage=true", *FAST], tmp_path / "run")
    train(cfg)
    done = results(tmp_path / "run")
    assert done["status"] == "completed"
    data = done["data"]
    groups = data["allowed_leakage"]["identical_files_across_splits"]
    assert set(data["allowed_leakage"]) == {"identical_files_across_splits"}
    listed = sorted(sorted((Path(f["path"]).relative_to(root).as_posix(), f["split"]) for f in g["files"])
                    for g in groups)
    assert listed == [
        [("test/a/renamed_a.png", "test"), ("train/a/a0.png", "train")],
        [("test/b/third_name.png", "test"), ("train/b/b1.png", "train"),
         ("val/b/other_name.png", "val")],
    ]
    assert data["patients_in_several_splits"] is None and data["patient_leakage_possible"] is None


# --- Kaggle pneumonia: one id in Kaggle's train and test folders is one patient ------------

KAGGLE = {
    ("train", "NORMAL"): ["IM-0001-0001", "IM-0001-0002", "IM-0003-0001", "NORMAL2-IM-0005-0001",
                          "NORMAL2-IM-0007-0001"],
    ("train", "PNEUMONIA"): ["person12_bacteria_3", "person12_virus_4", "person14_bacteria_5",
                             "person16_virus_6"],
    ("val", "NORMAL"): ["IM-0005-0001", "IM-0011-0001"],  # IM-0005 is not NORMAL2-IM-0005
    ("val", "PNEUMONIA"): ["person18_bacteria_7", "person20_bacteria_8"],
    ("test", "NORMAL"): ["IM-0001-0003", "NORMAL2-IM-0005-0002", "IM-0013-0001"],
    ("test", "PNEUMONIA"): ["person12_bacteria_9", "person120_virus_10", "person22_virus_11"],
}
KAGGLE_SHARED = {"IM-0001": {"train": 2, "test": 1}, "NORMAL2-IM-0005": {"train": 1, "test": 1},
                 "person12": {"train": 2, "test": 1}}


@pytest.fixture
def kaggle_root(tmp_path) -> Path:
    for seed, ((split, label), names) in enumerate(KAGGLE.items()):
        for k, name in enumerate(names):
            image(tmp_path / "chest_xray" / split / label / f"{name}.jpeg", 50 * seed + k, fmt="JPEG")
    return tmp_path / "chest_xray"


def test_kaggle_given_split_moves_a_shared_id_whole(kaggle_root, tmp_path):
    """``data=pneumonia data.split.mode=given``: each of the three planted ids in Kaggle's
    train and test folders is one patient, moved whole to the folder holding most of its
    images (a tie, NORMAL2-IM-0005, to train): no stop, no patient in two splits."""
    module = datamodule(tmp_path, ["data=pneumonia", f"data.root={kaggle_root}",
                                   "data.split.mode=given"])
    facts = check_before_training(module)
    assert "allowed_leakage" not in facts
    assert facts["patients_in_several_splits"] == 0 and facts["patient_leakage_possible"] is False
    moved = sorted(Path(p).name for p in module.grouping_facts()["moved_from_given_split"])
    assert moved == ["IM-0001-0003.jpeg", "NORMAL2-IM-0005-0002.jpeg", "person12_bacteria_9.jpeg"]
    manifest = module.manifest.assign(name=module.manifest["path"].map(lambda p: Path(p).name))
    for prefix in ("IM-0001-", "NORMAL2-IM-0005-", "person12_"):
        rows = manifest[manifest["name"].str.startswith(prefix)]
        assert len(rows) == sum(KAGGLE_SHARED[prefix.rstrip("-_")].values())
        assert set(rows["split"]) == {"train"}, rows


def test_kaggle_resplit_keeps_each_shared_id_in_one_split(kaggle_root, tmp_path):
    """A re-split of the pooled Kaggle images (``group_by_patient=true``, the default) puts
    all images of each shared id into one split: no stop, zero patients in two splits."""
    module = datamodule(tmp_path, ["data=pneumonia", f"data.root={kaggle_root}", "data.split.mode=ratios",
                                   "data.split.ratios={train: 0.5, val: 0.25, test: 0.25}"])
    facts = check_before_training(module)
    manifest = module.manifest.assign(name=module.manifest["path"].map(lambda p: Path(p).name))
    for prefix in ("IM-0001-", "NORMAL2-IM-0005-", "person12_"):
        rows = manifest[manifest["name"].str.startswith(prefix)]
        assert len(rows) == sum(KAGGLE_SHARED[prefix.rstrip("-_")].values())
        assert rows["split"].nunique() == 1, rows
    assert facts["patients_in_several_splits"] == 0 and facts["patient_leakage_possible"] is False
    assert "allowed_leakage" not in facts


# --- the audit: identical files under two classes, a PNG named .jpg -----------------------

def test_audit_finds_different_labels_and_a_png_named_jpg(tmp_path, capsys):
    """``python audit.py data=folder`` (its :func:`run_audit`): one identical pair under two classes is flagged
    DIFFERENT LABELS (an identical pair within one class is not), and exactly the one PNG
    saved as ``.jpg`` counts as an extension that does not match the format."""
    root = tmp_path / "images"
    for i in range(6):
        image(root / "a" / f"a{i}.png", i)
        image(root / "b" / f"b{i}.png", 100 + i)
    mislabelled = copy(root / "a" / "a0.png", root / "b" / "also_in_b.png")
    copy(root / "a" / "a1.png", root / "a" / "a1_again.png")
    image(root / "a" / "real.jpg", 200, fmt="JPEG")
    image(root / "b" / "real.jpeg", 201, fmt="JPEG")
    png_as_jpg = image(root / "b" / "png_inside.jpg", 202, fmt="PNG")

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("audit", overrides=["data=folder", f"data.root={root}", "data.cache.enabled=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    run_audit(cfg)  # what python audit.py runs
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    differing = [g for g in audit["exact_duplicates"] if g["labels_differ"]]
    assert [sorted((f["path"], f["label"]) for f in g["files"]) for g in differing] == [
        [(str(root / "a" / "a0.png"), "a"), (str(mislabelled), "b")]]
    assert len(audit["exact_duplicates"]) == 2
    assert audit["summary"]["duplicates_with_different_labels"] == 1
    assert audit["image_properties"]["extension_differs_from_format"] == 1
    assert audit["image_properties"]["formats"] == {"PNG": 15, "JPEG": 2}

    # the pair under two classes is left out of the split, and listed
    assert audit["conflicting_labels"] == [[{"path": str(root / "a" / "a0.png"), "label": "a"},
                                            {"path": str(mislabelled), "label": "b"}]]
    markdown = (tmp_path / "out" / "audit.md").read_text()
    exact_section = markdown.split("## Exact duplicates")[1].split("\n## ")[0]
    flagged = [line for line in exact_section.splitlines() if "DIFFERENT LABELS" in line]
    assert len(flagged) == 1 and str(mislabelled) in flagged[0] and "a0.png" in flagged[0]
    assert "- groups of copies with different labels: 1 (2 files left out of the split)" in markdown
    assert "- extension does not match the format: 1" in markdown
    assert "groups of copies with different labels: 1" in capsys.readouterr().out
    assert png_as_jpg.suffix == ".jpg" and Image.open(png_as_jpg).format == "PNG"
