"""``python export.py ckpt_path=FILE format=onnx|torchscript``: the exported model gives
PyTorch's probabilities on the real sample X-rays, model.json says what it expects, and a
missing, foreign or unsafe checkpoint stops with one sentence.

The oracle is the trained LightningModule itself (``ImageClassifier.predict_probabilities``
on the image medrepro's own pre-processing makes); the exported file is run as a user runs
it (onnxruntime, ``torch.jit.load``) on images pre-processed as model.json describes, with
PIL and OpenCV only. Tiny models: timm ``test_resnet`` trained for two batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import CONFIG_DIR, REPO, TINY_RUN, compose_config, shared_data
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from medrepro.datamodules.image_dataset import preprocess_image
from medrepro.jobs.model_export import export_model, run_export
from medrepro.jobs.trained_model import load_trained_model
from medrepro.jobs.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a threshold other than the default, so that a card that ignores the model's is wrong
THRESHOLD = 0.35
TRAINING = [*TINY_RUN, "model.name=test_resnet", "model.pretrained=false",
            "data.loader.num_workers=0", "~callbacks.run_plots", "trainer.limit_test_batches=1",
            f"model.threshold={THRESHOLD}"]
TOLERANCE = 1e-4


def trained_checkpoint(tmp_path_factory, demo_dir, name: str, data: str, *extra: str) -> Path:
    run_dir = tmp_path_factory.mktemp(name)
    train(compose_config([f"data={data}", *TRAINING, *extra], run_dir, demo_dir=demo_dir))
    return next((run_dir / "checkpoints").glob("best-epoch*.ckpt"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, demo_dir) -> Path:
    """A one-channel binary model (BCE, one logit), 80 px."""
    return trained_checkpoint(tmp_path_factory, demo_dir, "run", "demo_pneumonia")


def export_command(*overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "export.py"), *overrides], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


class WritesAFolder:
    """Unpickling it creates ``marker``: a checkpoint that would run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture(scope="module")
def commands(checkpoint, tmp_path_factory) -> dict:
    """``python export.py`` twice at the same time (most of each is starting Python and
    torch): ``ckpt_path=<the model> format=onnx`` into its run folder (``onnx``), and
    ``ckpt_path=<a checkpoint whose loading would run code>`` (``unsafe``: the file, the
    folder its code would create, the exit status and stderr)."""
    onnx_folder = tmp_path_factory.mktemp("onnx") / "run"
    unsafe_folder = tmp_path_factory.mktemp("unsafe")
    marker, unsafe = unsafe_folder / "code_ran", unsafe_folder / "unsafe.ckpt"
    torch.save({"state_dict": {"backbone.weight": torch.zeros(1)}, "x": WritesAFolder(marker)},
               unsafe)
    processes = {
        "onnx": export_command(f"ckpt_path={checkpoint}", "format=onnx",
                               f"hydra.run.dir={onnx_folder}"),
        "unsafe": export_command(f"ckpt_path={unsafe}", f"hydra.run.dir={unsafe_folder / 'run'}"),
    }
    results = {name: finished(process) for name, process in processes.items()}
    code, stdout, stderr = results["onnx"]
    assert code == 0, stderr[-3000:]
    assert "Exported" in stdout and "Traceback" not in stderr
    assert "INFO" not in stdout + stderr  # the exporter's own pass-by-pass log stays out
    code, _, stderr = results["unsafe"]
    return {"onnx": onnx_folder, "unsafe": {"file": unsafe, "marker": marker, "code": code,
                                            "stderr": stderr, "run": unsafe_folder / "run"}}


