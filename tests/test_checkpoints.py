"""Which weights a run reports on: the best checkpoint (lowest ``val/loss``), the ``val``
metrics in results.json, and ``test_checkpoint=best|last``.

A real, tiny training run (timm ``test_resnet``, 32 px grey images whose brightness gives
the class) whose best epoch is not its last, by construction: ``scheduler=step`` with
``gamma=-3`` turns the learning rate negative after two epochs, so the third and last
epoch climbs the training loss (gradient ascent) and the validation loss rises with it.
metrics.csv confirms the premise. The oracle is a forward pass written here: timm's
model with a checkpoint file's weights, on the split's images read with PIL, scored
with numpy and scikit-learn.

Also how the checkpoints are written (``callbacks/checkpointing.py``): file names count
epochs from 1, an identical last and best is stored once (``last.ckpt`` a relative link),
``last.ckpt`` follows every epoch through new bests and worse epochs, and after a resume,
every file loads with ``weights_only=True``, and a write that fails (a full disk, a crash
midway) leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import timm
import torch
from conftest import REPO, compose_config, write_noisy_splits
from PIL import Image
from sklearn import metrics as skm
from torch.utils.data import DataLoader, TensorDataset

from medrepro.callbacks.checkpointing import AtomicCheckpointIO
from medrepro.core.run_folder import write_atomic
from medrepro.jobs.training import build_trainer, train

SIZE, MEAN, STD = 32, 0.5, 0.25
POSITIVE = "dark"  # label 1: the second of the sorted class folders (bright, dark)
EPOCHS = 3
RUN = [
    "data=folder", "data.split.mode=given", f"data.image_size={SIZE}", "data.loader.num_workers=0",
    "model.name=test_resnet", f"model.mean=[{MEAN}]", f"model.std=[{STD}]", "augment=none",
    "optimizer.lr=0.01", "trainer.batch_size=8", f"trainer.max_epochs={EPOCHS}",
    # learning rate 0.01 in epochs 0 and 1, then -0.03: the validation loss goes up again
    "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=-3",
    "trainer.enable_progress_bar=false", "logger=none", "~callbacks.run_plots", "~callbacks.failure_gallery",
    # float32: evaluate() below recomputes the losses in float32, and bf16-mixed (what
    # trainer.precision=auto gives on a CPU with native bfloat16) rounds activations to 8 bits
    "trainer.precision=32-true",
]


# tiny models run fastest on one thread (two threads on a busy 2-core machine spin)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """``train/`` 16, ``val/`` 8 and ``test/`` 8 noisy grey images per class; ``bright``
    images are brighter on average than ``dark`` ones."""
    return write_noisy_splits(tmp_path_factory.mktemp("images"), {"train": 16, "val": 8, "test": 8}, SIZE)


def run(images: Path, out: Path, which: str) -> Path:
    train(compose_config([*RUN, f"data.root={images}", f"test_checkpoint={which}"], out))
    return out


@pytest.fixture(scope="module")
def best_run(images, tmp_path_factory) -> Path:
    return run(images, tmp_path_factory.mktemp("best"), "best")


@pytest.fixture(scope="module")
def last_run(images, tmp_path_factory) -> Path:
    return run(images, tmp_path_factory.mktemp("last"), "last")


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


def evaluate(checkpoint: str | Path, run_dir: Path, split: str) -> tuple[pd.Series, float]:
    """The checkpoint's positive-class probability for each image of ``split`` (by path,
    from the run's split.csv) and the mean binary cross-entropy, computed here: timm's
    ``test_resnet`` with the checkpoint's backbone weights, images read with PIL."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    backbone = timm.create_model("test_resnet", num_classes=1, in_chans=1)
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items()
                              if k.startswith("backbone.")})
    backbone.eval()
    manifest = pd.read_csv(run_dir / "split.csv")
    rows = manifest[manifest["split"] == split]
    pixels = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in rows["path"]])
    with torch.no_grad():
        logits = backbone(torch.from_numpy((pixels[:, None] - MEAN) / STD)).double().numpy()[:, 0]
    truth = (rows["label"] == POSITIVE).to_numpy()
    signed = np.where(truth, logits, -logits)
    loss = float(np.logaddexp(0, -signed).mean())  # -log(sigmoid(signed)), numerically stable
    return pd.Series(1 / (1 + np.exp(-logits)), index=rows["path"].to_numpy()), loss


