"""`data.preprocess.enhance=enh`: the local-phase ENH images as a pre-processing step of the pipeline."""

import json

import albumentations as A
import hydra
import numpy as np
import pytest
import torch
from conftest import TINY_RUN, compose_config

from medrepro.datamodules.transforms.image_reader import read_image
from medrepro.datamodules.transforms.local_phase import enhance_local_phase
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.training import train


def test_enh_run_feeds_three_local_phase_channels_to_the_model(tmp_path, demo_dir):
    run_dir = tmp_path / "run"
    cfg = compose_config(["data=demo_pneumonia", "data.preprocess.enhance=enh", "data.preprocess.enh.nscale=3", *TINY_RUN],
                         run_dir, demo_dir=demo_dir)
    train(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["data"]["enhance"] == "enh" and results["data"]["model_channels"] == 3
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["state_dict"]["backbone.Conv2d_1a_3x3.conv.weight"].shape[1] == 3


def test_enh_images_are_the_enhancement_of_the_resized_xray(tmp_path, demo_dir):
    cfg = compose_config(["data=demo_pneumonia", "data.preprocess.enhance=enh", "data.cache.enabled=false", *TINY_RUN],
                         tmp_path / "run", demo_dir=demo_dir)
    datamodule = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    item = datamodule.datasets["val"][0]
    assert item["image"].shape == (3, 80, 80)
    gray = read_image(item["path"], 1)
    resized = A.Resize(80, 80, interpolation=3)(image=gray)["image"]
    expected = enhance_local_phase(torch.from_numpy(resized[:, :, 0]))
    torch.testing.assert_close(item["image"], expected, atol=1e-5, rtol=0)
    assert np.isclose(float(item["image"].amin()), 0) and np.isclose(float(item["image"].amax()), 1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.preprocess.enhance=enh", "data.channels=3"], "data.preprocess.enhance=enh computes its three channels"),
        (["data.preprocess.enhance=sharpen"], "data.preprocess.enhance must be one of none, enh"),
    ],
)
def test_enhancement_mistakes_stop_with_one_sentence(tmp_path, class_folders, capsys, overrides, message):
    cfg = compose_config(["data=folder", f"data.root={class_folders}", *overrides], tmp_path / "run")
    with pytest.raises(SystemExit):
        run_job(cfg)
    assert message in capsys.readouterr().err
