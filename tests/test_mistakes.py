"""The catalogue of a new user's mistakes: every bad setting or bad folder a user can
plausibly give ``python train.py``, with the exit status and the one sentence it must end
with, and the unusual inputs that must simply train. One row of :data:`CATALOGUE` per case.

Every row runs the real job entry, :func:`medrepro.jobs.job_runner.run_job`, in this process
on a config composed as ``python train.py`` composes it (a few seconds at most each); three
cases also run as a real ``python train.py`` process. A mistake must end with exit status 1,
``Error: <one sentence>`` on stderr and no traceback, and results.json ``failed`` with the
same sentence and the step it stopped at; a settings mistake must stop before anything is
read, cached or trained. The data faults that ``tests/test_data_faults.py`` covers
(decompression bombs, files that pass the header check but cannot be decoded, ...) are not
repeated here. About 50 s, half of it the three real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TINY_TRAINING, compose_config, stop_sentence, write_gray

from medrepro.jobs.job_runner import run_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["model.name=test_resnet", "data.loader.num_workers=0", *TINY_TRAINING, "data.image_size=32"]


# --- the data folders the cases start from (data.root is tmp_path/images) --------------------

def two_classes(root: Path) -> None:
    """``cat/`` and ``dog/``, 10 distinct small PNGs each: a folder that trains."""
    for label, value in (("cat", 40), ("dog", 160)):
        for i in range(10):
            write_gray(root / label / f"{label}{i}.png", value + 3 * i)


def no_folder(root: Path) -> None:
    """data.root does not exist."""


def empty_folder(root: Path) -> None:
    root.mkdir(parents=True)


def empty_class(root: Path) -> None:
    two_classes(root)
    shutil.rmtree(root / "dog")
    (root / "dog").mkdir()


def zero_byte_file(root: Path) -> None:
    two_classes(root)
    (root / "cat" / "zero.png").write_bytes(b"")


def truncated_png(root: Path) -> None:
    two_classes(root)
    whole = (root / "cat" / "cat0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(whole[: len(whole) // 2])


def text_named_png(root: Path) -> None:
    two_classes(root)
    (root / "cat" / "notes.png").write_text("not an image\n")


def folder_link_loop(root: Path) -> None:
    """``cat/loop`` links back to ``cat/``: walking it naively never ends."""
    two_classes(root)
    os.symlink(root / "cat", root / "cat" / "loop")


def file_link_loop(root: Path) -> None:
    """``cat/a.png`` -> ``cat/b.png`` -> ``cat/a.png``: neither resolves."""
    two_classes(root)
    os.symlink(root / "cat" / "b.png", root / "cat" / "a.png")
    os.symlink(root / "cat" / "a.png", root / "cat" / "b.png")


UNUSUAL_NAMES = ("with space.png", "ünïcödé_图像.png", "new\nline.png")


def unusual_names(root: Path) -> None:
    two_classes(root)
    for value, name in zip((90, 100, 110), UNUSUAL_NAMES):
        write_gray(root / "cat" / name, value)


def unreadable_file_with_a_newline_in_its_name(root: Path) -> None:
    two_classes(root)
    (root / "cat" / "new\nline.png").write_bytes(b"")


def three_classes(root: Path) -> None:
    """``cat/``, ``dog/`` and ``fox/``, 10 distinct small PNGs each."""
    two_classes(root)
    for i in range(10):
        write_gray(root / "fox" / f"fox{i}.png", 100 + 3 * i)


def text_weights(root: Path) -> None:
    """A text file given as ``model.weights`` (with the data folder that trains)."""
    two_classes(root)
    (root.parent / "weights.pth").write_text("these are not weights\n")
    (root.parent / "weights.ckpt").write_text("these are not weights\n")


# --- the catalogue -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One mistake or unusual input: its files, its overrides (``{root}`` is data.root,
    ``{tmp}`` the test's folder), the exit status, the words the sentence must contain,
    and the step results.json must say it stopped at (``failed_at``)."""

    id: str
    files: Callable[[Path], None]
    overrides: tuple[str, ...]
    exit_code: int
    sentence: tuple[str, ...] = ()
    stops_at: str | None = None
    status: str = "failed"