def checkpoint_epoch(path: str | Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]  # counted from 0


def test_the_run_has_a_best_epoch_before_its_last(best_run):
    """The premise of this file: the lowest val/loss is not in the last epoch, and the
    last epoch is clearly worse."""
    epochs = history(best_run)
    assert epochs["epoch"].tolist() == list(range(1, EPOCHS + 1))
    best = epochs["val/loss"].idxmin()
    assert best != len(epochs) - 1
    assert epochs["val/loss"].iloc[-1] > 1.5 * epochs["val/loss"].iloc[best]


def test_best_checkpoint_holds_the_epoch_with_the_lowest_val_loss(best_run):
    """The one ``best-epoch*.ckpt`` file, which results.json names, holds the weights of
    the metrics.csv epoch with the lowest val/loss: a forward pass of its weights on the
    validation images gives that epoch's val/loss."""
    epochs = history(best_run)
    best = epochs.loc[epochs["val/loss"].idxmin()]
    checkpoint = results(best_run)["checkpoint"]
    files = list((best_run / "checkpoints").glob("best-epoch*.ckpt"))
    assert [str(f) for f in files] == [checkpoint["best"]]
    assert checkpoint["monitor"] == "val/loss"
    assert checkpoint["best_score"] == pytest.approx(best["val/loss"], rel=1e-6)
    assert checkpoint_epoch(checkpoint["best"]) == best["epoch"] - 1  # metrics.csv counts from 1
    _, loss = evaluate(checkpoint["best"], best_run, "val")
    assert loss == pytest.approx(best["val/loss"], rel=1e-4, abs=1e-6)
    assert loss == pytest.approx(epochs["val/loss"].min(), rel=1e-4, abs=1e-6)


def test_results_json_val_is_the_best_checkpoints_validation(best_run):
    """With ``test_checkpoint=best``, results.json's ``val`` is the validation of the best
    checkpoint (metrics.csv's row of the lowest val/loss, every metric), not of the final
    weights; ``val_final_epoch`` is the last row."""
    epochs = history(best_run)
    best, last = epochs.loc[epochs["val/loss"].idxmin()], epochs.iloc[-1]
    report = results(best_run)
    assert report["val"]["loss"] != pytest.approx(report["val_final_epoch"]["loss"], rel=0.1)
    val_columns = [c for c in epochs if c.startswith("val/")]
    assert len(val_columns) >= 10
    for column in val_columns:
        key = column.removeprefix("val/")
        close_to = {"rel": 1e-4, "abs": 1e-6}
        assert report["val"][key] == pytest.approx(best[column], **close_to), key
        assert report["val_final_epoch"][key] == pytest.approx(last[column], **close_to), key


