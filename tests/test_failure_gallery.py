"""The failure gallery (callbacks/failure_gallery.py): a real training run through train.py
on a phantom whose label is decided by one region writes gallery/ with the most confident
mistakes and successes, and the Grad-CAM peak of a model that learned the task lies in
that region; the groups follow predictions.csv; a heat map laid back through a crop to the
head lands where it was computed; a gallery that cannot be drawn never fails the run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_TRAINING, compose_config, stop_sentence
from PIL import Image
from sklearn.metrics import roc_auc_score

from medrepro.callbacks.failure_gallery import gallery_groups, model_input_box
from medrepro.core.run_folder import GALLERY_FOLDER, read_results
from medrepro.core.saliency_overlay import cam_on_original, cam_peak
from medrepro.datamodules.transforms.brain_crop import CropToBrain
from medrepro.jobs.training import train

PER_CLASS = 40
IMAGE_SIZE = 64
# a layer3 cell covers 16 of the 64 input pixels: Grad-CAM there localises to about half a cell
CELL = 16
GROUP = 8
# A run that learns the phantom in seconds: BatchNorm's running statistics of a network
# trained from scratch lag behind its weights, so many small batches and a cosine decay let
# them settle, and the last epoch's weights are tested
LEARNING_RUN = [
    "data=folder", f"data.image_size={IMAGE_SIZE}", "data.split.ratios={train:0.6,val:0.1,test:0.3}",
    "model.name=test_resnet", "model.pretrained=false", "augment=none", "scheduler=cosine",
    "trainer.max_epochs=8", "trainer.batch_size=4", "test_checkpoint=last", "logger=none",
    "trainer.enable_progress_bar=false", "data.cache.workers=0", "data.loader.num_workers=0",
    "callbacks.failure_gallery.target_layer=layer3", f"callbacks.failure_gallery.size={GROUP}",
]


def write_lesion_phantom(root: Path, per_class: int, seed: int = 0) -> dict[str, tuple]:
    """``root/clear/`` and ``root/lesion/``: grayscale PNGs of 56-80 x 56-80 px (not square)
    with a smooth background and three grey squares at random places; a ``lesion`` image
    also holds a bright disc (radius 4-6.5 px) at a random place, the only class signal.
    Returns ``{relative path: (centre x, centre y, radius)}`` of the lesions, in pixels."""
    rng = np.random.default_rng(seed)
    lesions = {}
    for label in ("clear", "lesion"):
        (root / label).mkdir(parents=True)
        for number in range(per_class):
            height, width = (int(side) for side in rng.integers(56, 81, size=2))
            coarse = rng.random((5, 5)).astype(np.float32)
            image = 0.25 + 0.2 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
            image += rng.normal(0, 0.03, (height, width)).astype(np.float32)
            for _ in range(3):  # distractors, in both classes
                side = int(rng.integers(6, 11))
                top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
                image[top : top + side, left : left + side] = rng.uniform(0.5, 0.65)
            name = f"{label}/img{number:03d}.png"
            if label == "lesion":
                radius = rng.uniform(4, 6.5)
                x = rng.uniform(radius + 2, width - radius - 2)
                y = rng.uniform(radius + 2, height - radius - 2)
                rows, columns = np.mgrid[0:height, 0:width]
                image[np.hypot(columns - x, rows - y) <= radius] = rng.uniform(0.9, 1.0)
                lesions[name] = (x, y, radius)
            pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
    return lesions


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lesions") / "images"
    return root, write_lesion_phantom(root, PER_CLASS)


@pytest.fixture(scope="module")
def learned_run(phantom, tmp_path_factory) -> Path:
    root, _ = phantom
    run_dir = tmp_path_factory.mktemp("run")
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *LEARNING_RUN, f"data.root={root}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=dict(os.environ), timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow  # a real training run: about 40 s on 2 busy cores
def test_the_heat_map_peaks_on_the_lesion_of_a_model_that_learned_it(learned_run, phantom):
    root, lesions = phantom
    predictions = pd.read_csv(learned_run / "predictions.csv")
    truth = (predictions["label"] == "lesion").astype(int)
    auroc = roc_auc_score(truth, predictions["probability"])
    assert auroc >= 0.9, auroc  # it learned the task
    gallery = pd.read_csv(learned_run / GALLERY_FOLDER / "gallery.csv")
    found = gallery[gallery["group"] == "correct_lesion"]
    assert len(found) >= 6, gallery
    hits = []
    for row in found.itertuples():
        x, y, radius = lesions[Path(row.path).relative_to(root).as_posix()]
        with Image.open(row.path) as image:
            width, height = image.size
        half_cell = CELL / 2 * max(width, height) / IMAGE_SIZE  # in the original's pixels
        hits.append(np.hypot(row.peak_x - x, row.peak_y - y) <= radius + half_cell)
    # a peak at random would land this close about one time in seven
    assert np.mean(hits) >= 0.8, (hits, found)


@pytest.mark.slow  # a real training run: about 40 s on 2 busy cores
def test_the_run_folder_holds_one_png_per_group_and_the_table(learned_run):
    predictions = pd.read_csv(learned_run / "predictions.csv")
    gallery = pd.read_csv(learned_run / GALLERY_FOLDER / "gallery.csv")
    assert list(gallery.columns) == ["group", "path", "label", "predicted", "probability",
                                     "explained_class", "peak_x", "peak_y", "target_layer"]
    assert (gallery["target_layer"] == "layer3").all()
    wrong = predictions[predictions["label"] != predictions["predicted"]]
    expected = {
        "false_positives": wrong[wrong["label"] == "clear"].sort_values(
            "probability", ascending=False, kind="stable"),
        "false_negatives": wrong[wrong["label"] == "lesion"].sort_values("probability", kind="stable"),
    }
    for name in ("clear", "lesion"):  # ties (saturated probabilities) in the file's order
        right = predictions[(predictions["label"] == name) & (predictions["predicted"] == name)]
        expected[f"correct_{name}"] = right.sort_values(f"prob_{name}", ascending=False, kind="stable")
    pngs = sorted(p.name for p in (learned_run / GALLERY_FOLDER).glob("*.png"))
    assert pngs == sorted(f"{group}.png" for group, rows in expected.items() if len(rows))
    for group, rows in expected.items():
        drawn = gallery[gallery["group"] == group]
        assert drawn["path"].tolist() == rows["path"].head(GROUP).tolist(), group
        assert np.allclose(drawn["probability"], rows["probability"].head(GROUP))
        assert (drawn["explained_class"] == drawn["predicted"]).all()
    for png in pngs:
        with Image.open(learned_run / GALLERY_FOLDER / png) as image:
            assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 300
    assert read_results(learned_run)["status"] == "completed"


def test_groups_are_the_most_confident_of_each_kind():
    """Binary: false positives by the positive probability, highest first; false negatives
    lowest first; correct ones of each class by that class's probability. More classes:
    mistakes by the predicted class's probability."""
    rows = [  # path, label index, P(positive), predicted index
        ("n1", 0, 0.10, 0), ("n2", 0, 0.02, 0), ("n3", 0, 0.70, 1), ("n4", 0, 0.95, 1),
        ("n5", 0, 0.55, 1), ("p1", 1, 0.99, 1), ("p2", 1, 0.60, 1), ("p3", 1, 0.40, 0),
        ("p4", 1, 0.05, 0),
    ]
    names = ["no", "yes"]
    table = pd.DataFrame(rows, columns=["path", "label_index", "probability", "predicted_index"])
    table["prob_no"], table["prob_yes"] = 1 - table["probability"], table["probability"]
    groups = {k: v["path"].tolist() for k, v in gallery_groups(table, names, 2).items()}
    assert groups == {"false_positives": ["n4", "n3"], "false_negatives": ["p4", "p3"],
                      "correct_no": ["n2", "n1"], "correct_yes": ["p1", "p2"]}
    only_right = table[table["label_index"] == table["predicted_index"]]
    assert set(gallery_groups(only_right, names, 4)) == {"correct_no", "correct_yes"}

    three = pd.DataFrame({
        "path": ["a", "b", "c", "d", "e"], "label_index": [0, 1, 2, 2, 0],
        "predicted_index": [1, 1, 0, 2, 2], "probability": [0.5, 0.8, 0.9, 0.6, 0.4],
        "prob_normal": [0.3, 0.1, 0.9, 0.2, 0.3], "prob_pneumonia": [0.5, 0.8, 0.05, 0.2, 0.3],
        "prob_COVID-19": [0.2, 0.1, 0.05, 0.6, 0.4],
    })
    groups = gallery_groups(three, ["normal", "pneumonia", "COVID-19"], 4)
    assert {k: v["path"].tolist() for k, v in groups.items()} == {
        "misclassified": ["c", "a", "e"], "correct_pneumonia": ["b"], "correct_covid_19": ["d"]}