SETTINGS = "settings_check"  # before any data is read, cached or trained
CATALOGUE = [
    # settings: each sentence names the key and a value it takes
    Case("lr negative", two_classes, ("optimizer.lr=-1",), 1,
         ("optimizer.lr must be a number above 0", "such as 0.001", "not -1"), SETTINGS),
    Case("lr zero", two_classes, ("optimizer.lr=0",), 1,
         ("optimizer.lr must be a number above 0", "not 0"), SETTINGS),
    Case("lr not a number", two_classes, ("optimizer.lr=abc",), 1,
         ("optimizer.lr must be a number above 0", "'abc'"), SETTINGS),
    Case("weight decay negative", two_classes, ("optimizer.weight_decay=-1",), 1,
         ("optimizer.weight_decay must be a number, 0 or more", "not -1"), SETTINGS),
    Case("sgd momentum negative", two_classes, ("optimizer=sgd", "optimizer.momentum=-0.5"), 1,
         ("optimizer.momentum must be a number, 0 or more", "such as 0.9"), SETTINGS),
    Case("adam beta of 1.5", two_classes, ("optimizer.betas=[0.9,1.5]",), 1,
         ("optimizer.betas must be two numbers from 0 to below 1", "[0.9,0.999]", "[0.9,1.5]"),
         SETTINGS),
    Case("seed not a number", two_classes, ("seed=abc",), 1,
         ("seed must be a whole number from 0 to 4294967295", "such as 0", "'abc'"), SETTINGS),
    Case("seed negative", two_classes, ("seed=-1",), 1, ("seed must be a whole number", "not -1"),
         SETTINGS),
    # a learning rate that makes the loss explode (finite: about 1e25) ends as diverged
    Case("lr 1e12", two_classes, ("optimizer.lr=1e12",), 1,
         ("Training diverged", "lower optimizer.lr."), "training", status="diverged"),
    Case("max_epochs zero", two_classes, ("trainer.max_epochs=0",), 1,
         ("trainer.max_epochs must be a whole number of epochs, 1 or more", "not 0"), SETTINGS),
    Case("no training batches", two_classes, ("trainer.limit_train_batches=0",), 1,
         ("trainer.limit_train_batches must be", "not 0"), SETTINGS),
    Case("clipping with fused adam under 16-mixed", two_classes,
         ("trainer.precision=16-mixed", "trainer.gradient_clip_val=1.0"), 1,
         ("trainer.gradient_clip_val cannot be used with a fused optimizer under 16-mixed",
          "optimizer.fused=false"), SETTINGS),
    Case("threshold 2", two_classes, ("model.threshold=2",), 1,
         ("model.threshold must be a probability between 0 and 1", "such as 0.5", "not 2"), SETTINGS),
    Case("threshold 0", two_classes, ("model.threshold=0",), 1,
         ("model.threshold must be a probability between 0 and 1", "not 0"), SETTINGS),
    Case("threshold banana", two_classes, ("model.threshold=banana",), 1,
         ("model.threshold must be a probability between 0 and 1", "youden, sensitivity@0.95",
          "not 'banana'"), SETTINGS),
    Case("threshold rule target 1.5", two_classes, ("model.threshold=sensitivity@1.5",), 1,
         ("model.threshold must be", "any target between 0 and 1", "not 'sensitivity@1.5'"),
         SETTINGS),
    # the classes are known once the file names are listed: before any image is read
    Case("threshold rule on three classes", three_classes, ("model.threshold=youden",), 1,
         ("model.threshold=youden chooses a decision threshold for two-class tasks only",
          "3 classes (cat, dog, fox)", "model.threshold at a number such as 0.5"),
         "model_building"),
    Case("calibrate platt", two_classes, ("model.calibrate=platt",), 1,
         ("model.calibrate must be none or temperature", "not 'platt'"), SETTINGS),
    Case("image_size 0", two_classes, ("data.image_size=0",), 1,
         ("data.image_size must be a whole number of pixels", "such as 224", "not 0"), SETTINGS),
    Case("image_size 7 for inception_v3", two_classes, ("model.name=inception_v3", "data.image_size=7"),
         1, ("data.image_size=7 is too small for model.name=inception_v3", "at least 75 px",
             "set data.image_size=75 or more"), SETTINGS),
    Case("image_size 16 for vgg16", two_classes, ("model.name=vgg16", "data.image_size=16"), 1,
         ("data.image_size=16 is too small for model.name=vgg16", "set data.image_size=32 or more"),
         SETTINGS),
    Case("num_workers -1", two_classes, ("data.loader.num_workers=-1",), 1,
         ("data.loader.num_workers must be auto or a number of worker processes", "not -1"),
         "data_loading"),
    Case("test_checkpoint foo", two_classes, ("test_checkpoint=foo",), 1,
         ("test_checkpoint must be best or last, not 'foo'",), SETTINGS),
    # a search must never tune on the test set by accident: only named stages and metrics
    Case("optimized_metric unknown", two_classes, ("optimized_metric=val/accuracy",), 1,
         ("optimized_metric must name a validation (or test) metric such as val/auroc",
          "not 'val/accuracy'"), SETTINGS),
    Case("optimized_metric of training", two_classes, ("optimized_metric=train/loss",), 1,
         ("optimized_metric must name a validation (or test) metric", "not 'train/loss'"), SETTINGS),
    Case("unknown model", two_classes, ("model.name=inceptionv3",), 1,
         ("Unknown model name 'inceptionv3'", "Did you mean inception_v3"), SETTINGS),
    # old data key names: on the command line they stop before Hydra (see the subprocess
    # test); added with + (as Hydra suggests) or data.cache=false they reach the settings check
    Case("old key added with +", two_classes, ("+data.num_workers=-1",), 1,
         ("data.num_workers is now called data.loader.num_workers",
          "write data.loader.num_workers=-1 instead"), SETTINGS),
    Case("old key data.skip_unreadable", two_classes, ("+data.skip_unreadable=true",), 1,
         ("write data.checks.skip_unreadable=true instead",), SETTINGS),
    Case("old switch data.cache=false", two_classes, ("data.cache=false",), 1,
         ("data.cache is now called data.cache.enabled", "write data.cache.enabled=false instead"),
         SETTINGS),
    Case("weights file missing", two_classes, ("model.weights={tmp}/nope.pth",), 1,
         ("model.weights file not found", "nope.pth"), SETTINGS),
    Case("weights a text file .pth", text_weights, ("model.weights={tmp}/weights.pth",), 1,
         ("model.weights: {tmp}/weights.pth is not a checkpoint or state dict",
          "give a medrepro .ckpt or a timm/torchvision state dict"), "model_building"),
    Case("weights a text file .ckpt", text_weights, ("model.weights={tmp}/weights.ckpt",), 1,
         ("model.weights: {tmp}/weights.ckpt is not a checkpoint or state dict",), "model_building"),
    # data folders
    Case("data.root missing", no_folder, (), 1,
         ("Data folder not found at {root}", "Set data.root to a folder"), "data_loading"),
    Case("data.root empty", empty_folder, (), 1,
         ("Only 0 class folder", "at least two classes"), "data_loading"),
    Case("a class folder empty", empty_class, (), 1,
         ("Class folder {root}/dog contains no images", "add images or remove the folder"),
         "data_loading"),
    Case("impossible split counts", two_classes,
         ("data.split.mode=counts",
          "data.split.counts={train: {cat: 8, dog: 8}, val: {cat: 2, dog: 2}, test: {cat: 2, dog: 2}}"),
         1, ("The split counts ask for 12 'cat' images but data.root has only 10",
             "lower data.split.counts"), "data_loading"),
    # k-fold cross-validation (tests/test_kfold.py): the fold settings, then the data
    Case("kfold fold 5 of 5", two_classes, ("data.split.mode=kfold", "data.split.fold=5"), 1,
         ("data.split.fold must be a whole number from 0 to 4", "not 5"), "data_loading"),
    Case("kfold folds 1", two_classes,
         ("data.split.mode=kfold", "data.split.folds=1", "data.split.fold=0"), 1,
         ("data.split.folds must be a whole number of folds, 2 or more", "not 1"), "data_loading"),
    Case("kfold without a fold", two_classes, ("data.split.mode=kfold",), 1,
         ("data.split.mode=kfold needs data.split.fold", "python train.py -m cv=kfold"),
         "data_loading"),
    Case("fold outside kfold", two_classes, ("data.split.fold=1",), 1,
         ("data.split.fold=1 applies only to data.split.mode=kfold",), "data_loading"),
    # 10 images per class, 2 held out for testing: 8 left for 9 folds
    Case("kfold more folds than images", two_classes,
         ("data.split.mode=kfold", "data.split.folds=9", "data.split.fold=0"), 1,
         ("data.split.folds=9 needs every class in at least 9 groups of images",
          "outside the test split", "but 'cat' is in only 8", "lower data.split.folds"),
         "data_loading"),
    Case("zero-byte file", zero_byte_file, (), 1,
         ("Cannot read image {root}/cat/zero.png (zero-byte file)",
          "data.checks.skip_unreadable=true"), "data_check"),
    Case("truncated file", truncated_png, (), 1,
         ("Cannot read image {root}/cat/truncated.png (truncated)",
          "data.checks.skip_unreadable=true"), "data_check"),
    Case("text file named .png", text_named_png, (), 1,
         ("Cannot read image {root}/cat/notes.png (not an image)",
          "data.checks.skip_unreadable=true"), "data_check"),
    # the sentence names the file and stays one line, whatever the file is called
    Case("unreadable file named with a newline", unreadable_file_with_a_newline_in_its_name, (), 1,
         ("Cannot read image", "(zero-byte file)"), "data_check"),
    # what must train
    Case("zero-byte file skipped", zero_byte_file, ("data.checks.skip_unreadable=true",), 0),
    Case("truncated file skipped", truncated_png, ("data.checks.skip_unreadable=true",), 0),
    Case("text file skipped", text_named_png, ("data.checks.skip_unreadable=true",), 0),
    Case("folder link loop", folder_link_loop, (), 0),
    Case("file link loop", file_link_loop, (), 0),
    Case("spaces, unicode and newlines in names", unusual_names, (), 0),
]