def test_best_test_metrics_are_the_best_checkpoints(best_run):
    """With ``test_checkpoint=best``, predictions.csv and the test metrics are those of the
    best checkpoint's weights, evaluated here."""
    report = results(best_run)
    probabilities, loss = evaluate(report["checkpoint"]["best"], best_run, "test")
    predictions = pd.read_csv(best_run / "predictions.csv").set_index("path")
    np.testing.assert_allclose(predictions.loc[probabilities.index, "probability"], probabilities,
                               rtol=1e-4, atol=1e-6)
    truth = (predictions.loc[probabilities.index, "label"] == POSITIVE).astype(int)
    assert report["test"]["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    assert report["test"]["auroc"] == pytest.approx(skm.roc_auc_score(truth, probabilities))
    assert report["test"]["acc"] == pytest.approx(skm.accuracy_score(truth, probabilities >= 0.5))


def test_last_tests_the_file_it_names(last_run):
    """With ``test_checkpoint=last``, predictions.csv and the test metrics are those of the
    checkpoint results.json names as ``last`` (``checkpoints/last.ckpt``)."""
    report = results(last_run)
    assert Path(report["checkpoint"]["last"]) == last_run / "checkpoints" / "last.ckpt"
    probabilities, loss = evaluate(report["checkpoint"]["last"], last_run, "test")
    predictions = pd.read_csv(last_run / "predictions.csv").set_index("path")
    np.testing.assert_allclose(predictions.loc[probabilities.index, "probability"], probabilities,
                               rtol=1e-4, atol=1e-6)
    assert report["test"]["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6)


def test_last_is_the_final_epochs_weights(last_run):
    """``test_checkpoint=last`` validates and tests the weights of the final epoch:
    last.ckpt is that epoch, its forward pass gives metrics.csv's last val/loss, and
    results.json's ``val`` equals that last row."""
    epochs = history(last_run)
    assert epochs["val/loss"].idxmin() != len(epochs) - 1  # best and last differ here
    report = results(last_run)
    assert checkpoint_epoch(report["checkpoint"]["last"]) == EPOCHS - 1
    _, loss = evaluate(report["checkpoint"]["last"], last_run, "val")
    assert loss == pytest.approx(epochs["val/loss"].iloc[-1], rel=1e-4, abs=1e-6)
    assert report["val"]["loss"] == pytest.approx(epochs["val/loss"].iloc[-1], rel=1e-4, abs=1e-6)


def checkpoint_epoch_from_1(path: str | Path) -> int:
    """The metrics.csv epoch (counted from 1) after which Lightning saved the file: its
    0-based ``epoch`` plus one, for a save at an epoch's end (all of a fit's saves here)."""
    return checkpoint_epoch(path) + 1


def best_epoch(run_dir: Path) -> int:
    """metrics.csv's epoch (counted from 1) with the lowest val/loss."""
    epochs = history(run_dir)
    return int(epochs.loc[epochs["val/loss"].idxmin(), "epoch"])


@pytest.fixture(scope="module")
def once_run(images, tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch run whose final epoch is its best (no negative learning rate), tested on
    ``last``, with the progress bar on; returns the run folder and what the bar printed."""
    settings = [o for o in RUN if not o.startswith(("scheduler", "trainer.max_epochs",
                                                    "trainer.enable_progress_bar"))]
    out = tmp_path_factory.mktemp("once")
    cfg = compose_config([*settings, "scheduler=none", "trainer.max_epochs=2",
                          "trainer.enable_progress_bar=true", f"data.root={images}",
                          "test_checkpoint=last"], out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train(cfg)
    return out, printed.getvalue()


def test_checkpoint_names_count_epochs_from_one_as_metrics_csv(best_run):
    """``best-epochNNN.ckpt`` is metrics.csv's epoch NNN: the row with the lowest
    val/loss, whose val/loss a forward pass of that file's weights gives."""
    best = best_epoch(best_run)
    assert best in (1, 2)  # the premise: the third epoch climbs
    files = sorted(p.name for p in (best_run / "checkpoints").iterdir())
    assert files == [f"best-epoch{best:03d}.ckpt", "last.ckpt"]
    _, loss = evaluate(best_run / "checkpoints" / files[0], best_run, "val")
    assert loss == pytest.approx(history(best_run).set_index("epoch").loc[best, "val/loss"],
                                 rel=1e-4, abs=1e-6)
    assert checkpoint_epoch_from_1(best_run / "checkpoints" / files[0]) == best


def test_results_json_records_the_tested_checkpoint(best_run, last_run, once_run):
    """``tested_checkpoint``: which (``test_checkpoint``), the file in the run folder (and
    the file it links to) and its epoch counted from 1, as in metrics.csv."""
    best = best_epoch(best_run)
    assert results(best_run)["tested_checkpoint"] == {
        "which": "best", "file": f"checkpoints/best-epoch{best:03d}.ckpt", "epoch": best}
    # the final epoch is not the best: last.ckpt is a file of its own
    assert not (last_run / "checkpoints" / "last.ckpt").is_symlink()
    assert results(last_run)["tested_checkpoint"] == {
        "which": "last", "file": "checkpoints/last.ckpt", "epoch": EPOCHS}
    once, _ = once_run
    assert results(once)["tested_checkpoint"] == {
        "which": "last", "file": "checkpoints/last.ckpt",
        "links_to": "checkpoints/best-epoch002.ckpt", "epoch": 2}


def test_an_identical_last_and_best_is_stored_once(once_run, tmp_path):
    """When the final epoch is the best, ``last.ckpt`` is a relative symbolic link to its
    best checkpoint: one file of weights; the run folder still works after a move; and
    ``test_checkpoint=last`` tested those weights (the final epoch's, by forward pass)."""
    run_dir, _ = once_run
    epochs = history(run_dir)
    assert epochs["epoch"].tolist() == [1, 2] and epochs["val/loss"].idxmin() == 1  # premise
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch002.ckpt", "last.ckpt"]
    assert os.readlink(folder / "last.ckpt") == "best-epoch002.ckpt"  # relative, no copy
    assert not (folder / "best-epoch002.ckpt").is_symlink()
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved, symlinks=True)
    last = moved / "checkpoints" / "last.ckpt"
    assert last.resolve() == (moved / "checkpoints" / "best-epoch002.ckpt").resolve()
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1  # 0-based
    _, loss = evaluate(last, moved, "val")
    assert loss == pytest.approx(epochs["val/loss"].iloc[-1], rel=1e-4, abs=1e-6)
    test_probabilities, _ = evaluate(last, run_dir, "test")
    predictions = pd.read_csv(run_dir / "predictions.csv").set_index("path")
    np.testing.assert_allclose(predictions.loc[test_probabilities.index, "probability"],
                               test_probabilities, rtol=1e-4, atol=1e-6)


def test_the_progress_bar_counts_epochs_from_one(once_run):
    _, printed = once_run
    assert "Epoch 1/2" in printed and "Epoch 2/2" in printed
    assert "Epoch 0" not in printed


@pytest.mark.parametrize("fixture", ["best_run", "last_run", "once_run"])
def test_a_runs_checkpoints_load_with_weights_only(fixture, request):
    """Every checkpoint of a real run loads with ``torch.load(weights_only=True)``, with all
    that a resume needs (optimizer, scheduler and callback states, hyper-parameters)."""
    run_dir = request.getfixturevalue(fixture)
    run_dir = run_dir[0] if isinstance(run_dir, tuple) else run_dir
    files = sorted((run_dir / "checkpoints").iterdir())
    assert len(files) == 2
    for path in files:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops",
                "hyper_parameters"} <= set(checkpoint), path.name
        assert checkpoint["optimizer_states"][0]["state"], path.name
        assert checkpoint["hyper_parameters"]["class_names"] == ["bright", "dark"]
        assert any("best_model_path" in state for state in checkpoint["callbacks"].values())


# --- last.ckpt through a sequence of better and worse epochs, and after a resume ---

VAL_LOSSES = [3.0, 2.0, 5.0, 1.0, 4.0]  # new bests in epochs 1, 2 and 4; epochs 3 and 5 worse
BEST_AFTER = {1: 1, 2: 2, 3: 2, 4: 4, 5: 4}
FOLDER_AFTER = {  # every entry of checkpoints/ (hidden ones too) -> its link target, or None
    1: {"best-epoch001.ckpt": None, "last.ckpt": "best-epoch001.ckpt"},
    2: {"best-epoch002.ckpt": None, "last.ckpt": "best-epoch002.ckpt"},
    3: {"best-epoch002.ckpt": None, "last.ckpt": None},
    4: {"best-epoch004.ckpt": None, "last.ckpt": "best-epoch004.ckpt"},
    5: {"best-epoch004.ckpt": None, "last.ckpt": None},
}


class ScriptedValLoss(pl.LightningModule):
    """A linear layer that trains; its logged val/loss is ``VAL_LOSSES[epoch]``. It keeps
    a copy of its weights after every epoch (``weights_after[epoch counted from 1]``)."""

    def __init__(self, weights_after: dict) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.weights_after = weights_after

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]) - 1).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", VAL_LOSSES[self.current_epoch])

    def on_validation_epoch_end(self):
        self.keep_weights()

    def keep_weights(self):
        weights = {key: value.clone() for key, value in self.state_dict().items()}
        self.weights_after[self.current_epoch + 1] = weights

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FolderAfterEachEpoch(pl.Callback):
    """What checkpoints/ holds when the next epoch starts (after the previous one's saves)."""

    def __init__(self, folder: Path, seen: dict) -> None:
        self.folder, self.seen = folder, seen

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self.seen[trainer.current_epoch] = folder_contents(self.folder)


