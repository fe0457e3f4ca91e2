"""predict.py: probabilities for new, unlabelled images in every format the reader takes,
unreadable files listed and skipped, Grad-CAM overlays at the original's resolution."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, checkpoint_tested_by
from PIL import Image
from test_dicom import write_dicom

from medrepro.core.errors import ConfigError
from medrepro.datamodules.sources.input_files import input_files
from medrepro.jobs.trained_model import load_trained_model


@pytest.fixture(scope="module")
def new_images(tmp_path_factory):
    """Five images of the demo phantoms' kind in five formats, one non-square, in nested
    folders, and a broken PNG and a text file beside them."""
    root = tmp_path_factory.mktemp("new_images")
    rng = np.random.default_rng(3)
    pixels = [np.clip(rng.normal(120 + 20 * i, 30, (96, 96)), 0, 255).astype(np.uint8) for i in range(5)]
    Image.fromarray(pixels[0]).save(root / "a.png")
    Image.fromarray(pixels[1]).resize((120, 80)).save(root / "wide.jpg", quality=95)
    (root / "sub").mkdir()
    Image.fromarray(pixels[2]).save(root / "sub" / "c.tif")
    Image.fromarray(pixels[3]).save(root / "sub" / "d.bmp")
    write_dicom(root / "sub" / "e.dcm", pixels[4])
    (root / "sub" / "broken.png").write_text("not an image")
    (root / "notes.txt").write_text("not an image either")
    return root


@pytest.fixture(scope="module")
def predicted(trained_run, new_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict") / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint_tested_by(trained_run)}",
         f"inputs={new_images}", "predict.saliency=true", f"hydra.run.dir={folder}",
         # float32 (auto picks bf16-mixed on CPUs with native bf16): compared with the model below
         "trainer.precision=32-true"],
        capture_output=True, text=True, cwd=folder.parent, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done


def test_every_readable_image_is_predicted_and_the_unreadable_one_listed(predicted, new_images):
    folder, done = predicted
    table = pd.read_csv(folder / "predictions.csv")
    names = sorted(p.split("/")[-1] for p in table["path"])
    assert names == ["a.png", "c.tif", "d.bmp", "e.dcm", "wide.jpg"]
    unreadable = pd.read_csv(folder / "unreadable.csv")
    assert unreadable["path"].tolist() == [str(new_images / "sub" / "broken.png")]
    assert "Skipped 1 file(s) that cannot be read" in done.stderr + done.stdout
    assert "Predicting DataLoader 0: 100%" in done.stdout + done.stderr  # the progress bar


def test_probabilities_match_the_model_on_independently_read_images(predicted, trained_run, new_images):
    """Oracle: the file read with Pillow, resized with OpenCV's area interpolation to the
    training's 48 px (what the checkpoint's data.preprocess says), through the model."""
    folder, _ = predicted
    table = pd.read_csv(folder / "predictions.csv").set_index("path")
    trained = load_trained_model(checkpoint_tested_by(trained_run))
    for name in ("a.png", "wide.jpg", "sub/c.tif", "sub/d.bmp"):
        with Image.open(new_images / name) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        resized = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            expected = trained.classifier.predict_probabilities(torch.from_numpy(resized)[None, None])[0]
        row = table.loc[str(new_images / name)]
        np.testing.assert_allclose([row["prob_NORMAL"], row["prob_PNEUMONIA"]], expected.numpy(), atol=1e-4)
    positive = table["prob_PNEUMONIA"] >= trained.threshold
    assert (table["predicted"] == np.where(positive, "PNEUMONIA", "NORMAL")).all()
    assert (table["threshold"] == 0.5).all()


def test_saliency_overlays_have_the_originals_resolution(predicted):
    folder, _ = predicted
    table = pd.read_csv(folder / "predictions.csv").set_index("path")
    overlays = {path.split("/")[-1]: overlay for path, overlay in table["saliency"].items()}
    with Image.open(overlays["wide.jpg"]) as overlay:
        assert overlay.size == (120, 80) and overlay.mode == "RGB"
    with Image.open(overlays["a.png"]) as overlay:
        assert overlay.size == (96, 96)


def test_inputs_may_be_a_file_a_pattern_or_a_list(new_images):
    assert input_files(str(new_images / "a.png")) == [str(new_images / "a.png")]
    assert [p.split("/")[-1] for p in input_files(f"{new_images}/**/*.png")] == ["a.png", "broken.png"]
    both = input_files([str(new_images / "a.png"), str(new_images / "sub")])
    assert [p.split("/")[-1] for p in both] == ["a.png", "broken.png", "c.tif", "d.bmp", "e.dcm"]


@pytest.mark.parametrize("inputs, words", [
    (None, "inputs is required"),
    ("absent_folder", "no such file or folder"),
    ("absent_folder/*.png", "the pattern matches no file"),
])
def test_wrong_inputs_stop_with_one_sentence(tmp_path, inputs, words):
    with pytest.raises(ConfigError, match=words):
        input_files(None if inputs is None else str(tmp_path / inputs))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no image files"):
        input_files(str(tmp_path / "empty"))


def test_predict_with_a_wrong_path_says_so_before_loading_anything(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "predict.py"), f"ckpt_path={tmp_path}/x.ckpt",
                           f"inputs={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/out"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"Error: inputs={tmp_path}/nowhere: no such file or folder."