# the planted files each case that trains must have skipped (the rest must all be in split.csv)
SKIPPED = {"zero-byte file skipped": ["cat/zero.png"], "truncated file skipped": ["cat/truncated.png"],
           "text file skipped": ["cat/notes.png"]}


def expected_images(root: Path, case: Case) -> set[str]:
    """Every image a case that trains must use, once: the 20 of :func:`two_classes` and
    the unusual names, never a path through the link loop nor a skipped file."""
    names = [f"{label}/{label}{i}.png" for label in ("cat", "dog") for i in range(10)]
    if case.files is unusual_names:
        names += [f"cat/{name}" for name in UNUSUAL_NAMES]
    return {str(root / name) for name in names}


def fill(text: str, root: Path, tmp: Path) -> str:
    """``text`` with ``{root}`` and ``{tmp}`` replaced (other braces are Hydra's)."""
    return text.replace("{root}", str(root)).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.id for case in CATALOGUE])
def test_catalogue(case, tmp_path, capsys):
    root, run, cache = tmp_path / "images", tmp_path / "run", tmp_path / "cache"
    case.files(root)
    overrides = [fill(override, root, tmp_path) for override in case.overrides]
    cfg = compose_config(["data=folder", f"data.root={root}", *FAST, "data.cache.enabled=true",
                          f"data.cache.dir={cache}", *overrides], run)
    run.mkdir()  # Hydra makes the run folder before the job starts
    if case.exit_code == 0:
        run_job(cfg)
        assert_trained(case, root, run)
        return
    sentence = stop_sentence(cfg, capsys, case.exit_code)
    for words in case.sentence:
        assert fill(words, root, tmp_path) in sentence, sentence
    assert sentence[-1] in ".?" and "Error:" not in sentence
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == case.status and results["error"] == sentence
    assert "\n" not in results["error"]  # the sentence is one line
    assert results["failed_at"] == case.stops_at
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
    if case.stops_at in (SETTINGS, "data_loading", "model_building"):
        # nothing was split, checked or cached before the mistake was found
        assert not (run / "split.csv").exists()
        assert not cache.exists() or not any(cache.iterdir())