def folder_contents(folder: Path) -> dict:
    """The entries of ``folder`` (link targets, the last checkpoint's weights and epoch, the
    best checkpoint's weights), each checkpoint read with ``weights_only=True``."""
    entries = {p.name: (os.readlink(p) if p.is_symlink() else None) for p in folder.iterdir()}
    best = next((name for name in entries if name.startswith("best-")), None)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    best_state = torch.load(folder / best, weights_only=True)["state_dict"] if best else None
    return {"entries": entries, "last_state": last["state_dict"], "last_epoch": last["epoch"] + 1,
            "best_state": best_state}


def fit_scripted(run_dir: Path, epochs: int, weights_after: dict, seen: dict, resume: Path | None):
    """Fit :class:`ScriptedValLoss` with medrepro's checkpoint callback (from
    conf/callbacks/default.yaml) and trainer (with its checkpoint IO)."""
    cfg = compose_config([f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu",
                          "trainer.enable_progress_bar=false", "logger=none"], run_dir)
    checkpoint = hydra.utils.instantiate(cfg.callbacks.model_checkpoint)
    observer = FolderAfterEachEpoch(run_dir / "checkpoints", seen)
    trainer = build_trainer(cfg, [checkpoint, observer], False, run_dir)
    trainer.fit(ScriptedValLoss(weights_after), tiny_loader(), tiny_loader(), ckpt_path=resume)