@pytest.fixture(scope="module")
def exported(commands, checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The ONNX export of the command, and a TorchScript export in-process (``export_model``,
    what the command calls)."""
    torchscript_folder = tmp_path_factory.mktemp("torchscript")
    export_model(load_trained_model(checkpoint), torchscript_folder, "torchscript")
    return {"onnx": commands["onnx"], "torchscript": torchscript_folder}


def card_of(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def as_the_card_says(path: Path, card: dict) -> np.ndarray:
    """``[C, H, W]`` float32: the file read with PIL and resized with OpenCV as the card's
    pre-processing steps say (no medrepro code)."""
    prep = card["preprocessing"]
    assert prep["channels_read"] == 1 and prep["enhance"] == "none"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    for step in prep["steps"]:
        assert step["_target_"] == "albumentations.Resize", step
        flag = getattr(cv2, card_interpolation(prep, step))
        pixels = cv2.resize(pixels, (step["width"], step["height"]), interpolation=flag)
    return pixels[None]


def card_interpolation(prep: dict, step: dict) -> str:
    """The OpenCV flag the card's human description names for ``step`` (``INTER_AREA``)."""
    described = [line for line in prep["describe"] if line.startswith("resize to "
                                                                      f"{step['height']} x")]
    assert len(described) == 1, prep["describe"]
    name = described[0].split(" with cv2.")[1].split(" ")[0]
    assert getattr(cv2, name) == step["interpolation"], (name, step)
    return name


def sample_files() -> list[Path]:
    return sorted(p for p in shared_data("pneumonia_sample").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def xrays(checkpoint) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The real sample X-rays, the images medrepro makes of them for the model, and the
    model's ``predict_probabilities`` of those."""
    files = sample_files()
    return (files, *pytorch_probabilities(load_trained_model(checkpoint), files))


def pytorch_probabilities(trained, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(the images medrepro pre-processes, ``predict_probabilities`` of them)."""
    pipeline = trained.pipeline()
    images = np.stack([preprocess_image(str(f), trained.channels, pipeline).transpose(2, 0, 1)
                       for f in files]).astype(np.float32)
    with torch.no_grad():
        expected = trained.classifier.predict_probabilities(torch.from_numpy(images)).numpy()
    return images, expected


def onnx_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_onnx_model_gives_pytorchs_probabilities_on_the_real_xrays(exported, xrays):
    folder = exported["onnx"]
    card = card_of(folder)
    files, medrepro_images, expected = xrays
    card_images = np.stack([as_the_card_says(f, card) for f in files])
    # the card's recipe (PIL + OpenCV) makes exactly the images training's pipeline makes
    np.testing.assert_allclose(card_images, medrepro_images, rtol=0, atol=1e-6)
    model_path = folder / card["file"]
    onnx.checker.check_model(str(model_path), full_check=True)
    # all 48 at once, and one at a time: the batch dimension is free
    together = onnx_probabilities(model_path, card_images)
    one_by_one = np.concatenate([onnx_probabilities(model_path, image[None]) for image in card_images])
    difference = max(np.abs(together - expected).max(), np.abs(one_by_one - expected).max())
    print(f"ONNX: largest |onnxruntime - PyTorch| on {len(files)} real X-rays: {difference:.2e}")
    assert difference <= TOLERANCE
    assert together.shape == (len(files), 2)
    np.testing.assert_allclose(together.sum(axis=1), 1, atol=1e-6)
    # a model whose outputs differ between images (else matching them would prove little)
    assert np.ptp(expected[:, 1]) > 1e-3
    # the card's decision rule gives PyTorch's predictions
    positive = card["class_names"].index(card["positive_class"])
    decided = np.where(together[:, positive] >= card["threshold"], positive, 1 - positive)
    np.testing.assert_array_equal(decided, (expected[:, 1] >= THRESHOLD).astype(int))


def test_model_card_says_what_the_onnx_model_expects(checkpoint, exported):
    folder = exported["onnx"]
    card = card_of(folder)
    trained = load_trained_model(checkpoint)
    assert card["format"] == "onnx" and card["file"] == "model.onnx"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == \
        ["export.log", "model.json", "model.onnx"]
    assert f"as onnx: {folder / 'model.onnx'}" in (folder / "export.log").read_text()
    assert card["input"]["shape"] == ["batch", 1, 80, 80]
    assert (card["input"]["height"], card["input"]["width"], card["input"]["channels"]) == (80, 80, 1)
    assert card["input"]["value_range"] == [0.0, 1.0] and card["input"]["layout"] == "NCHW"
    assert card["class_names"] == ["NORMAL", "PNEUMONIA"] and card["positive_class"] == "PNEUMONIA"
    assert card["threshold"] == pytest.approx(THRESHOLD)
    assert card["output"]["shape"] == ["batch", 2]
    assert card["normalisation"]["inside_model"] is True
    assert card["normalisation"]["mean"] == pytest.approx(trained.classifier.mean.flatten().tolist())
    assert card["normalisation"]["std"] == pytest.approx(trained.classifier.std.flatten().tolist())
    assert card["source"]["checkpoint"] == str(checkpoint.resolve())
    assert card["source"]["training_run"] == str(checkpoint.parent.parent)
    assert card["source"]["model"] == "test_resnet" and card["source"]["epoch"] == 1
    assert card["versions"]["torch"] == torch.__version__ and card["versions"]["medrepro"]
    assert card["check"]["passed"] is True and card["check"]["max_abs_difference"] <= TOLERANCE
    # what the file itself declares agrees with the card
    model = onnx.load(str(folder / "model.onnx"))
    assert card["opset"] == 18 == {o.domain or "": o.version for o in model.opset_import}[""]
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == card["input"]["name"] and dims[1:] == [1, 80, 80]
    assert isinstance(dims[0], str)  # a named, free batch dimension
    assert [o.name for o in model.graph.output] == [card["output"]["name"]]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_model_gives_pytorchs_probabilities(exported, xrays):
    folder = exported["torchscript"]
    card = card_of(folder)
    assert card["format"] == "torchscript" and card["file"] == "model.pt"
    assert "deprecated" in card["note"] and card["input"]["shape"] == ["batch", 1, 80, 80]
    assert card["threshold"] == pytest.approx(THRESHOLD)
    files, _, expected = xrays
    images = torch.from_numpy(np.stack([as_the_card_says(f, card) for f in files]))
    loaded = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        together = loaded(images).numpy()
        one = loaded(images[:1]).numpy()
    difference = max(np.abs(together - expected).max(), np.abs(one - expected[:1]).max())
    print(f"TorchScript: largest |torch.jit.load - PyTorch| on {len(files)} real X-rays: "
          f"{difference:.2e}")
    assert difference <= TOLERANCE


def test_three_class_enh_model_takes_three_channels_and_says_how_to_make_them(
        tmp_path_factory, demo_dir, monkeypatch):
    """A three-class model (softmax) trained on the ENH input (read as grayscale, three
    channels computed): exported in-process while onnxruntime cannot be imported (the
    check is skipped with a note), then run with onnxruntime."""
    enh_checkpoint = trained_checkpoint(tmp_path_factory, demo_dir, "enh_run", "demo_covid3",
                                        "data.preprocess.enhance=enh", "data.image_size=48",
                                        "data.preprocess.enh.rho=0.3")
    trained = load_trained_model(enh_checkpoint)
    folder = tmp_path_factory.mktemp("enh_export")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
        card = export_model(trained, folder, "onnx")
    assert card["check"] == {"skipped": "onnxruntime is not installed (pip install onnxruntime)"}
    assert card["input"]["shape"] == ["batch", 3, 48, 48]
    assert card["class_names"] == ["normal", "pneumonia", "COVID-19"]
    assert card["output"]["shape"] == ["batch", 3]
    assert card["positive_class"] is None and card["threshold"] is None
    assert card["decision"] == "the class of the largest probability"
    prep = card["preprocessing"]
    assert prep["channels_read"] == 1 and prep["enhance"] == "enh"
    assert prep["enh"]["rho"] == 0.3 and prep["enh"]["nscale"] == 4
    assert any("ENH" in line for line in prep["describe"])
    assert json.loads((folder / "model.json").read_text()) == card
    files = sample_files()[::4]
    images, expected = pytorch_probabilities(trained, files)
    assert images.shape[1:] == (3, 48, 48)
    probabilities = onnx_probabilities(folder / "model.onnx", images)
    assert probabilities.shape == (len(files), 3)
    difference = np.abs(probabilities - expected).max()
    print(f"ENH ONNX: largest |onnxruntime - PyTorch| on {len(files)} real X-rays: {difference:.2e}")
    assert difference <= TOLERANCE


def test_unsafe_checkpoint_is_refused_without_running_its_code(commands):
    unsafe = commands["unsafe"]
    assert not unsafe["marker"].exists()  # refused, and its code did not run
    assert unsafe["code"] == 1, unsafe["stderr"]
    stderr = unsafe["stderr"]
    assert "Traceback" not in stderr and stderr.count("Error:") == 1, stderr
    sentence = stderr.strip().splitlines()[-1]
    assert sentence.startswith(f"Error: ckpt_path={unsafe['file']} ") and "loads safely" in sentence
    assert not list(unsafe["run"].glob("model.*"))
    # the file does run code when loaded the unsafe way: the refusal is what kept it out
    torch.load(unsafe["file"], weights_only=False)
    assert unsafe["marker"].is_dir()


def export_config(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("export", overrides=[*overrides, f"output_dir={tmp_path / 'out'}"])


@pytest.mark.parametrize("case", ["missing", "text", "no_setting", "format", "opset"])
def test_missing_or_foreign_checkpoint_or_wrong_format_stops_with_one_sentence(
        case, checkpoint, tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("these are my notes, not a model\n")
    overrides, expected = {
        "missing": ([f"ckpt_path={tmp_path / 'gone.ckpt'}"], "no such file"),
        "text": ([f"ckpt_path={text}"], "loads safely"),
        "no_setting": ([], "ckpt_path is required"),
        "format": ([f"ckpt_path={checkpoint}", "format=tflite"],
                   ("format=tflite is not a format export writes; use format=onnx or "
                   "format=torchscript.")),
        "opset": ([f"ckpt_path={checkpoint}", "opset=11"], "opset must be a whole number from 18"),
    }[case]
    with pytest.raises(SystemExit) as stop:
        run_export(export_config(tmp_path, *overrides))
    assert stop.value.code == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (sentence,) = [line for line in stderr.splitlines() if line.strip()]
    assert sentence.startswith("Error: ") and expected in sentence, sentence
    assert not (tmp_path / "out").exists()