def assert_trained(case: Case, root: Path, run: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed", results.get("error")
    split = pd.read_csv(run / "split.csv")
    used = split.loc[split["split"].isin(["train", "val", "test"]), "path"]
    assert sorted(used) == sorted(expected_images(root, case))  # each image once
    skipped = [entry["path"] for entry in results["data"].get("skipped_unreadable") or []]
    assert skipped == [str(root / name) for name in SKIPPED.get(case.id, [])]
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["path"]) == set(split.loc[split["split"] == "test", "path"])


# --- the same through a real process --------------------------------------------------------

def train_process(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)


@pytest.mark.parametrize(("override", "words"), [
    ("data.num_workers=-1",
     ["data.num_workers is now called data.loader.num_workers:",
      "write data.loader.num_workers=-1 instead."]),
    ("model.weights={tmp}/weights.ckpt",
     ["model.weights: {tmp}/weights.ckpt is not a checkpoint or state dict",
      "that loads as plain weights (",
      "); give a medrepro .ckpt or a timm/torchvision state dict (.pth, .bin, .safetensors)."]),
], ids=["old key", "text weights"])
def test_train_py_ends_a_mistake_with_exit_1_and_only_its_sentence(tmp_path, override, words):
    """``python train.py``: exit status 1, stderr holds ``Error: <sentence>`` and nothing
    else (no traceback, no library noise), and results.json (where the run got that far)
    says ``failed`` with the same sentence. An old key stops before Hydra makes a run
    folder; a text file as weights stops while building the model."""
    root = tmp_path / "images"
    text_weights(root)
    done = train_process(tmp_path, "data=folder", f"data.root={root}", *FAST,
                         f"data.cache.dir={tmp_path / 'cache'}", fill(override, root, tmp_path))
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    sentence = line.removeprefix("Error: ")
    assert line.startswith("Error: ") and sentence.endswith(".")
    for part in words:
        assert fill(part, root, tmp_path) in sentence, sentence
    results_file = tmp_path / "run" / "results.json"
    if override.startswith("data.num_workers"):
        assert not (tmp_path / "run").exists()
    else:
        results = json.loads(results_file.read_text())
        assert results["status"] == "failed" and results["error"] == sentence
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_key_that_never_existed_is_hydras_short_message_without_a_traceback(tmp_path):
    """A misspelt key is refused by Hydra itself, before anything runs: exit status 1, a
    few lines that name the key, no traceback, no run folder."""
    done = train_process(tmp_path, "data=folder", f"data.root={tmp_path}", "trainer.max_epoch=3")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Key 'max_epoch' is not in struct" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_choice_that_needs_the_scale_extra_says_how_to_install_it(tmp_path):
    """``logger=mlflow`` where MLflow is not installed (hidden from this one process, as if
    ``pip install -e .`` had been run without the extra): one sentence with the install
    command, before Hydra composes anything, no run folder."""
    program = ("import sys; sys.modules['mlflow'] = None; "
               "sys.argv = ['train.py', 'logger=mlflow', 'hydra.run.dir=run']; "
               "from medrepro.cli.train import main; main()")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("Error: logger=mlflow needs mlflow, which is not installed: run "
                                   "pip install -e '.[scale]' (the optional 'scale' extra) and try again.")
    assert not (tmp_path / "run").exists()