def tiny_loader() -> DataLoader:
    """8 random 4-vectors in 2 batches (the same every time)."""
    return DataLoader(TensorDataset(torch.randn(8, 4, generator=torch.Generator().manual_seed(0))),
                      batch_size=4)


@pytest.mark.parametrize("resume_after", [None, 2], ids=["straight", "resumed_from_a_link"])
def test_last_follows_every_epoch_through_better_and_worse_ones(tmp_path, resume_after):
    """After each epoch: last.ckpt holds that epoch's weights, a link to the best file
    when the epoch was a new best, else a file of its own; the best file holds the best
    epoch's weights; nothing else is in the folder. Also when the fit is resumed from
    last.ckpt while it is a link."""
    weights_after, seen = {}, {}
    if resume_after:
        fit_scripted(tmp_path, resume_after, weights_after, seen, None)
        assert os.path.islink(tmp_path / "checkpoints" / "last.ckpt")
        seen[resume_after] = folder_contents(tmp_path / "checkpoints")
    fit_scripted(tmp_path, len(VAL_LOSSES), weights_after, seen,
                 tmp_path / "checkpoints" / "last.ckpt" if resume_after else None)
    seen[len(VAL_LOSSES)] = folder_contents(tmp_path / "checkpoints")
    assert sorted(seen) == list(FOLDER_AFTER)
    for epoch, contents in seen.items():
        assert contents["entries"] == FOLDER_AFTER[epoch], epoch
        assert contents["last_epoch"] == epoch
        best = weights_after[BEST_AFTER[epoch]]
        for key, value in weights_after[epoch].items():
            torch.testing.assert_close(contents["last_state"][key], value, rtol=0, atol=0)
            torch.testing.assert_close(contents["best_state"][key], best[key], rtol=0, atol=0)
    assert not torch.equal(weights_after[4]["layer.weight"], weights_after[5]["layer.weight"])