def head_with_a_spot(height=150, width=120, spot=(70, 55)):
    """A brain-MRI-like slice: black background, an elliptical head off centre (rows
    30-129, columns 20-99) and a bright spot at ``spot`` (x, y)."""
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width), np.float32)
    image[((columns - 60) / 40) ** 2 + ((rows - 80) / 50) ** 2 <= 1] = 0.45
    image[np.hypot(columns - spot[0], rows - spot[1]) <= 3] = 1.0
    return image


def test_a_map_of_a_cropped_input_lands_where_it_was_computed_on_the_original():
    """The brain MRI pre-processing (crop to the head, resize to 100, then to the model's
    size): a map peaked where the spot is in the model input peaks at the spot of the
    original, not where that position would be without the crop."""
    image = head_with_a_spot()
    pipeline = A.Compose([CropToBrain(threshold=0.0588, margin=4),
                          A.Resize(100, 100, interpolation=cv2.INTER_AREA), A.Resize(64, 64)])
    box = model_input_box(pipeline, image)
    assert box is not None and abs(box[0] - 26) <= 2 and abs(box[1] - 133) <= 2
    assert abs(box[2] - 16) <= 2 and abs(box[3] - 103) <= 2  # the head's box and the margin
    seen = pipeline(image=image)["image"]
    row, column = np.unravel_index(np.argmax(cv2.GaussianBlur(seen, (5, 5), 0)), seen.shape)
    rows, columns = np.mgrid[0:64, 0:64]
    cam = np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / 8.0).astype(np.float32)
    x, y = cam_peak(cam_on_original(cam, image.shape, box))
    assert abs(x - 70) <= 2 and abs(y - 55) <= 2
    x, y = cam_peak(cam_on_original(cam, image.shape, None))
    assert abs(x - 70) > 5 or abs(y - 55) > 5  # without the box it would be elsewhere


