"""DivergenceGuard, the training job's only divergence check: a NaN or infinite training
loss stops the fit wherever it happens, also in the very last batch of the last epoch, and
so do weights that the last update made NaN (the validation loss)."""

from __future__ import annotations

import json
import re

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_RUN
from test_experiments import multirun_mode_config
from torch.utils.data import DataLoader, TensorDataset

from medrepro.callbacks.divergence_guard import DivergenceGuard
from medrepro.core.errors import TrainingDiverged
from medrepro.jobs.job_runner import run_job


class LinearRegression(pl.LightningModule):
    """A real (tiny) LightningModule whose training loss is NaN at one (epoch, batch), or
    whose weights become NaN after a finite loss at one (epoch, batch)."""

    def __init__(self, nan_at: tuple[int, int] | None, nan_weights_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.nan_at = nan_at
        self.nan_weights_at = nan_weights_at
        self.validated_epochs: list[int] = []

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), target)
        if (self.current_epoch, batch_idx) == self.nan_at:
            loss = loss * float("nan")
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if (self.current_epoch, batch_idx) == self.nan_weights_at:  # after a finite loss's update
            with torch.no_grad():
                self.layer.weight.fill_(float("nan"))

    def validation_step(self, batch, batch_idx):
        self.validated_epochs.append(self.current_epoch)
        inputs, target = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(inputs), target))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(model: LinearRegression, guard: DivergenceGuard, batches: int = 3, **trainer_args) -> pl.Trainer:
    data = TensorDataset(torch.randn(batches * 4, 2), torch.randn(batches * 4, 1))
    trainer = pl.Trainer(callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         num_sanity_val_steps=0, **trainer_args)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer


def stopped_at(error: pytest.ExceptionInfo) -> tuple[int, int]:
    found = re.search(r"by epoch (\d+), batch (\d+); lower optimizer.lr", str(error.value))
    assert found, str(error.value)
    return int(found.group(1)), int(found.group(2))


def test_a_finite_run_is_not_stopped():
    trainer = fit(LinearRegression(nan_at=None), DivergenceGuard(check_every_n_batches=20), max_epochs=2)
    assert trainer.current_epoch == 2 and not trainer.interrupted


def test_nan_in_the_last_batch_of_the_last_epoch_is_caught_before_validation():
    model = LinearRegression(nan_at=(1, 2))  # epoch 2 (of 2), batch 3 (of 3)
    with pytest.raises(TrainingDiverged) as error:
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=2)
    assert stopped_at(error) == (2, 3)
    assert 1 not in model.validated_epochs  # the diverged epoch was not validated


def test_the_flag_is_read_every_n_batches():
    with pytest.raises(TrainingDiverged) as error:
        fit(LinearRegression(nan_at=(0, 1)), DivergenceGuard(check_every_n_batches=2), batches=6, max_epochs=3)
    assert stopped_at(error) == (1, 2)  # batch 2 is the first read after the NaN


def test_an_epoch_cut_short_by_max_steps_is_still_checked():
    """max_steps ends the fit before the epoch's last batch: the flag is read at epoch end."""
    with pytest.raises(TrainingDiverged) as error:
        fit(LinearRegression(nan_at=(0, 1)), DivergenceGuard(check_every_n_batches=20), batches=6, max_steps=2)
    assert stopped_at(error) == (1, 2)


def test_weights_made_nan_by_the_last_update_are_caught_by_the_validation_loss():
    model = LinearRegression(nan_at=None, nan_weights_at=(1, 2))  # every training loss is finite
    with pytest.raises(TrainingDiverged, match=r"validation loss became NaN or infinite in epoch 2; lower"):
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=2)


@pytest.mark.parametrize(("lr", "error"), [
    ("1e30", "training loss became NaN or infinite by epoch 1, batch 2;"),  # the last batch of the last epoch
    ("1e10", "validation loss became NaN or infinite in epoch 1;"),  # finite losses, NaN weights after the last step
])
def test_a_job_diverging_at_its_very_end_is_recorded_as_diverged(tmp_path, demo_dir, lr, error):
    run_dir = tmp_path / "run"
    cfg = multirun_mode_config(["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet", "optimizer=sgd",
                                f"optimizer.lr={lr}", f"paths.cache_dir={tmp_path / 'cache'}"], run_dir, demo_dir)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 2
    assert run_job(cfg) is None  # the sweep would go on
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and error in results["error"], results.get("error")