class WeightsAfterTraining(ScriptedValLoss):
    """Takes its copy of the weights when an epoch's training ends (validated or not)."""

    def on_validation_epoch_end(self):
        pass

    def on_train_epoch_end(self):
        self.keep_weights()


def test_last_holds_a_final_epoch_that_was_not_validated(tmp_path):
    """With validation every second epoch, the third and final epoch has no validation
    (so no checkpoint at its end): last.ckpt is still written, when training ends, with
    that epoch's weights; best-epoch002.ckpt holds epoch 2's."""
    cfg = compose_config(["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
                          "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                          "logger=none"], tmp_path)
    checkpoint = hydra.utils.instantiate(cfg.callbacks.model_checkpoint)
    trainer = build_trainer(cfg, [checkpoint], False, tmp_path)
    weights_after = {}
    trainer.fit(WeightsAfterTraining(weights_after), tiny_loader(), tiny_loader())
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch002.ckpt", "last.ckpt"]
    assert not (folder / "last.ckpt").is_symlink()
    for name, epoch in (("last.ckpt", 3), ("best-epoch002.ckpt", 2)):
        state = torch.load(folder / name, weights_only=True)["state_dict"]
        for key, value in weights_after[epoch].items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert not torch.equal(weights_after[2]["layer.weight"], weights_after[3]["layer.weight"])


def test_results_json_epoch_of_a_checkpoint_saved_at_validation(images, tmp_path):
    """With validation every second epoch, Lightning saves at the end of validation, not
    of the training epoch; results.json still gives the best checkpoint's epoch counted
    from 1 (2, the only validated epoch of three), and that file's weights give
    metrics.csv's val/loss of epoch 2."""
    train(compose_config([*RUN, f"data.root={images}", "test_checkpoint=best",
                          "trainer.check_val_every_n_epoch=2"], tmp_path))
    assert results(tmp_path)["tested_checkpoint"] == {
        "which": "best", "file": "checkpoints/best-epoch002.ckpt", "epoch": 2}
    _, loss = evaluate(tmp_path / "checkpoints" / "best-epoch002.ckpt", tmp_path, "val")
    epochs = history(tmp_path).set_index("epoch")
    assert loss == pytest.approx(epochs.loc[2, "val/loss"], rel=1e-4, abs=1e-6)


def test_without_checkpoints_the_final_weights_are_tested_and_said_so(images, tmp_path):
    """Without checkpoints, ``test_checkpoint=best`` cannot be honoured: the weights in
    memory after the final epoch are tested, and results.json says so."""
    train(compose_config([*RUN, f"data.root={images}", "test_checkpoint=best",
                          "trainer.max_epochs=2", "~callbacks.model_checkpoint",
                          "+trainer.enable_checkpointing=false"], tmp_path))
    assert not (tmp_path / "checkpoints").exists()
    assert len(history(tmp_path)) == 2
    assert results(tmp_path)["tested_checkpoint"] == {"which": "last", "file": None, "epoch": 2}


# --- writes that fail ---

def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_file(tmp_path):
    """A save that stops midway (here: a state that cannot be pickled, after the weights)
    raises, leaves last.ckpt (a file, or a link and its best file) byte for byte as it was,
    and no temporary file; a save that succeeds replaces a link itself, never the
    checkpoint it links to."""
    writer = AtomicCheckpointIO()
    folder = tmp_path / "checkpoints"
    good = {"state_dict": {"w": torch.arange(100_000.0)}, "epoch": 1}
    broken = {"state_dict": {"w": torch.ones(100_000)}, "callbacks": {"lock": threading.Lock()}}
    writer.save_checkpoint(good, folder / "last.ckpt")
    before = (folder / "last.ckpt").read_bytes()
    with pytest.raises(TypeError, match="pickle"):
        writer.save_checkpoint(broken, folder / "last.ckpt")
    assert (folder / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    kept = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]["w"]
    torch.testing.assert_close(kept, torch.arange(100_000.0))

    (folder / "last.ckpt").rename(folder / "best-epoch001.ckpt")
    os.symlink("best-epoch001.ckpt", folder / "last.ckpt")
    with pytest.raises(TypeError, match="pickle"):
        writer.save_checkpoint(broken, folder / "last.ckpt")
    assert os.readlink(folder / "last.ckpt") == "best-epoch001.ckpt"
    writer.save_checkpoint({"epoch": 2}, folder / "last.ckpt")
    assert not (folder / "last.ckpt").is_symlink()
    assert (folder / "best-epoch001.ckpt").read_bytes() == before
    assert torch.load(folder / "last.ckpt", weights_only=True) == {"epoch": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch001.ckpt", "last.ckpt"]


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp_path / "probe").mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"',
                            str(tmp_path / "probe")], capture_output=True, check=False)
    return probe.returncode == 0