def test_whole_view_steps_keep_the_whole_image_and_unknown_moves_give_none():
    image = head_with_a_spot()
    assert model_input_box(None, image) == (0, 149, 0, 119)
    assert model_input_box(A.Compose([A.Resize(64, 64)]), image) == (0, 149, 0, 119)
    assert model_input_box(A.Compose([A.CenterCrop(100, 100)]), image) is None


def tiny_run(root: Path, *overrides: str) -> list[str]:
    tiny = [o for o in TINY_TRAINING if "failure_gallery" not in o]  # should it turn it off
    return ["data=folder", f"data.root={root}", "model.name=test_resnet", *tiny,
            "trainer.limit_test_batches=2", *overrides]


def test_a_gallery_that_cannot_be_drawn_is_a_warning_and_the_run_completes(phantom, tmp_path, caplog):
    """global_pool exists but holds no feature maps (its output is [B, C])."""
    root, _ = phantom
    run_dir = tmp_path / "run"
    cfg = compose_config(tiny_run(root, "callbacks.failure_gallery.target_layer=global_pool"), run_dir)
    with caplog.at_level(logging.WARNING, logger="medrepro.callbacks.failure_gallery"):
        metrics = train(cfg)
    assert "test/auroc" in metrics and (run_dir / "predictions.csv").is_file()
    assert not list((run_dir / GALLERY_FOLDER).glob("*.png"))
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("failure_gallery")]
    assert warnings and all("not drawn" in w and "global_pool" in w for w in warnings), warnings


def test_a_target_layer_the_model_lacks_stops_the_run_before_training(phantom, tmp_path, capsys):
    root, _ = phantom
    cfg = compose_config(tiny_run(root, "callbacks.failure_gallery.target_layer=layer5"), tmp_path / "run")
    sentence = stop_sentence(cfg, capsys)
    assert "'layer5'" in sentence and "layer4" in sentence
    assert not (tmp_path / "run" / "checkpoints").exists()
