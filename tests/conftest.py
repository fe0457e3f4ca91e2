"""Shared fixtures: composing the real config tree, tiny image folders, the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

import medrepro.core.config_tree  # noqa: F401  (registers the resolvers)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Overrides that make a full train/validate/test run take seconds on a CPU.
TINY_TRAINING = [
    "data.image_size=80",
    "trainer.batch_size=4",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
    # the failure gallery (Grad-CAM of 16 images) has tests of its own
    "~callbacks.failure_gallery",
]
TINY_DEMO = ["data.source.image_size=96", "data.source.images_per_class=16"]
TINY_RUN = TINY_DEMO + TINY_TRAINING
# A run that a resume must repeat exactly (deterministic, augmented, dropout; given split of
# a folder written with write_noisy_splits at RESUMABLE_SIZE px): tests/test_resume.py and the
# submitit requeue test
RESUMABLE_SIZE = 32
RESUMABLE_RUN = [
    "data=folder", "data.split.mode=given", f"data.image_size={RESUMABLE_SIZE}",
    "data.loader.num_workers=0", "model.name=test_resnet", "model.drop_rate=0.3", "augment=basic",
    "trainer.batch_size=2", "trainer.max_epochs=3", "trainer.deterministic=true",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none",
    "~callbacks.run_plots",
]


def compose_config(overrides: list[str], output_dir: Path, demo_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` as ``python train.py`` would, with the run folder at
    ``output_dir`` and ``${hydra:...}`` interpolations resolvable."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        if demo_dir is not None:
            cfg.paths.demo_dir = str(demo_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def multirun_mode_config(overrides: list[str], run_dir: Path, demo_dir: Path):
    """A composed job config that believes it is one job of a multirun."""
    cfg = compose_config(overrides, run_dir, demo_dir=demo_dir)
    hydra_cfg = HydraConfig.get()
    OmegaConf.set_readonly(hydra_cfg, False)
    with open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def two_class_folder(root: Path, per_class: int, seed: int) -> Path:
    """``root/a/`` and ``root/b/``, ``per_class`` distinct 32-pixel images each (smooth
    random texture, ``b`` brighter: a model learns something and its probabilities differ
    between images)."""
    rng = np.random.default_rng(seed)
    for label, offset in (("a", 40), ("b", 120)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            coarse = (rng.random((4, 4)) * 90 + offset).astype(np.uint8)
            Image.fromarray(coarse).resize((32, 32), Image.BICUBIC).save(root / label / f"{i}.png")
    return root


def ctrl_c_enabled() -> None:
    """``preexec_fn`` of a subprocess that a test stops with SIGINT: Ctrl-C's default
    action, also where the test runner was started with SIGINT ignored (a background job
    of a non-interactive shell is, and its children inherit that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_a_third_into_epoch_2(process, run_dir: Path, timeout: float = 600) -> None:
    """Return a third of an epoch after ``run_dir``'s first last.ckpt appeared (epoch 1
    has ended) while ``process`` (the run's, or its sweep's) runs on."""
    import os
    import time

    import pandas as pd

    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + timeout
    while not os.path.lexists(last):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no last.ckpt appeared"
        time.sleep(0.05)
    epoch_seconds = float(pd.read_csv(run_dir / "metrics.csv")["epoch_seconds"].iloc[0])
    time.sleep(epoch_seconds / 3)


@pytest.fixture(scope="session", autouse=True)
def image_cache_dir(tmp_path_factory) -> Path:
    """Decoded-image caches of the whole session (also of train.py subprocesses) go to a
    temporary folder, never into the repository's data/."""
    folder = tmp_path_factory.mktemp("image_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDREPRO_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """One demo-data folder for the whole session (generated phantoms are reused)."""
    return tmp_path_factory.mktemp("demo")


def write_gray(path: Path, value: int, size: int = 24) -> Path:
    """A small 8-bit grayscale PNG/JPEG/... of one value plus a gradient and a texture
    seeded by ``value``: images of different values are distinct images, not brightened
    copies of one another (which the split would keep together as near duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 40, size, dtype=np.float32)[None, :]
    texture = np.random.default_rng(value).normal(0, 12, (size, size)).astype(np.float32)
    pixels = np.clip(value + ramp + texture, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_noisy_splits(root: Path, counts: dict[str, int], size: int) -> Path:
    """``root/<split>/{dark,bright}/`` with ``counts[split]`` noisy grey ``size`` px PNGs per
    class (seeded): ``bright`` images are brighter on average than ``dark`` ones."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for name, centre in (("dark", 110), ("bright", 145)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(centre + rng.normal(0, 40, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}{i}.png")
    return root


def stop_sentence(cfg: DictConfig, capsys, exit_code: int = 1) -> str:
    """Run the job as ``python train.py`` does (``run_job``); check that it stops with
    ``exit_code`` and no traceback, and return its one sentence (``Error: ...``, the last
    line on stderr)."""
    from medrepro.jobs.job_runner import run_job

    with pytest.raises(SystemExit) as stop:
        run_job(cfg)
    assert stop.value.code == exit_code
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr
    sentence = stderr.rstrip("\n").splitlines()[-1].removeprefix("Error: ")
    assert "Error:" not in sentence, sentence
    return sentence


@pytest.fixture
def class_folders(tmp_path) -> Path:
    """``root/{cat,dog}/`` with 10 images each (no two alike): two patients per file-name
    prefix."""
    root = tmp_path / "images"
    for label, value in (("cat", 40), ("dog", 180)):
        for i in range(10):
            write_gray(root / label / f"p{label}{i // 2}_img{i}.png", value + i)
    return root


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (../shared/data is only there in the team's checkout)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one thread (on a busy 2-core machine two threads spin
    against each other), then restore the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A small trained model for the commands that use one (eval.py, predict.py, export.py):
# test_resnet on the demo pneumonia phantoms (classes NORMAL, PNEUMONIA), 48 px
TRAINED_RUN = [
    "data=demo_pneumonia", "model.name=test_resnet", "data.source.image_size=96",
    "data.source.images_per_class=24", "data.image_size=48", "trainer.max_epochs=2",
    "trainer.batch_size=8", "data.loader.num_workers=0", "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_dir) -> Path:
    """The run folder of ``python train.py`` with :data:`TRAINED_RUN` (trained once per
    session): checkpoints/, results.json, predictions.csv, model_card.md, ..."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *TRAINED_RUN, f"paths.demo_dir={demo_dir}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, cwd=run_dir.parent, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def checkpoint_tested_by(run_dir: Path) -> Path:
    """The checkpoint a run tested (results.json's tested_checkpoint)."""
    import json

    record = json.loads((run_dir / "results.json").read_text())["tested_checkpoint"]
    return run_dir / record["file"]