def test_a_full_disk_keeps_the_last_good_checkpoint(images, best_run, tmp_path):
    """A real ``python train.py`` whose checkpoint folder is a file system with room for
    one checkpoint and a half: epoch 1's checkpoint fits, epoch 2's does not. The run
    fails; last.ckpt still holds epoch 1's weights (a forward pass gives metrics.csv's
    row 1), every checkpoint left loads, and no temporary file is left behind."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a small tmpfs here (needs `unshare -rm` and mount in a "
                    "user namespace)")
    size = max(p.stat().st_size for p in (best_run / "checkpoints").iterdir())
    run_dir, folder, kept = tmp_path / "run", tmp_path / "disk", tmp_path / "kept"
    folder.mkdir()
    kept.mkdir()
    script = ('folder=$1; kept=$2; shift 2; '
              f'mount -t tmpfs -o size={math.ceil(1.5 * size / 1024)}k tmpfs "$folder" || exit 99; '
              '"$@"; code=$?; cp -a "$folder/." "$kept/"; exit $code')
    overrides = [*RUN, f"data.root={images}", "test_checkpoint=last", f"hydra.run.dir={run_dir}",
                 f"callbacks.model_checkpoint.dirpath={folder}"]
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), str(kept), sys.executable,
         str(REPO / "train.py"), *overrides],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode == 99:
        pytest.skip("mounting the tmpfs failed: " + done.stderr[-500:])
    said = done.stdout + done.stderr + (run_dir / "results.json").read_text()
    assert done.returncode != 0 and "no space" in said.lower(), said[-3000:]  # the disk was full
    assert sorted(p.name for p in kept.iterdir()) == ["best-epoch001.ckpt", "last.ckpt"]
    for path in kept.iterdir():
        torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint_epoch_from_1(kept / "last.ckpt") == 1
    _, loss = evaluate(kept / "last.ckpt", run_dir, "val")
    assert loss == pytest.approx(history(run_dir)["val/loss"].iloc[0], rel=1e-4, abs=1e-6)


def test_run_folder_files_get_the_permissions_of_a_plain_open(tmp_path):
    """Files written atomically (results.json, checkpoints) are readable by the group and
    others as the umask allows, like any file the user creates, not private 0600 files."""
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "results.json", "{}")
        plain = tmp_path / "plain.txt"
        plain.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
