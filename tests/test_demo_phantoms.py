"""The demo data generator: real data sets' layouts, determinism, atomic reuse, learnable signal."""

import csv
import json
import re
import threading
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medrepro.datamodules.demo import phantoms as demo_phantoms
from medrepro.datamodules.demo.phantoms import DEMO_DATASETS, ensure_demo_dataset

SIZE, PER_CLASS = 96, 40
NORMAL_NAME = re.compile(r"(?P<patient>(NORMAL2-)?IM-\d{4})-(?P<image>\d{4})\.jpeg")
PNEUMONIA_NAME = re.compile(r"(?P<patient>person\d+)_(bacteria|virus)_(?P<image>\d+)\.jpeg")
TUMOUR_NAME = re.compile(r"Y\d+\.(jpg|JPG)")
NO_TUMOUR_NAME = re.compile(r"no \d+\.jpg|No\d+\.jpg|\d+ no\.jpeg|N\d+\.JPG")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    return {
        name: ensure_demo_dataset(name, root, image_size=SIZE, images_per_class=PER_CLASS)
        for name in DEMO_DATASETS
    }


def ground_truth(folder: Path) -> list[dict]:
    with (folder / "ground_truth.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.parent != folder)


def read_gray(path: Path) -> np.ndarray:
    if path.suffix == ".tif":
        return tifffile.imread(path).astype(np.float32) / 65535
    return np.asarray(Image.open(path).convert("L"), np.float32) / 255


def downsampled(path: Path, side: int) -> np.ndarray:
    return cv2.resize(read_gray(path), (side, side), interpolation=cv2.INTER_AREA)


def cross_validated_auroc(features: np.ndarray, labels: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return roc_auc_score(labels, scores)


def test_unknown_name_lists_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match="cardiomegaly, pneumonia, brain_mri"):
        ensure_demo_dataset("covid", tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        ensure_demo_dataset("pneumonia", tmp_path, image_size=8)


def test_folder_name_marker_and_ground_truth_cover_every_file(demo):
    for name, folder in demo.items():
        assert folder.name == f"{name}_{SIZE}px_{PER_CLASS}_seed0"
        marker = json.loads((folder / ".complete").read_text())
        assert marker["generator_version"] == demo_phantoms.GENERATOR_VERSION
        assert marker["images_per_class"] == PER_CLASS
        files = {p.relative_to(folder).as_posix() for p in image_files(folder)}
        rows = ground_truth(folder)
        assert {row["path"] for row in rows} == files
        assert all(row["path"].split("/")[-2] == row["label"] for row in rows)
        counts = defaultdict(int)
        for row in rows:
            counts[row["label"]] += 1
        assert list(counts.values()) == [PER_CLASS] * (3 if name == "covid3" else 2)


def test_cardiomegaly_layout_and_16_bit_tiffs(demo):
    folder = demo["cardiomegaly"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["cardiomegaly", "normal"]
    numbers = []
    for path in image_files(folder):
        assert re.fullmatch(r"CXR_\d{5}\.tif", path.name)
        numbers.append(int(path.stem[4:]))
    assert sorted(numbers) == list(range(1, 2 * PER_CLASS + 1))  # unique across classes
    image = tifffile.imread(path)
    assert image.dtype == np.uint16 and image.shape == (SIZE, SIZE)
    assert image.max() > 2**15 and image.min() < 2**12


def test_cardiomegaly_ground_truth_is_on_the_right_side_of_the_clinical_threshold(demo):
    for row in ground_truth(demo["cardiomegaly"]):
        ctr = float(row["ctr"])
        assert (ctr > 0.5) == (row["label"] == "cardiomegaly"), row
        assert 0.3 < ctr < 0.7


def test_ground_truth_ctr_matches_the_rendered_heart_and_thorax():
    """Widest row of the heart over widest row of the lung fields, on unblurred anatomy."""
    size, rng = 512, np.random.default_rng(0)
    for ctr_range in (demo_phantoms.NORMAL_CTR_RANGE, demo_phantoms.CARDIOMEGALY_CTR_RANGE):
        for _ in range(4):
            anatomy = demo_phantoms.ChestAnatomy.sample(rng, ctr_range)
            radius = size / 2 * anatomy.body_scale
            u, v = demo_phantoms._rotated_grid(
                (size, size), (size / 2, size / 2), (radius, radius), 0.0
            )
            image, lungs = demo_phantoms._chest_anatomy_image(anatomy, u, v, rng)
            heart = image == np.float32(0.7)

            def widest_row(mask):
                return max(np.ptp(np.flatnonzero(row)) + 1 for row in mask if row.any())

            measured = widest_row(heart) / widest_row(lungs)
            assert measured == pytest.approx(anatomy.cardiothoracic_ratio, abs=0.01)


def test_pneumonia_kaggle_layout_names_and_patient_level_splits(demo):
    folder = demo["pneumonia"]
    patterns = {"NORMAL": NORMAL_NAME, "PNEUMONIA": PNEUMONIA_NAME}
    patient_splits, patient_images, image_numbers = defaultdict(set), defaultdict(list), []
    for path in image_files(folder):
        split, label = path.parent.parent.name, path.parent.name
        assert split in {"train", "val", "test"} and label in patterns
        match = patterns[label].fullmatch(path.name)
        assert match, path.name
        patient_splits[match["patient"]].add(split)
        patient_images[match["patient"]].append(int(match["image"]))
        if label == "PNEUMONIA":
            image_numbers.append(int(match["image"]))
        assert Image.open(path).mode == "L"
    assert all(len(splits) == 1 for splits in patient_splits.values())
    assert len(image_numbers) == len(set(image_numbers))  # running number unique in the class
    person_counts = [len(v) for k, v in patient_images.items() if k.startswith("person")]
    assert max(person_counts) > 1 and max(person_counts) <= 3
    for patient, images in patient_images.items():
        if not patient.startswith("person"):
            assert sorted(images) == list(range(1, len(images) + 1))
    assert any(p.startswith("NORMAL2-") for p in patient_images)
    assert any(p.startswith("IM-") for p in patient_images)
    for label in patterns:
        for split in ("train", "val", "test"):
            assert any((folder / split / label).iterdir())
    train_share = sum(s == {"train"} for s in patient_splits.values()) / len(patient_splits)
    assert 0.6 < train_share < 0.8


def test_pneumonia_ground_truth_consolidation_only_in_pneumonia(demo):
    for row in ground_truth(demo["pneumonia"]):
        fraction = float(row["opacified_lung_fraction"])
        if row["label"] == "PNEUMONIA":
            assert 0.05 < fraction < 0.45, row
        else:
            assert fraction == 0.0
        assert row["path"].startswith(row["split"] + "/")
        assert row["patient_id"] in row["path"]


def test_covid3_three_classes_with_opacities_only_in_diseased_lungs(demo):
    rows = ground_truth(demo["covid3"])
    assert {row["label"] for row in rows} == {"normal", "pneumonia", "COVID-19"}
    assert all(re.fullmatch(r"CXR_\d{5}\.png", row["path"].split("/")[-1]) for row in rows)
    for row in rows:
        fraction = float(row["opacified_lung_fraction"])
        assert fraction == 0.0 if row["label"] == "normal" else 0.05 < fraction < 0.45
    with Image.open(demo["covid3"] / rows[0]["path"]) as image:
        assert image.mode == "L" and image.size == (SIZE, SIZE)


def test_brain_mri_untidy_names_modes_and_sizes(demo):
    folder = demo["brain_mri"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["no", "yes"]
    modes, shapes, suffixes = set(), set(), set()
    for path in image_files(folder):
        pattern = TUMOUR_NAME if path.parent.name == "yes" else NO_TUMOUR_NAME
        assert pattern.fullmatch(path.name), path.name
        with Image.open(path) as image:
            assert image.format == "JPEG"
            modes.add(image.mode)
            shapes.add(image.size)
            assert all(0.7 * SIZE <= side <= 1.35 * SIZE for side in image.size)
        suffixes.add(path.suffix)
    assert modes == {"L", "RGB"}
    assert {".jpg", ".JPG", ".jpeg"} <= suffixes
    assert any(width != height for width, height in shapes)
    for row in ground_truth(folder):
        radius = float(row["tumour_radius"])
        assert (0.08 <= radius <= 0.2) if row["label"] == "yes" else radius == 0.0


def test_same_parameters_give_identical_bytes(tmp_path):
    for name in DEMO_DATASETS:
        first, second, other_seed = (
            ensure_demo_dataset(name, tmp_path / run, image_size=64, images_per_class=5, seed=seed)
            for run, seed in (("a", 3), ("b", 3), ("c", 4))
        )
        files = [p.relative_to(first) for p in image_files(first)]
        assert files == [p.relative_to(second) for p in image_files(second)]
        assert (first / "ground_truth.csv").read_bytes() == (
            second / "ground_truth.csv"
        ).read_bytes()
        for file in files:
            assert (first / file).read_bytes() == (second / file).read_bytes(), file
        assert any(
            (first / file).read_bytes() != (other_seed / file).read_bytes()
            for file in files
            if (other_seed / file).exists()
        )


def test_complete_folder_is_reused_without_rewriting(demo):
    folder = demo["cardiomegaly"]
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    again = ensure_demo_dataset(
        "cardiomegaly", folder.parent, image_size=SIZE, images_per_class=PER_CLASS
    )
    assert again == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_no_temporary_folders_are_left_behind(demo):
    root = next(iter(demo.values())).parent
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in demo.values())


def test_concurrent_callers_share_one_complete_folder(tmp_path):
    results = []

    def generate():
        results.append(
            ensure_demo_dataset("brain_mri", tmp_path, image_size=48, images_per_class=6)
        )

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    assert len(image_files(results[0])) == 12


def test_caller_that_loses_the_rename_race_uses_the_winners_folder(tmp_path, monkeypatch):
    write = demo_phantoms._DATASET_WRITERS["brain_mri"]
    winners = []

    def write_while_another_caller_finishes_first(folder, *args):
        monkeypatch.setitem(demo_phantoms._DATASET_WRITERS, "brain_mri", write)
        winners.append(
            ensure_demo_dataset("brain_mri", tmp_path, image_size=48, images_per_class=3)
        )
        return write(folder, *args)

    monkeypatch.setitem(
        demo_phantoms._DATASET_WRITERS, "brain_mri", write_while_another_caller_finishes_first
    )
    assert (
        ensure_demo_dataset("brain_mri", tmp_path, image_size=48, images_per_class=3) == winners[0]
    )
    assert [p.name for p in tmp_path.iterdir()] == [winners[0].name]


def test_outdated_folder_is_regenerated(tmp_path):
    folder = ensure_demo_dataset("cardiomegaly", tmp_path, image_size=48, images_per_class=2)
    marker = json.loads((folder / ".complete").read_text())
    (folder / ".complete").write_text(json.dumps({**marker, "generator_version": "old"}))
    (folder / "normal" / "stray.tif").write_bytes(b"")
    assert (
        ensure_demo_dataset("cardiomegaly", tmp_path, image_size=48, images_per_class=2) == folder
    )
    assert json.loads((folder / ".complete").read_text()) == marker
    assert not (folder / "normal" / "stray.tif").exists()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


@pytest.mark.parametrize(
    "name, positive", [("cardiomegaly", "cardiomegaly"), ("pneumonia", "PNEUMONIA")]
)
def test_chest_class_signal_survives_downsampling_to_16_px(demo, name, positive):
    """A linear model on 16 x 16 thumbnails separates the classes: the signal is coarse."""
    rows = ground_truth(demo[name])
    pixels = np.stack([downsampled(demo[name] / row["path"], 16).ravel() for row in rows])
    labels = np.array([row["label"] == positive for row in rows])
    assert cross_validated_auroc(pixels, labels) > 0.85


def test_tumour_is_the_brightest_spot_inside_the_skull_at_32_px(demo):
    """Brightest pixel well inside the head, over the median there, flags the tumour."""
    rows = ground_truth(demo["brain_mri"])
    scores = []
    for row in rows:
        image = downsampled(demo["brain_mri"] / row["path"], 32)
        depth = cv2.distanceTransform((image > 0.08).astype(np.uint8), cv2.DIST_L2, 3)
        deep_inside = image[depth > 0.4 * depth.max()]
        scores.append(deep_inside.max() - np.median(deep_inside))
    labels = np.array([row["label"] == "yes" for row in rows])
    assert roc_auc_score(labels, scores) > 0.85
